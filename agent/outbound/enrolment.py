"""Joining the network (``enrol``) and replacing the key (``rotate-key``).

Enrolment posts an ``enrol`` message signed by the agent's new key (proof of possession) with the
single-use token the network gave the practice out of band. The aggregator's log key and
catalogue key are pinned from the aggregator's key endpoint at that moment (the token makes this
first contact authenticated), and the receipt for the enrol message must verify against the
pinned log key before anything is saved.

Both messages are stored in the outbox before they are sent, like every signed message.
"""

from __future__ import annotations

from typing import Any

from agent.errors import AgentUserError, ConfigError, UnverifiedAnswerError, first_problem
from agent.home.catalogue_cache import CACHE_FILE, verify_catalogue
from agent.home.keystore import (
    TRUST_FILE,
    Keystore,
    PinnedKey,
    Trust,
    load_trust,
    save_trust,
    write_private,
)
from agent.home.settings import AgentSettings
from agent.outbound.outbox import Message, NewMessage, Outbox
from agent.outbound.release import new_nonce, sign
from agent.outbound.submitter import check_before_sending, send
from agent.outbound.transport import AggregatorClient, RetryNotice
from protocol import __version__
from protocol.envelope import Envelope
from protocol.errors import ProtocolError
from protocol.keys import SigningKey
from protocol.submission import Enrol, Jwk, Rotate


