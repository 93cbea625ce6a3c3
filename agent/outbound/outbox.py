"""The durable, append-only outbox: every message the agent signs, before it is sent.

One SQLite file in the agent home. A message's envelope bytes are committed (SQLite
``synchronous=FULL``, rollback journal: the commit is fsynced into the database file itself)
BEFORE the first attempt to send it, so a crash at any point leaves either nothing or a stored
message that is resent byte for byte. Nothing is ever updated or deleted (triggers enforce it):

* ``messages``     the signed envelope bytes, their sha256, kind, kid, seq, submission id, period
* ``states``       each message's history of states; the latest row is its state now:
                   ``held`` (waiting for approval), ``queued`` (to send), ``rejected`` (by the
                   practice, never sent), ``accepted`` (the aggregator's receipt is stored),
                   ``refused`` (the aggregator answered 4xx; the reason is kept)
* ``receipts``     the aggregator's signed receipt envelope for each accepted message
* ``checkpoints``  every log checkpoint the agent has seen and verified, for consistency checks

Only signed protocol messages go in here: summary counts, never patient rows or worklists.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentUserError, ConfigError
from agent.home.settings import OUTBOX_FILE as OUTBOX_FILE  # defined in the inner layer
from agent.home.settings import no_home

STATES = ("held", "queued", "rejected", "accepted", "refused")
#: The ids SQLite can hold (a signed 64-bit integer): any other is no message's.
MIN_ID, MAX_ID = -(2**63), 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('submission', 'enrol', 'rotate')),
    created_at INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    kid TEXT NOT NULL,
    seq INTEGER UNIQUE,
    submission_id TEXT UNIQUE,
    period TEXT
);
CREATE TABLE IF NOT EXISTS states (
    id INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL REFERENCES messages(id),
    state TEXT NOT NULL CHECK (state IN ('held', 'queued', 'rejected', 'accepted', 'refused')),
    at INTEGER NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS ix_states_message ON states(message_id, id);
CREATE TABLE IF NOT EXISTS receipts (
    id INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL UNIQUE REFERENCES messages(id),
    receipt BLOB NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY,
    note TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    size INTEGER NOT NULL,
    root TEXT NOT NULL,
    seen_at INTEGER NOT NULL
);
"""
_TABLES = ("messages", "states", "receipts", "checkpoints")


@dataclass(frozen=True)
class Message:
    id: int
    kind: str
    created_at: int
    envelope: bytes
    sha256: str
    kid: str
    seq: int | None
    submission_id: str | None
    period: str | None
    state: str
    state_note: str
    receipt: bytes | None


@dataclass(frozen=True)
class SeenCheckpoint:
    id: int
    note: str
    origin: str
    size: int
    root: bytes
    seen_at: int


