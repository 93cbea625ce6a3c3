"""``check-source``: what a source holds, measured against the catalogue's codelists, so a
practice can tell whether its coding is caught before it submits.

Reads the canonical tables (a loaded store, or an OMOP database through its views) and reports
counts only: patients, date ranges, rows per table and code system; for each codelist (each
national cluster) how many patients have at least one of its codes; the most frequent codes in
the clinical code systems the catalogue reads (SNOMED CT, dm+d) that match no list, which count
towards nothing; and rows in code systems no list uses. The report is shown locally and never
sent.
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
    cluster: str
    codes: int
    seen: int
    rows: int
    patients: int  # patients (any registration status) with at least one code of the list
    never_seen: list[str]  # "system:code", at most MAX_UNSEEN_LISTED
    never_seen_total: int


class SourceCheck(_Frozen):
    patients: int
    registered_now: int
    tables: dict[str, TableSummary]
    clinical_systems: list[str]  # the code systems the catalogue's lists use
    # The most frequent codes in those systems that no codelist names, most frequent first.
    unused_codes: list[CodeCount]
    unused_distinct: int
    # Rows in code systems no codelist uses at all (e.g. LOINC in a FHIR extract): not counted.
    other_systems: dict[str, int]
    codelists: list[CodelistCoverage]

    def lines(self) -> list[str]:
        out = [f"patients: {self.patients} ({self.registered_now} registered and alive today)"]
        for name, t in self.tables.items():
            span = f"{t.first_date} to {t.last_date}" if t.rows else "no rows"
            systems = ", ".join(f"{s} {n}" for s, n in sorted(t.by_system.items()))
            out.append(f"{name}: {t.rows} rows, {span}" + (f" ({systems})" if systems else ""))
        out.append(
            "clusters: patients with at least one code of the list, codes of the list seen, rows"
        )
        width = max((len(cl.id) for cl in self.codelists), default=0)
        for cl in self.codelists:
            flag = "  <- no patient has any of these codes" if cl.seen == 0 else ""
            out.append(
                f"  {cl.id:<{width}}  {cl.patients:>7} patients  {cl.seen:>4}/{cl.codes} codes"
                f"  {cl.rows} rows  ({cl.cluster}){flag}"
            )
        systems = " and ".join(self.clinical_systems) or "no system"
        out.append(
            f"{systems} codes that match no list: {self.unused_distinct} distinct; they count "
            "towards no indicator. The most frequent:"
        )
        for c in self.unused_codes:
            out.append(f"  {c.table} {c.system}:{c.code}  {c.rows} rows")
        if self.other_systems:
            rows = ", ".join(f"{s} {n} rows" for s, n in sorted(self.other_systems.items()))
            out.append(f"code systems no list uses (not counted): {rows}")
        never = [cl.id for cl in self.codelists if cl.seen == 0]
        if never:
            out.append(
                f"what to do: no patient has a code of {', '.join(never)}. If the practice "
                "records these conditions or medicines, check that the extract includes them "
                "and that they are coded in SNOMED CT or dm+d; a code listed above as matching "
                "no list is not counted by any indicator."
            )
        return out


def _as_date(value: object) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value  # type: ignore[return-value]
    return dt.date.fromisoformat(str(value)[:10])


def _patients_per_list(conn: sa.Connection, catalogue: Catalogue) -> dict[int, int]:
    """For each codelist (by index), how many patients have a row (in either table) with one of
    its codes: one grouped statement joining the rows to a VALUES table of the codes."""
    pairs = sorted(
        (system, code, k) for k, cl in enumerate(catalogue.codelists) for system, code in cl.pairs()
    )
    if not pairs:
        return {}
    codes = (
        sa.values(
            sa.column("system", sa.String),
            sa.column("code", sa.String),
            sa.column("k", sa.Integer),
            name="list_codes",
            literal_binds=True,
        )
        .data(pairs)
        .cte("list_codes")
    )
    rows = sa.union_all(
        *(sa.select(t.c.patient_id, t.c.system, t.c.code) for t in (events, medications))
    ).subquery("coded")
    query = (
        sa.select(codes.c.k, sa.func.count(sa.distinct(rows.c.patient_id)))
        .select_from(rows.join(codes, rows.c.code == codes.c.code))
        .where(rows.c.system == codes.c.system)
        .group_by(codes.c.k)
    )
    return {int(k): int(n) for k, n in conn.execute(query)}


def check_source(engine: Engine, catalogue: Catalogue, today: dt.date) -> SourceCheck:
    """Summarise the canonical tables at ``engine`` against ``catalogue``'s codelists."""
    used: set[tuple[str, str]] = set()
    for cl in catalogue.codelists:
        used |= cl.pairs()
    clinical = sorted({system for system, _ in used})
    seen: Counter[tuple[str, str]] = Counter()
    unused: list[CodeCount] = []
    other: Counter[str] = Counter()
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
                if system not in clinical:
                    other[system] += n
                elif (system, code) not in used:
                    unused.append(CodeCount(table=name, system=system, code=code, rows=n))
            tables[name] = TableSummary(
                rows=rows,
                first_date=_as_date(first),
                last_date=_as_date(last),
                by_system=dict(by_system),
            )
        with_codes = _patients_per_list(conn, catalogue)
    coverage = []
    for k, cl in enumerate(catalogue.codelists):
        pairs = sorted(cl.pairs())
        unseen = [f"{s}:{c}" for s, c in pairs if (s, c) not in seen]
        coverage.append(
            CodelistCoverage(
                id=cl.id,
                cluster=cl.source.cluster,
                patients=with_codes.get(k, 0),
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
        clinical_systems=clinical,
        unused_codes=unused[:TOP_UNUSED],
        unused_distinct=len(unused),
        other_systems=dict(other),
        codelists=coverage,
    )
