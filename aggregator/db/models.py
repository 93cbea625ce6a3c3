"""The aggregator's tables.

Append-only where it matters: ``envelopes``, ``submissions``, ``cells``, ``log_leaves``,
``log_nodes`` and ``checkpoints`` are only ever inserted into (a submission's ``effective`` flag
and ``superseded_by`` are the one piece of bookkeeping updated, by a later correction).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def table_of(model: type[Base]) -> Table:
    """``model``'s :class:`Table` (SQLAlchemy types ``__table__`` as the wider FromClause)."""
    t = model.__table__
    if not isinstance(t, Table):  # pragma: no cover (every model here is a plain table)
        raise TypeError(f"{model.__name__} is not mapped to a plain table")
    return t


TZ = DateTime(timezone=True)


class Network(Base):
    """One row: the network this aggregator serves (written by ``init``)."""

    __tablename__ = "network"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    aud: Mapped[str] = mapped_column(String(63))
    origin: Mapped[str] = mapped_column(String(200))
    log_key_name: Mapped[str] = mapped_column(String(200))
    log_public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    catalogue_public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[dt.datetime] = mapped_column(TZ)


class Practice(Base):
    __tablename__ = "practices"
    ods: Mapped[str] = mapped_column(String(6), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    group: Mapped[str] = mapped_column("pcn", String(100), index=True)
    list_size: Mapped[int] = mapped_column(Integer)
    imd_decile: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[dt.datetime] = mapped_column(TZ)
    #: named | pseudonymised | totals_only: from the practice's latest accepted submission
    visibility: Mapped[str] = mapped_column(String(20), default="named", server_default="named")
    #: the submission that set it (None: never changed from named)
    visibility_since: Mapped[str | None] = mapped_column(String(36), nullable=True)


class PracticeKey(Base):
    """An agent's Ed25519 key. ``status``: active (may sign), retired (rotated away: verifies
    history, may not sign), revoked (admin; ``compromised_since`` flags a suspect window)."""

    __tablename__ = "practice_keys"
    kid: Mapped[str] = mapped_column(String(43), primary_key=True)
    practice_ods: Mapped[str] = mapped_column(ForeignKey("practices.ods"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    status: Mapped[str] = mapped_column(String(10))
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(TZ)
    retired_at: Mapped[dt.datetime | None] = mapped_column(TZ, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(TZ, nullable=True)
    compromised_since: Mapped[dt.datetime | None] = mapped_column(TZ, nullable=True)
    replaced_by: Mapped[str | None] = mapped_column(String(43), nullable=True)


class EnrolToken(Base):
    """A single-use enrolment token; only its SHA-256 is stored."""

    __tablename__ = "enrol_tokens"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    practice_ods: Mapped[str] = mapped_column(ForeignKey("practices.ods"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZ)
    expires_at: Mapped[dt.datetime] = mapped_column(TZ)
    used_at: Mapped[dt.datetime | None] = mapped_column(TZ, nullable=True)
    used_by_kid: Mapped[str | None] = mapped_column(String(43), nullable=True)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    practice_ods: Mapped[str | None] = mapped_column(ForeignKey("practices.ods"), nullable=True)
    group: Mapped[str | None] = mapped_column("pcn", String(100), nullable=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZ)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The API token is refused from this instant (null: it does not expire).
    expires_at: Mapped[dt.datetime | None] = mapped_column(TZ, nullable=True)


class DashboardSession(Base):
    """A dashboard sign-in: the cookie holds a random id, only its SHA-256 is stored. Refused
    from ``expires_at`` on (never later than the user's own token expiry), when the user is
    revoked, and gone at sign-out."""

    __tablename__ = "sessions"
    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZ)
    expires_at: Mapped[dt.datetime] = mapped_column(TZ, index=True)


class Catalogue(Base):
    """A published catalogue: its signed envelope, exactly as served."""

    __tablename__ = "catalogues"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    published_at: Mapped[dt.datetime] = mapped_column(TZ)


class Envelope(Base):
    """Exact bytes of every accepted envelope, keyed by their SHA-256."""

    __tablename__ = "envelopes"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    practice_ods: Mapped[str] = mapped_column(String(6), index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[dt.datetime] = mapped_column(TZ)
    # The signed receipt returned for it (sent again, byte for byte, on an identical retry).
    receipt: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_index: Mapped[int] = mapped_column(BigInteger, unique=True)


class Submission(Base):
    __tablename__ = "submissions"
    submission_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    practice_ods: Mapped[str] = mapped_column(ForeignKey("practices.ods"))
    kid: Mapped[str] = mapped_column(ForeignKey("practice_keys.kid"))
    seq: Mapped[int] = mapped_column(BigInteger)
    iat: Mapped[int] = mapped_column(BigInteger)
    period_start: Mapped[dt.date] = mapped_column()
    period_end: Mapped[dt.date] = mapped_column()
    catalogue_id: Mapped[str] = mapped_column(String(64))
    catalogue_version: Mapped[int] = mapped_column(Integer)
    catalogue_sha256: Mapped[str] = mapped_column(String(64))
    supersedes: Mapped[str | None] = mapped_column(String(36), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    envelope_sha256: Mapped[str] = mapped_column(ForeignKey("envelopes.sha256"))
    payload_sha256: Mapped[str] = mapped_column(String(64))
    leaf_index: Mapped[int] = mapped_column(BigInteger, unique=True)
    received_at: Mapped[dt.datetime] = mapped_column(TZ)
    effective: Mapped[bool] = mapped_column(Boolean)
    superseded_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # The whole-practice counts of every indicator as one value (aggregator.db.counts) and the
    # ingest's seal on it (aggregator.log.verdict): what a benchmark refresh reads. Null on
    # submissions stored before revision 0010 until a refresh has proven their cells.
    counts: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    counts_verdict: Mapped[bytes | None] = mapped_column(
        LargeBinary(16), nullable=True, deferred=True
    )

    __table_args__ = (
        Index("ix_submissions_practice_period", "practice_ods", "period_start", "period_end"),
        Index("ix_submissions_effective_period", "effective", "period_end"),
    )


class Cell(Base):
    """One indicator of a submission: its whole-practice total in columns (what benchmarks
    read) and its stratified cells in ``strata`` (see :mod:`aggregator.db.cells`). One row per
    indicator rather than per stratum: a 40-indicator submission writes 40 rows, not 360, which
    is most of the database's work per submission (docs/benchmarks.md). ``*_status`` is
    exact|rounded|suppressed|zero; a suppressed count has a null value."""

    __tablename__ = "cells"
    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.submission_id"), primary_key=True
    )
    indicator: Mapped[str] = mapped_column(String(32), primary_key=True)
    denominator: Mapped[int | None] = mapped_column(Integer, nullable=True)
    denominator_status: Mapped[str] = mapped_column(String(10))
    numerator: Mapped[int | None] = mapped_column(Integer, nullable=True)
    numerator_status: Mapped[str] = mapped_column(String(10))
    exclusions: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exclusions_status: Mapped[str] = mapped_column(String(10))
    strata: Mapped[str] = mapped_column(Text)
    # The ingest's seal on this row (aggregator.log.verdict); null on rows written before it.
    verdict: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)


class LogLeaf(Base):
    __tablename__ = "log_leaves"
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf_data: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    kind: Mapped[str] = mapped_column(String(20))
    practice_ods: Mapped[str] = mapped_column(String(6), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZ)


class LogNode(Base):
    """Hash of the perfect subtree at ``level`` >= 1 covering leaves
    ``[index * 2**level, (index + 1) * 2**level)`` (level 0 is ``log_leaves.leaf_hash``)."""

    __tablename__ = "log_nodes"
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogState(Base):
    """One row: the log's size. Updating it is the sequencer on SQLite (takes the write lock)."""

    __tablename__ = "log_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(String(4000))
    created_at: Mapped[dt.datetime] = mapped_column(TZ)


class AccessAudit(Base):
    """Every attempt to read a raw envelope, granted or not."""

    __tablename__ = "access_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(TZ)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    user_role: Mapped[str] = mapped_column(String(20))
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    practice_ods: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    granted: Mapped[bool] = mapped_column(Boolean)


__all__ = [
    "AccessAudit",
    "Base",
    "Catalogue",
    "Cell",
    "Checkpoint",
    "DashboardSession",
    "EnrolToken",
    "Envelope",
    "LogLeaf",
    "LogNode",
    "LogState",
    "Network",
    "Practice",
    "PracticeKey",
    "Submission",
    "User",
    "table_of",
]
