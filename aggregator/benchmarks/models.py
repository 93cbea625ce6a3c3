"""The benchmark tables: derived data, rebuilt from ``cells`` at any time.

* ``bench_stale``: (indicator, period) groups whose statistics need recomputing. The ingest hook
  bumps ``mark``; a refresh deletes the row only if ``mark`` is still what it read, so a
  submission arriving mid-refresh leaves the group stale.
* ``bench_summary``: one row per (indicator, period): pooled rate, quantiles, dispersion, ABC.
* ``bench_practice``: one row per (indicator, period, practice): counts and their disclosure
  status, rate, Wilson intervals, z, funnel band and the limits it was judged against.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Date, Float, Index, Integer, String, Text
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


class BenchPractice(Base):
    __tablename__ = "bench_practice"
    indicator: Mapped[str] = mapped_column(String(32), primary_key=True)
    period_start: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    period_end: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    practice_ods: Mapped[str] = mapped_column(String(6), primary_key=True)
    submission_id: Mapped[str] = mapped_column(String(36))
    indicator_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    numerator: Mapped[int | None] = mapped_column(Integer, nullable=True)
    numerator_status: Mapped[str] = mapped_column(String(10))
    denominator: Mapped[int | None] = mapped_column(Integer, nullable=True)
    denominator_status: Mapped[str] = mapped_column(String(10))
    exclusions: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exclusions_status: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10))
    rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    lo95: Mapped[float | None] = mapped_column(Float, nullable=True)
    hi95: Mapped[float | None] = mapped_column(Float, nullable=True)
    lo998: Mapped[float | None] = mapped_column(Float, nullable=True)
    hi998: Mapped[float | None] = mapped_column(Float, nullable=True)
    approximate: Mapped[bool] = mapped_column(Boolean)
    z: Mapped[float | None] = mapped_column(Float, nullable=True)
    band: Mapped[str | None] = mapped_column(String(10), nullable=True)
    limit_low_95: Mapped[float | None] = mapped_column(Float, nullable=True)
    limit_high_95: Mapped[float | None] = mapped_column(Float, nullable=True)
    limit_low_998: Mapped[float | None] = mapped_column(Float, nullable=True)
    limit_high_998: Mapped[float | None] = mapped_column(Float, nullable=True)
    note: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The practice's entry pre-rendered (aggregator.benchmarks.render): as an identifying viewer
    # sees it and as a peer sees it, JSON object bodies without braces.
    item_json: Mapped[str] = mapped_column(Text)
    peer_json: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        Index("ix_bench_practice_practice", "practice_ods", "indicator", "period_end"),
    )