def fetch_log_key(client: AggregatorClient, aud: str) -> tuple[str, PinnedKey]:
    """(origin, log key) as the aggregator publishes them at ``/v1/log/key``."""
    data = client.get_json("/v1/log/key")
    try:
        served_aud = data.get("aud", aud)
        origin = str(data["origin"])
        key = PinnedKey(name=str(data["key_name"]), jwk=Jwk.model_validate(data["jwk"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnverifiedAnswerError(f"/v1/log/key: unexpected answer ({exc})") from None
    if served_aud != aud:
        raise ConfigError(
            f"the aggregator at {client.base_url} serves network {served_aud!r}, but setting "
            f"'aud' is {aud!r}"
        )
    return origin, key


def fetch_catalogue_key(client: AggregatorClient) -> PinnedKey:
    data = client.get_json("/v1/catalogue/key")
    try:
        return PinnedKey(
            name=str(data.get("name", "catalogue")), jwk=Jwk.model_validate(data["jwk"])
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnverifiedAnswerError(f"/v1/catalogue/key: unexpected answer ({exc})") from None


def enrol_agent(
    settings: AgentSettings, token: str, *, now: int, on_retry: RetryNotice | None = None
) -> dict[str, Any]:
    settings.require("practice", "aud", "aggregator_url")
    assert settings.practice and settings.aud and settings.aggregator_url
    if (settings.home / TRUST_FILE).exists():
        trust = load_trust(settings.home)
        raise ConfigError(
            f"this agent is already enrolled as practice {trust.practice} in network "
            f"{trust.aud!r} ({settings.home / TRUST_FILE}); a new enrolment needs a new agent home"
        )
    keys = Keystore(settings.home)
    key = keys.active()
    try:
        payload = Enrol(
            aud=settings.aud,
            practice=settings.practice,
            token=token,
            jwk=key.public.jwk(),
            agent_version=__version__,
            iat=now,
            nonce=new_nonce(),
        )
    except ValueError as exc:
        if "token" in first_problem(exc).split(":", 1)[0]:
            raise AgentUserError(
                "--token: not an enrolment token (22 to 64 letters, digits, '-' or '_', "
                "as `fedqi-aggregator enrol-token` printed it)"
            ) from None
        raise AgentUserError(f"cannot build the enrol message: {first_problem(exc)}") from None
    with (
        AggregatorClient.from_settings(settings, on_retry=on_retry) as client,
        Outbox.open(settings.home) as outbox,
    ):
        origin, log_key = fetch_log_key(client, settings.aud)
        catalogue_key = fetch_catalogue_key(client)
        trust = Trust(
            aud=settings.aud,
            practice=settings.practice,
            aggregator_url=settings.aggregator_url,
            log_origin=origin,
            log_key=log_key,
            catalogue_key=catalogue_key,
        )
        # An earlier try with this token may have reached the aggregator with its answer lost:
        # resend those stored bytes rather than a new message the burnt token would fail.
        message = _queued_enrol(outbox, token, key.kid)
        if message is None:
            signed = sign("enrol", payload.to_bytes(), [key])
            message = outbox.add_signed(
                lambda _seq: NewMessage(
                    kind="enrol",
                    envelope=signed.envelope,
                    sha256=signed.sha256,
                    kid=key.kid,
                    seq=None,
                ),
                "queued",
            )
        outcome = send(client, outbox, trust, message)  # the receipt verified: pin now
        save_trust(settings.home, trust)
        data = client.get_bytes("/v1/catalogue")
        catalogue = verify_catalogue(data, trust, where="the aggregator's /v1/catalogue")
        write_private(settings.home / CACHE_FILE, data)
    return {
        "practice": settings.practice,
        "aud": settings.aud,
        "kid": key.kid,
        "log_key": log_key.name,
        "log_origin": origin,
        "catalogue_key": catalogue_key.name,
        "log_key_kid": log_key.verifying_key().kid,
        "catalogue_key_kid": catalogue_key.verifying_key().kid,
        "catalogue": f"{catalogue.id} v{catalogue.version}",
        "leaf_index": outcome.leaf_index,
    }


def rotate(
    settings: AgentSettings, *, now: int, on_retry: RetryNotice | None = None
) -> dict[str, Any]:
    trust = load_trust(settings.home)
    keys = Keystore(settings.home)
    old = keys.active()
    with (
        AggregatorClient.from_settings(settings, on_retry=on_retry) as client,
        Outbox.open(settings.home) as outbox,
    ):
        # An interrupted rotation left its message in the outbox: resend those bytes.
        pending = keys.pending()
        message = _pending_rotation(outbox, old, pending) if pending else None
        if message is not None and message.state == "accepted":
            # Accepted before a crash, but the new key was not yet made active: finish now.
            new_key = keys.finish_rotation()
            return {"old_kid": old.kid, "new_kid": new_key.kid, "leaf_index": None}
        if message is None:
            waiting = [m for m in outbox.messages(state="queued") if m.kind != "rotate"]
            if waiting:
                # They are signed by the old key, which the aggregator retires on rotation.
                raise AgentUserError(
                    f"{len(waiting)} signed message(s) are waiting to be sent with the current "
                    "key: run `fedqi-agent run` first, then rotate"
                )
        # Before a new key is made and a rotation signed: only to the aggregator enrolled with.
        check_before_sending(
            settings,
            client,
            trust,
            "no key rotation was started"
            if message is None
            else f"nothing was sent: the rotation already started (rotate #{message.id}) stays "
            "queued, and the current key signs",
        )
        if message is None:
            new = keys.start_rotation()
            message = outbox.add_signed(
                lambda seq: _rotate_message(trust, old, new, seq, now), "queued"
            )
        outcome = send(client, outbox, trust, message)
        new_key = keys.finish_rotation()
    return {"old_kid": old.kid, "new_kid": new_key.kid, "leaf_index": outcome.leaf_index}


def _rotate_message(
    trust: Trust, old: SigningKey, new: SigningKey, seq: int, now: int
) -> NewMessage:
    payload = Rotate(
        aud=trust.aud,
        practice=trust.practice,
        old_kid=old.kid,
        new_jwk=new.public.jwk(),
        seq=seq,
        iat=now,
        nonce=new_nonce(),
    )
    signed = sign("rotate", payload.to_bytes(), [old, new])
    return NewMessage(
        kind="rotate", envelope=signed.envelope, sha256=signed.sha256, kid=old.kid, seq=seq
    )


def _pending_rotation(outbox: Outbox, old: SigningKey, new: SigningKey) -> Message | None:
    for message in reversed(outbox.messages(kind="rotate")):
        if message.state not in ("queued", "accepted"):
            continue
        try:
            env = Envelope.from_bytes(message.envelope)
        except ProtocolError:
            continue
        if set(env.keyids) == {old.kid, new.kid}:
            return message
    return None


def _queued_enrol(outbox: Outbox, token: str, kid: str) -> Message | None:
    for message in reversed(outbox.messages(kind="enrol", state="queued")):
        try:
            env = Envelope.from_bytes(message.envelope)
            if Enrol.from_bytes(env.payload_bytes()).token == token and env.keyids == (kid,):
                return message
        except ProtocolError:
            continue
    return None


__all__ = ["ConfigError", "enrol_agent", "rotate"]
