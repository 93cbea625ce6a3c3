"""The benchmark tables: derived data, rebuilt from ``cells`` at any time.

* ``bench_stale``: (indicator, period) groups whose statistics need recomputing. The ingest hook
  bumps ``mark``; a refresh deletes the row only if ``mark`` is still what it read, so a
  submission arriving mid-refresh leaves the group stale.
* ``bench_summary``: one row per (indicator, period): pooled rate, quantiles, dispersion, ABC.
* ``bench_entries``: one row per (indicator, period): its practices' counts, disclosure statuses,
  indicator versions and flags as one compact value; each practice's rate, Wilson intervals, z,
  funnel band and limits are computed from it and the summary when read
  (:mod:`.entries_store`).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Date, Float, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..db.models import TZ, Base


class BenchStale(Base):
    __tablename__ = "bench_stale"
    indicator: Mapped[str] = mapped_column(String(32), primary_key=True)
    period_start: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    period_end: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    mark: Mapped[int] = mapped_column(Integer, default=1)
    marked_at: Mapped[dt.datetime] = mapped_column(TZ)


class BenchSummary(Base):
    __tablename__ = "bench_summary"
    indicator: Mapped[str] = mapped_column(String(32), primary_key=True)
    period_start: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    period_end: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    indicator_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    versions: Mapped[str] = mapped_column(String(200))  # every version seen, comma-separated
    practices: Mapped[int] = mapped_column(Integer)
    included: Mapped[int] = mapped_column(Integer)
    suppressed: Mapped[int] = mapped_column(Integer)
    empty: Mapped[int] = mapped_column(Integer)
    rounded: Mapped[int] = mapped_column(Integer)
    numerator: Mapped[int] = mapped_column(Integer)
    denominator: Mapped[int] = mapped_column(Integer)
    pooled: Mapped[float | None] = mapped_column(Float, nullable=True)
    pooled_lo95: Mapped[float | None] = mapped_column(Float, nullable=True)
    pooled_hi95: Mapped[float | None] = mapped_column(Float, nullable=True)
    median: Mapped[float | None] = mapped_column(Float, nullable=True)
    q1: Mapped[float | None] = mapped_column(Float, nullable=True)
    q3: Mapped[float | None] = mapped_column(Float, nullable=True)
    deciles: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list
    phi: Mapped[float | None] = mapped_column(Float, nullable=True)
    dispersion_statistic: Mapped[float | None] = mapped_column(Float, nullable=True)
    dispersion_p: Mapped[float | None] = mapped_column(Float, nullable=True)
    overdispersed: Mapped[bool] = mapped_column(Boolean)
    tau2: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(16))
    abc: Mapped[float | None] = mapped_column(Float, nullable=True)
    abc_practices: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[dt.datetime] = mapped_column(TZ)
    # The submissions shown as unverified or suspect: JSON {submission id: "unverified" |
    # "suspect"}; null when none (nearly always).
    flagged: Mapped[str | None] = mapped_column(Text, nullable=True)


class BenchEntries(Base):
    """One group's practices as the refresh found them: their ODS codes (comma-joined), their
    submission ids (16 bytes each, in the same order) and their counts as one array (``numbers``,
    :data:`aggregator.benchmarks.entries_store.NUMBERS`). Each practice's rate, intervals, z,
    band and limits are computed from these and the group's summary when read."""

    __tablename__ = "bench_entries"
    indicator: Mapped[str] = mapped_column(String(32), primary_key=True)
    period_start: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    period_end: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    practices: Mapped[str] = mapped_column(Text)
    submissions: Mapped[bytes] = mapped_column(LargeBinary)  # 16 bytes an id (a UUID)
    numbers: Mapped[bytes] = mapped_column(LargeBinary)
