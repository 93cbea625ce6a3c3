"""``check-source``: what a source holds, measured against the catalogue's codelists, so a
practice can tell whether its numbers will mean anything before it submits.

Reads the canonical tables (a loaded store, or an OMOP database through its views) and reports
counts only: patients, date ranges, rows per table and code system, the most frequent codes no
codelist uses, and the codelist codes never seen. The report is shown locally and never sent.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine

from agent.schema import events, medications, patients
from protocol.catalogue import Catalogue

TOP_UNUSED = 20
MAX_UNSEEN_LISTED = 50


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TableSummary(_Frozen):
    rows: int
    first_date: dt.date | None
    last_date: dt.date | None
    by_system: dict[str, int]


class CodeCount(_Frozen):
    table: str
    system: str
    code: str
    rows: int


class CodelistCoverage(_Frozen):
    id: str
    codes: int
    seen: int
    rows: int
    never_seen: list[str]  # "system:code", at most MAX_UNSEEN_LISTED
    never_seen_total: int


class SourceCheck(_Frozen):
    patients: int
    registered_now: int
    tables: dict[str, TableSummary]
    unused_codes: list[CodeCount]  # the most frequent codes no codelist names
    unused_distinct: int
    codelists: list[CodelistCoverage]

    def lines(self) -> list[str]:
        out = [f"patients: {self.patients} ({self.registered_now} registered and alive today)"]
        for name, t in self.tables.items():
            span = f"{t.first_date} to {t.last_date}" if t.rows else "no rows"
            systems = ", ".join(f"{s} {n}" for s, n in sorted(t.by_system.items()))
            out.append(f"{name}: {t.rows} rows, {span}" + (f" ({systems})" if systems else ""))
        out.append(f"codes no codelist uses: {self.unused_distinct} distinct; the most frequent:")
        for c in self.unused_codes:
            out.append(f"  {c.table} {c.system}:{c.code}  {c.rows} rows")
        out.append("codelists (codes seen / codes in the list, rows):")
        for cl in self.codelists:
            flag = "  <- never seen" if cl.seen == 0 else ""
            out.append(f"  {cl.id}: {cl.seen}/{cl.codes}, {cl.rows} rows{flag}")
            if cl.never_seen and cl.seen:
                more = cl.never_seen_total - len(cl.never_seen)
                tail = f" (+{more} more)" if more > 0 else ""
                out.append(f"    never seen: {', '.join(cl.never_seen)}{tail}")
        return out


def _as_date(value: object) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value  # type: ignore[return-value]
    return dt.date.fromisoformat(str(value)[:10])


def check_source(engine: Engine, catalogue: Catalogue, today: dt.date) -> SourceCheck:
    """Summarise the canonical tables at ``engine`` against ``catalogue``'s codelists."""
    used: set[tuple[str, str]] = set()
    for cl in catalogue.codelists:
        used |= cl.pairs()
    seen: Counter[tuple[str, str]] = Counter()
    unused: list[CodeCount] = []
    tables: dict[str, TableSummary] = {}
    with engine.connect() as conn:
        n_patients = conn.execute(sa.select(sa.func.count()).select_from(patients)).scalar_one()
        p = patients.c
        registered = conn.execute(
            sa.select(sa.func.count())
            .select_from(patients)
            .where(
                p.registration_start <= today,
                sa.or_(p.registration_end.is_(None), p.registration_end > today),
                sa.or_(p.death_date.is_(None), p.death_date > today),
            )
        ).scalar_one()
        for name, table in (("events", events), ("medications", medications)):
            c = table.c
            rows, first, last = conn.execute(
                sa.select(sa.func.count(), sa.func.min(c.date), sa.func.max(c.date))
            ).one()
            by_code = conn.execute(
                sa.select(c.system, c.code, sa.func.count()).group_by(c.system, c.code)
            ).all()
            by_system: Counter[str] = Counter()
            for system, code, n in by_code:
                by_system[system] += n
                seen[(system, code)] += n
                if (system, code) not in used:
                    unused.append(CodeCount(table=name, system=system, code=code, rows=n))
            tables[name] = TableSummary(
                rows=rows,
                first_date=_as_date(first),
                last_date=_as_date(last),
                by_system=dict(by_system),
            )
    coverage = []
    for cl in catalogue.codelists:
        pairs = sorted(cl.pairs())
        unseen = [f"{s}:{c}" for s, c in pairs if (s, c) not in seen]
        coverage.append(
            CodelistCoverage(
                id=cl.id,
                codes=len(pairs),
                seen=len(pairs) - len(unseen),
                rows=sum(seen[pair] for pair in pairs),
                never_seen=unseen[:MAX_UNSEEN_LISTED],
                never_seen_total=len(unseen),
            )
        )
    unused.sort(key=lambda c: (-c.rows, c.table, c.system, c.code))
    return SourceCheck(
        patients=n_patients,
        registered_now=registered,
        tables=tables,
        unused_codes=unused[:TOP_UNUSED],
        unused_distinct=len(unused),
        codelists=coverage,
    )