@dataclass(frozen=True)
class NewMessage:
    """What a builder returns for :meth:`Outbox.add_signed`."""

    kind: str
    envelope: bytes
    sha256: str
    kid: str
    seq: int | None
    submission_id: str | None = None
    period: str | None = None


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            for table in _TABLES:
                for op in ("UPDATE", "DELETE"):
                    self._db.execute(
                        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON "
                        f"{table} BEGIN SELECT RAISE(ABORT, 'the outbox is append-only'); END"
                    )
        except sqlite3.Error as exc:
            if not path.parent.is_dir():
                raise no_home(path.parent) from None
            raise ConfigError(f"{path}: cannot open the outbox: {exc}") from None
        path.chmod(0o600)

    @classmethod
    def open(cls, home: Path) -> Outbox:
        return cls(home / OUTBOX_FILE)

    @classmethod
    def read_only(cls, home: Path) -> Outbox:
        """Another agent home's outbox (``previous_homes``), opened only to read: nothing is
        created, changed or chmodded there (the scheduled job may write only its own home).
        Raises ``sqlite3.Error`` when it cannot be read; the caller names the setting that
        points here."""
        box = cls.__new__(cls)
        box.path = home / OUTBOX_FILE
        box._db = sqlite3.connect(
            f"{box.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=30
        )
        try:  # an unreadable or foreign file fails here, not half way through a run
            box._db.execute(
                "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM states), "
                "(SELECT count(*) FROM receipts)"
            ).fetchone()
        except sqlite3.Error:
            box._db.close()
            raise
        return box

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")  # one writer at a time: seq allocation is atomic
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- writing ---------------------------------------------------------------------------

    def add_signed(self, build: Callable[[int], NewMessage], state: str, note: str = "") -> Message:
        """Allocate the next seq, let ``build(seq)`` sign the message, and store it with its
        first state, all in one committed transaction (so two agents never share a seq)."""
        if state not in STATES:
            raise ValueError(state)
        now = int(time.time())
        with self._tx() as db:
            (top,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()
            new = build(top + 1)
            cur = db.execute(
                "INSERT INTO messages (kind, created_at, envelope, sha256, kid, seq, "
                "submission_id, period) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.kind,
                    now,
                    new.envelope,
                    new.sha256,
                    new.kid,
                    new.seq,
                    new.submission_id,
                    new.period,
                ),
            )
            message_id = int(cur.lastrowid or 0)
            db.execute(
                "INSERT INTO states (message_id, state, at, note) VALUES (?, ?, ?, ?)",
                (message_id, state, now, note[:500]),
            )
        return self.get(message_id)

    def set_state(self, message_id: int, state: str, note: str = "") -> None:
        if state not in STATES:
            raise ValueError(state)
        with self._tx() as db:
            db.execute(
                "INSERT INTO states (message_id, state, at, note) VALUES (?, ?, ?, ?)",
                (message_id, state, int(time.time()), note[:500]),
            )

    def change_state(self, message_id: int, expected: str, state: str, note: str = "") -> str:
        """Move a message to ``state`` only if its state now is ``expected``; returns the state
        it was in (so the move happened if and only if that is ``expected``). The check and
        the move are one write transaction, so of two commands moving the same message (two
        ``approve``, an ``approve`` and a ``reject``) exactly one does; the other is told
        what the first made of it."""
        if state not in STATES:
            raise ValueError(state)
        self._require_storable(message_id)
        with self._tx() as db:
            row = db.execute(
                "SELECT state FROM states WHERE message_id = ? ORDER BY id DESC LIMIT 1",
                (message_id,),
            ).fetchone()
            if row is None:
                raise AgentUserError(f"no message #{message_id} in the outbox {self.path}")
            if row[0] == expected:
                db.execute(
                    "INSERT INTO states (message_id, state, at, note) VALUES (?, ?, ?, ?)",
                    (message_id, state, int(time.time()), note[:500]),
                )
        return str(row[0])

    def add_receipt(self, message_id: int, receipt: bytes) -> None:
        """Store the receipt and mark the message accepted, in one transaction."""
        now = int(time.time())
        with self._tx() as db:
            exists = db.execute(
                "SELECT receipt FROM receipts WHERE message_id = ?", (message_id,)
            ).fetchone()
            if exists is not None:
                return  # an idempotent resend can bring the same receipt again
            db.execute(
                "INSERT INTO receipts (message_id, receipt, received_at) VALUES (?, ?, ?)",
                (message_id, receipt, now),
            )
            db.execute(
                "INSERT INTO states (message_id, state, at) VALUES (?, 'accepted', ?)",
                (message_id, now),
            )

    def add_checkpoint(self, note: str, origin: str, size: int, root: bytes) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO checkpoints (note, origin, size, root, seen_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (note, origin, size, root.hex(), int(time.time())),
            )

    # --- reading ---------------------------------------------------------------------------

    _SELECT = (
        "SELECT m.id, m.kind, m.created_at, m.envelope, m.sha256, m.kid, m.seq, "
        "m.submission_id, m.period, s.state, s.note, r.receipt FROM messages m "
        "JOIN states s ON s.id = (SELECT MAX(id) FROM states WHERE message_id = m.id) "
        "LEFT JOIN receipts r ON r.message_id = m.id"
    )

    def _rows(self, where: str = "", params: tuple[object, ...] = ()) -> list[Message]:
        rows = self._db.execute(f"{self._SELECT} {where} ORDER BY m.id", params).fetchall()
        return [
            Message(
                id=r[0],
                kind=r[1],
                created_at=r[2],
                envelope=bytes(r[3]),
                sha256=r[4],
                kid=r[5],
                seq=r[6],
                submission_id=r[7],
                period=r[8],
                state=r[9],
                state_note=r[10],
                receipt=None if r[11] is None else bytes(r[11]),
            )
            for r in rows
        ]

    def _require_storable(self, message_id: int) -> None:
        """An id SQLite cannot hold (a 64-bit integer) is no message's: "no message", as for
        any other id not in the outbox, where SQLite would raise OverflowError."""
        if not MIN_ID <= message_id <= MAX_ID:
            raise AgentUserError(f"no message #{message_id} in the outbox {self.path}")

    def get(self, message_id: int) -> Message:
        self._require_storable(message_id)
        rows = self._rows("WHERE m.id = ?", (message_id,))
        if not rows:
            raise AgentUserError(f"no message #{message_id} in the outbox {self.path}")
        return rows[0]

    def messages(self, *, kind: str | None = None, state: str | None = None) -> list[Message]:
        found = self._rows("WHERE m.kind = ?", (kind,)) if kind else self._rows()
        return [m for m in found if state is None or m.state == state]

    def for_period(self, period: str) -> list[Message]:
        return self._rows("WHERE m.kind = 'submission' AND m.period = ?", (period,))

    def checkpoints(self) -> list[SeenCheckpoint]:
        rows = self._db.execute(
            "SELECT id, note, origin, size, root, seen_at FROM checkpoints ORDER BY size, id"
        ).fetchall()
        return [SeenCheckpoint(r[0], r[1], r[2], r[3], bytes.fromhex(r[4]), r[5]) for r in rows]

    def history(self, message_id: int) -> list[tuple[str, int, str]]:
        self._require_storable(message_id)
        return [
            (r[0], r[1], r[2])
            for r in self._db.execute(
                "SELECT state, at, note FROM states WHERE message_id = ? ORDER BY id",
                (message_id,),
            )
        ]
