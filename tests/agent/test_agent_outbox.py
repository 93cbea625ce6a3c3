"""The outbox: append-only, durable, seq allocation, states and receipts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.outbound.outbox import NewMessage, Outbox


def _msg(seq: int, period: str = "2026-01") -> NewMessage:
    return NewMessage(
        kind="submission",
        envelope=f"env{seq}".encode(),
        sha256=f"{seq:064x}",
        kid="k" * 43,
        seq=seq,
        submission_id=f"id-{seq}",
        period=period,
    )


def test_seq_is_allocated_in_order_and_states_are_history(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        a = box.add_signed(_msg, "queued")
        b = box.add_signed(lambda s: _msg(s, "2026-02"), "held")
        assert (a.seq, b.seq) == (1, 2)
        box.set_state(b.id, "rejected", "no")
        assert box.get(b.id).state == "rejected"
        assert [s for s, _, _ in box.history(b.id)] == ["held", "rejected"]
        box.add_receipt(a.id, b"receipt")
        box.add_receipt(a.id, b"receipt")  # idempotent
        got = box.get(a.id)
        assert got.state == "accepted" and got.receipt == b"receipt"
        assert [m.id for m in box.messages(state="rejected")] == [b.id]


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE messages SET envelope = x'00'",
        "DELETE FROM messages",
        "DELETE FROM states",
        "UPDATE receipts SET receipt = x'00'",
        "DELETE FROM checkpoints",
    ],
)
def test_outbox_is_append_only(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path) as box:
        m = box.add_signed(_msg, "queued")
        box.add_receipt(m.id, b"r")
        box.add_checkpoint("note", "o", 1, b"\x00" * 32)
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute(sql)
    db.close()


def test_committed_before_return_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    m = box.add_signed(_msg, "queued")
    # A second connection (another process would be the same) sees the committed bytes.
    other = sqlite3.connect(path)
    (env,) = other.execute("SELECT envelope FROM messages WHERE id = ?", (m.id,)).fetchone()
    assert env == b"env1"
    other.close()
    box.close()
    assert Outbox(path).get(m.id).envelope == b"env1"


def test_a_failed_build_stores_nothing(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:

        def boom(seq: int) -> NewMessage:
            raise ValueError("disclosure check failed")

        with pytest.raises(ValueError):
            box.add_signed(boom, "queued")
        assert box.messages() == []


def test_outbox_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    Outbox(path).close()
    assert path.stat().st_mode & 0o077 == 0


def test_a_message_keeps_why_it_was_held(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        m = box.add_signed(_msg, "held", "disclosure guard: X could be narrowed")
        assert m.state == "held" and m.state_note == "disclosure guard: X could be narrowed"
        assert box.history(m.id)[0][2] == "disclosure guard: X could be narrowed"
