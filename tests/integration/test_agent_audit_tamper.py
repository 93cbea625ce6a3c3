"""``audit verify`` catches an aggregator that modified, dropped or forked its log."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from e2e_helpers import Agent, AggregatorServer

from agent.outbound.outbox import Outbox
from protocol.canonical import canonical_json
from protocol.envelope import Envelope
from protocol.merkle import leaf_hash
from protocol.submission import Receipt


def _receipt(agent: Agent, period: str) -> Receipt:
    with Outbox.open(agent.home) as outbox:
        (m,) = [m for m in outbox.messages(kind="submission") if m.period == period]
    assert m.receipt is not None
    return Receipt.from_bytes(Envelope.from_bytes(m.receipt).payload_bytes())


def _verify_fails(agent: Agent) -> str:
    code, out, err = agent("audit", "verify")
    assert code == 8, (code, out, err)
    assert "Traceback" not in err
    assert "AUDIT FAILED" in err
    return out + err


def test_audit_verify_detects_a_modified_leaf(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator)
    for period in ("2026-01", "2026-02", "2026-03"):
        agent.ok("submit", "--period", period)
    assert agent.json("audit", "verify")["ok"] is True  # type: ignore[index]

    # Someone with database access rewrites the leaf of the February submission: a different
    # envelope hash, the leaf hash recomputed so the row is self-consistent...
    target = _receipt(agent, "2026-02")
    db = sqlite3.connect(aggregator.db_file)
    (data,) = db.execute(
        "SELECT leaf_data FROM log_leaves WHERE idx = ?", (target.leaf_index,)
    ).fetchone()
    leaf = json.loads(data)
    leaf["envelope_sha256"] = "0" * 64
    forged = canonical_json(leaf)
    with db:
        db.execute(
            "UPDATE log_leaves SET leaf_data = ?, leaf_hash = ? WHERE idx = ?",
            (forged, leaf_hash(forged), target.leaf_index),
        )
        # ...and its node in the stored tree, so proofs for other leaves are built from it.
        db.execute(
            "UPDATE log_nodes SET hash = ? WHERE level = 0 AND idx = ?",
            (leaf_hash(forged), target.leaf_index),
        )
    db.close()

    text = _verify_fails(agent)
    assert f"leaf {target.leaf_index}" in text and "modified" in text
    report = json.loads(agent("audit", "verify", "--json")[1])
    assert report["ok"] is False
    # The other receipts' inclusion proofs now pass through the forged hash too.
    assert sum("not in the current log" in f for f in report["failures"]) >= 1


def test_audit_verify_detects_a_forked_log(
    aggregator_factory: Callable[..., AggregatorServer],
    agent_factory: Callable[..., Agent],
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    a = aggregator_factory("agg-a", practices=("A12345", "B81001"))
    ours = agent_factory(a, "A12345", name="ours")
    other = agent_factory(a, "B81001", name="other")
    ours.ok("submit", "--period", "2026-01")

    # Fork: a copy of the log as it is now, served with the same log key, grows differently.
    a.kill()
    b = a.copy_to(tmp_path / "agg-b")
    a.start()
    b.start()
    try:
        ours.ok("submit", "--period", "2026-02")  # on A: our agent sees A's checkpoint
        other.ok("submit", "--period", "2026-01", env={"FEDQI_AGENT_AGGREGATOR_URL": b.url})
        assert ours.json("audit", "verify")["ok"] is True  # type: ignore[index]

        # Point our agent at B: same key, same size, different history.
        code, out, err = ours("audit", "verify", env={"FEDQI_AGENT_AGGREGATOR_URL": b.url})
        assert code == 8 and "AUDIT FAILED" in err, (code, out, err)
        assert "forked" in out + err or "rewrote" in out + err
        # A resend to the fork is caught as well: its receipt's checkpoint is inconsistent.
        code, _, err = ours(
            "submit", "--period", "2026-03", env={"FEDQI_AGENT_AGGREGATOR_URL": b.url}
        )
        assert code == 8 and ("forked" in err or "rewrote" in err), err
    finally:
        b.kill()


def test_audit_verify_detects_dropped_history(
    aggregator: AggregatorServer,
    agent_factory: Callable[..., Agent],
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    agent = agent_factory(aggregator)
    agent.ok("submit", "--period", "2026-01")
    aggregator.kill()
    old = aggregator.copy_to(tmp_path / "agg-old")  # a backup taken now...
    aggregator.start()
    agent.ok("submit", "--period", "2026-02")
    agent.ok("submit", "--period", "2026-03")
    aggregator.kill()
    # ...restored over the live database: the last two submissions vanish.
    aggregator.restore_from(old)
    aggregator.start()
    text = _verify_fails(agent)
    assert "shrank" in text or "dropped" in text


def test_audit_verify_with_an_ig_token_checks_leaf_data_and_stored_envelopes(
    aggregator: AggregatorServer,
    agent_factory: Callable[..., Agent],
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    agent = agent_factory(aggregator)
    for period in ("2026-01", "2026-02"):
        agent.ok("submit", "--period", period)
    user = json.loads(
        aggregator.cli(
            "user",
            "add",
            "IG officer",
            "--role",
            "ig_officer",
            "--practice",
            "A12345",
            "--db",
            aggregator.db,
            "--json",
        )
    )
    token_file = tmp_path / "ig.token"
    token_file.write_text(user["token"] + "\n")
    token_file.chmod(0o600)
    env = {"FEDQI_AGENT_AUDIT_TOKEN_FILE": str(token_file)}
    code, out, err = agent("audit", "verify", "--json", env=env)
    assert code == 0, err
    assert all("stored envelope bytes" in p for p in json.loads(out)["passed"][1:])

    # Only the leaf's data is edited (its hash left alone): the public proofs cannot see it,
    # the IG officer's read of the leaf can. Then the stored envelope bytes are edited too.
    target = _receipt(agent, "2026-01")
    db = sqlite3.connect(aggregator.db_file)
    (data,) = db.execute(
        "SELECT leaf_data FROM log_leaves WHERE idx = ?", (target.leaf_index,)
    ).fetchone()
    leaf = json.loads(data)
    leaf["seq"] = 99
    with db:
        db.execute(
            "UPDATE log_leaves SET leaf_data = ? WHERE idx = ?",
            (canonical_json(leaf), target.leaf_index),
        )
    assert agent("audit", "verify")[0] == 0  # without the token this edit is invisible
    code, _, err = agent("audit", "verify", env=env)
    assert code == 8 and "leaf data no longer hashes" in err
    with db:
        db.execute("UPDATE log_leaves SET leaf_data = ? WHERE idx = ?", (data, target.leaf_index))
        db.execute(
            "UPDATE envelopes SET body = CAST(REPLACE(CAST(body AS TEXT), 'payload', 'payloaD') "
            "AS BLOB) WHERE sha256 = ?",
            (target.envelope_sha256,),
        )
    db.close()
    code, _, err = agent("audit", "verify", env=env)
    assert code == 8 and "differs from the bytes sent" in err

    token_file.chmod(0o644)
    code, _, err = agent("audit", "verify", env=env)
    assert code == 3 and "chmod 600" in err
