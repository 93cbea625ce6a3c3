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
