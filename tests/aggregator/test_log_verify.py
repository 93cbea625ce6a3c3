"""`fedqi-aggregator log verify` re-verifies the whole log from the database (the step after a
restore from backup) and names what does not verify."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, update

from aggregator.cli import main as cli
from aggregator.db import models
from protocol.submission import Period


def _verify(server, capsys) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    code = cli(["log", "verify", "--db", server.network.db, "--json"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def busy_log(server, agent_factory):  # type: ignore[no-untyped-def]
    a = agent_factory("A81001")
    b = agent_factory("A81002", group="PCN2")
    for month in (4, 5, 6):
        for agent in (a, b):
            r = server.post("/v1/submissions", agent.submission(period=Period.month(2026, month)))
            assert r.status_code == 201, r.text
    # a key event without an envelope of its own
    assert (
        server.network.cli(
            "key", "revoke", b.key.kid, "--key-dir", str(server.network.settings.key_dir)
        )
        == 0
    )
    return server


def test_log_verify_passes_on_an_intact_log(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out = _verify(busy_log, capsys)
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] is True
    assert report["size"] == 2 + 6 + 1  # two enrolments, six submissions, one revocation
    assert report["envelopes_checked"] == 8
    assert report["checkpoints_checked"] >= 1
    assert report["latest_checkpoint_size"] == report["size"]


def _edit(server, stmt) -> None:  # type: ignore[no-untyped-def]
    with server.network.database.session() as s:
        s.execute(stmt)


def test_log_verify_names_a_rewritten_leaf(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    with busy_log.network.database.read() as s:
        data = bytes(s.scalar(select(models.LogLeaf.leaf_data).where(models.LogLeaf.idx == 3)))
    forged = data.replace(b'"practice":"A8100', b'"practice":"B8100', 1)
    _edit(busy_log, update(models.LogLeaf).where(models.LogLeaf.idx == 3).values(leaf_data=forged))
    code, out = _verify(busy_log, capsys)
    assert code == 1 and "leaf 3" in out and "hash" in out


def test_log_verify_names_a_rewritten_envelope(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    with busy_log.network.database.read() as s:
        env = s.scalars(select(models.Envelope).where(models.Envelope.leaf_index == 4)).one()
        sha, body = env.sha256, bytes(env.body)
    _edit(
        busy_log,
        update(models.Envelope).where(models.Envelope.sha256 == sha).values(body=body[:-2] + b" }"),
    )
    code, out = _verify(busy_log, capsys)
    assert code == 1 and "leaf 4" in out and "envelope" in out


def test_log_verify_names_a_consistently_rewritten_history(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    """A DBA who rewrites a leaf AND its hash still cannot match the signed checkpoints."""
    from protocol import merkle

    with busy_log.network.database.read() as s:
        data = bytes(s.scalar(select(models.LogLeaf.leaf_data).where(models.LogLeaf.idx == 1)))
    forged = data.replace(b'"practice":"A8100', b'"practice":"B8100', 1)
    _edit(
        busy_log,
        update(models.LogLeaf)
        .where(models.LogLeaf.idx == 1)
        .values(leaf_data=forged, leaf_hash=merkle.leaf_hash(forged)),
    )
    code, out = _verify(busy_log, capsys)
    assert code == 1 and "checkpoint" in out and "root" in out


def test_log_verify_names_a_corrupt_tree_node(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    _edit(
        busy_log,
        update(models.LogNode)
        .where(models.LogNode.level == 1, models.LogNode.idx == 0)
        .values(hash=b"\x00" * 32),
    )
    code, out = _verify(busy_log, capsys)
    assert code == 1 and "log node (1, 0)" in out


def test_log_verify_names_a_dropped_leaf(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import delete

    _edit(busy_log, delete(models.LogLeaf).where(models.LogLeaf.idx == 8))
    code, out = _verify(busy_log, capsys)
    assert code == 1 and ("log_state" in out or "missing" in out)
