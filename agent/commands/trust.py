"""``trust show``: the keys this agent pinned at enrolment, as the network lead's ``init`` printed
them."""

from __future__ import annotations

from typing import Any

import typer

from agent.cli import app
from agent.home.keystore import PinnedKey, load_trust

from ._common import HomeOption, JsonOption, console, emit_json, one_line_errors, settings_for

trust_app = typer.Typer(
    name="trust",
    help="The keys this agent pinned at enrolment (trust.json).",
    no_args_is_help=True,
)
app.add_typer(trust_app, name="trust")


def _key(role: str, key: PinnedKey) -> dict[str, Any]:
    vk = key.verifying_key()
    # Both in base64url without padding: the public key is trust.json's jwk.x, the kid its
    # RFC 7638 thumbprint; `fedqi-aggregator init` prints them in this same form.
    return {"role": role, "name": key.name, "kid": vk.kid, "public_key": key.jwk.x}


@trust_app.command("show")
@one_line_errors
def trust_show(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """The pinned log and catalogue keys with their fingerprints (kid: RFC 7638 thumbprint) and
    public keys, both base64url as trust.json stores them and `fedqi-aggregator init` printed
    them: compare them with what the network published."""
    settings = settings_for(home)
    trust = load_trust(settings.home)
    keys = [_key("log", trust.log_key)]
    if trust.catalogue_key is not None:
        keys.append(_key("catalogue", trust.catalogue_key))
    info = {
        "aud": trust.aud,
        "practice": trust.practice,
        "aggregator_url": trust.aggregator_url,
        "log_origin": trust.log_origin,
        "keys": keys,
    }
    if as_json:
        emit_json(info)
        return
    out = console()
    out.print(
        f"practice {trust.practice} enrolled in network {trust.aud} at {trust.aggregator_url}",
        markup=False,
    )
    out.print(f"log origin {trust.log_origin}", markup=False)
    for k in keys:
        out.print(f"{k['role']} key {k['name']}", markup=False)
        out.print(f"  kid (fingerprint)   {k['kid']}", markup=False)
        out.print(f"  public key          {k['public_key']}", markup=False)
    out.print("both base64url, as `fedqi-aggregator init` printed them")
