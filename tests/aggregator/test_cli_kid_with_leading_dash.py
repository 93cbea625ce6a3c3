"""Regression: a kid is base64url, so about 1 in 64 starts with "-". `key revoke KID` must take
it as the kid, not as an option (found when CI drew such a key)."""

from __future__ import annotations

from agg_helpers import SimAgent, default_catalogue
from sqlalchemy import select

from aggregator.db import models
from protocol.keys import SigningKey


def _key_starting_with_dash() -> SigningKey:
    while True:
        key = SigningKey.generate()
        if key.kid.startswith("-"):
            return key


def test_key_revoke_takes_a_kid_that_starts_with_a_dash(server) -> None:  # type: ignore[no-untyped-def]
    net = server.network
    net.add_practice("A81001")
    agent = SimAgent(ods="A81001", catalogue=default_catalogue(), key=_key_starting_with_dash())
    assert server.post("/v1/enrol", agent.enrol(net.token("A81001"))).status_code == 201
    code = net.cli("key", "revoke", agent.key.kid, "--key-dir", str(net.settings.key_dir))
    assert code == 0
    with net.database.read() as s:
        status = s.scalar(
            select(models.PracticeKey.status).where(models.PracticeKey.kid == agent.key.kid)
        )
    assert status == "revoked"
    # unknown options are still refused
    assert net.cli("key", "revoke", agent.key.kid, "--no-such-option") == 2


def test_key_list_shows_a_compromised_window_and_whole_kids_when_piped(server, capsys) -> None:  # type: ignore[no-untyped-def]
    """``key list`` names the suspect window a revocation gave (table and JSON), and a table
    written to a pipe or file keeps each 43-character kid whole (it was cut to 80 columns)."""
    import json

    net = server.network
    net.add_practice("A81001")
    agent = SimAgent(ods="A81001", catalogue=default_catalogue(), key=SigningKey.generate())
    assert server.post("/v1/enrol", agent.enrol(net.token("A81001"))).status_code == 201
    assert net.cli("key", "revoke", agent.key.kid, "--compromised-since", "2026-01-01",
                   "--key-dir", str(net.settings.key_dir)) == 0  # fmt: skip
    capsys.readouterr()
    assert net.cli("key", "list", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["kid"] == agent.key.kid and row["compromised_since"].startswith("2026-01-01")
    assert net.cli("key", "list") == 0  # capsys's stdout is not a terminal
    table = capsys.readouterr().out
    assert agent.key.kid in table and "compromised since" in table and "2026-01-01" in table
