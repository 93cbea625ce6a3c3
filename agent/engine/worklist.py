"""Worklists: the practice's own patients in an indicator's denominator but not its numerator,
for recall work inside the practice.

Each patient comes with what a clinician needs to act: for every element of the indicator's
numerator (:func:`targets_of`), the patient's last record of it on or before the period end,
with its date and, for a reading (BP, HbA1c), its value; the date the patient falls due
(:func:`due_date`): when the last record leaves (or left) the indicator's window, or "now" when
there is none; and why the patient is on the list (``why``: no record, last record too old, or
out of target). A reading inside the window but outside the target (a BP of 150/95) is on the
list although not yet due: ``why`` says "out of target", and its value shows by how much.

A worklist is patient-level, so it has exactly two destinations: the screen, or a local file the
user names (written 0600, CSV). This module imports nothing that signs, stores or sends (a test
checks its imports): there is no code path from a worklist to the outbox or a payload.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from agent.engine.dates import months_before
from agent.errors import AgentUserError
from agent.sources.schema import events, medications
from protocol.catalogue import All, Any_, Catalogue, HasCode, LatestCode, LatestValue, Rule

FIELDS = ("patient_id", "local_ref")
#: Patient ids per query (an IN list every database accepts).
CHUNK = 500


@dataclass(frozen=True)
class Target:
    """One element of a numerator: a codelist looked up in a table, within a window (months;
    None: any date), a reading compared with a value (``op`` and ``value``) or a code."""

    codelist: str
    table: str
    window: int | None
    op: str | None = None
    value: float | None = None

    @property
    def label(self) -> str:
        target = (
            f" {self.op} {self.value:g}" if self.op is not None and self.value is not None else ""
        )
        within = f" in {self.window} months" if self.window else ""
        return f"{self.codelist}{target}{within}"


def targets_of(rule: Rule) -> list[Target]:
    """The elements of a numerator rule a patient can be recalled for: its readings
    (LatestValue), codes and issues (HasCode, LatestCode), through All and Any; a Not, an
    age, a register or a score is not something a recall can change, and is left out."""
    out: list[Target] = []

    def walk(r: Rule) -> None:
        if isinstance(r, All | Any_):
            for child in r.of:
                walk(child)
        elif isinstance(r, LatestValue):
            out.append(
                Target(r.codelist, "events", r.window.months if r.window else None, r.op, r.value)
            )
        elif isinstance(r, HasCode):
            out.append(Target(r.codelist, r.table, r.window.months if r.window else None))
        elif isinstance(r, LatestCode):
            out.append(Target(r.family, "events", r.window.months if r.window else None))

    walk(rule)
    unique: dict[tuple[str, str], Target] = {}
    for t in out:
        unique.setdefault((t.codelist, t.table), t)
    return list(unique.values())


@dataclass(frozen=True)
class Last:
    """A patient's last record of a target on or before the period end (None: no record)."""

    date: dt.date | None
    value: float | None = None


def _add_months(day: dt.date, months: int) -> dt.date:
    return months_before(day, -months)


def falls_due(target: Target, last: Last) -> dt.date | None:
    """The day the last record stops counting (its date plus the window): the patient falls due
    then. None: no record, so due now; a target without a window never falls due (date.max)."""
    if last.date is None:
        return None
    if target.window is None:
        return dt.date.max
    return _add_months(last.date, target.window)


def due_date(rule: Rule, lasts: dict[tuple[str, str], Last]) -> dt.date | None:
    """When the patient falls due for the whole numerator: every element of an All must hold
    (the earliest of its dates), one of an Any is enough (the latest). None: due now (no
    record). Elements a recall cannot change (see :func:`targets_of`) do not count."""
    missing = object()

    def walk(r: Rule) -> object:
        if isinstance(r, LatestValue | HasCode | LatestCode):
            t = targets_of(r)[0]
            return falls_due(t, lasts.get((t.codelist, t.table), Last(None)))
        if isinstance(r, All | Any_):
            got = [d for d in (walk(c) for c in r.of) if d is not missing]
            if not got:
                return missing
            if isinstance(r, All):
                return None if None in got else min(got)  # type: ignore[type-var]
            dated = [d for d in got if d is not None]
            return max(dated) if dated else None  # type: ignore[type-var]
        return missing

    found = walk(rule)
    return None if found is missing else found  # type: ignore[return-value]


def last_records(
    engine: sa.Engine,
    catalogue: Catalogue,
    targets: Sequence[Target],
    period_end: dt.date,
    patient_ids: Iterable[int],
) -> dict[int, dict[tuple[str, str], Last]]:
    """Each patient's last record of each target on or before ``period_end``: the latest date;
    for a reading, of the rows with a value, and on a date with several, the lowest value (the
    catalogue's rule for the latest value)."""
    ids = list(patient_ids)
    out: dict[int, dict[tuple[str, str], Last]] = {p: {} for p in ids}
    with engine.connect() as conn:
        for t in targets:
            table = events if t.table == "events" else medications
            pairs = catalogue.codelist(t.codelist).pairs()
            codes = sorted({code for _, code in pairs})
            reading = t.op is not None
            cols = [table.c.patient_id, table.c.date, table.c.system, table.c.code]
            if reading:
                cols.append(table.c.value)
            for i in range(0, len(ids), CHUNK):
                q = sa.select(*cols).where(
                    table.c.patient_id.in_(ids[i : i + CHUNK]),
                    table.c.code.in_(codes),
                    table.c.date <= period_end,
                )
                if reading:
                    q = q.where(table.c.value.is_not(None))
                for row in conn.execute(q):
                    if (row.system, row.code) not in pairs:
                        continue
                    value = float(row.value) if reading else None
                    have = out[int(row.patient_id)].get((t.codelist, t.table))
                    if (
                        have is None
                        or row.date > have.date
                        or (reading and row.date == have.date and value < have.value)  # type: ignore[operator]
                    ):
                        out[int(row.patient_id)][(t.codelist, t.table)] = Last(row.date, value)
    return out


@dataclass(frozen=True)
class Worklist:
    indicator: str
    title: str
    period_end: dt.date
    patients: tuple[tuple[int, str | None], ...]
    targets: tuple[Target, ...] = ()
    #: per patient id: each target's last record (targets' order), and the due date
    detail: dict[int, tuple[tuple[Last, ...], dt.date | None]] | None = None

    def header(self) -> list[str]:
        cols = list(FIELDS)
        for t in self.targets:
            if t.op is not None:
                cols.append(f"last_{t.codelist}")
            cols.append(f"last_{t.codelist}_date")
        if self.detail is not None:
            cols += ["due", "why"]
        return cols

    def rows(self) -> list[list[str]]:
        """Each patient as the CSV and the screen show it (a date as ISO 8601; ``due`` is
        "now" where there is no record, and blank where nothing falls due; ``why`` is
        :func:`_why`'s reason)."""
        out = []
        for patient_id, local_ref in self.patients:
            row = [str(patient_id), local_ref or ""]
            if self.detail is not None:
                lasts, due = self.detail.get(patient_id, ((), None))
                for t, last in zip(self.targets, lasts, strict=True):
                    if t.op is not None:
                        row.append("" if last.value is None else f"{last.value:g}")
                    row.append(last.date.isoformat() if last.date else "")
                row += [_due_text(due), _why(due, self.period_end)]
            out.append(row)
        return out

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.header())
        writer.writerows(self.rows())
        return buf.getvalue()

    def to_json(self) -> dict[str, object]:
        return {
            "indicator": self.indicator,
            "title": self.title,
            "period_end": self.period_end.isoformat(),
            "local_only": "this list never leaves the practice",
            "targets": [t.label for t in self.targets],
            "patients": [
                {**dict(zip(self.header(), row, strict=True)), "patient_id": p, "local_ref": r}
                for (p, r), row in zip(self.patients, self.rows(), strict=True)
            ],
        }


def _due_text(due: dt.date | None) -> str:
    if due is None:
        return "now"
    return "" if due == dt.date.max else due.isoformat()


#: Why a patient is on the list, in the ``why`` column.
NO_RECORD = "no record"
LAPSED = "last record too old"
OUT_OF_TARGET = "out of target"


def _why(due: dt.date | None, period_end: dt.date) -> str:
    """Why a patient in the denominator is not in the numerator: no record to count, the last
    record left the window (its due date has passed), or a record that still counts and does
    not meet the target (a BP of 150/95 in the window: act now, although ``due`` is later)."""
    if due is None:
        return NO_RECORD
    return LAPSED if due <= period_end else OUT_OF_TARGET


def build_worklist(
    engine: sa.Engine,
    catalogue: Catalogue,
    indicator_id: str,
    period_end: dt.date,
    patients: Sequence[tuple[int, str | None]],
) -> Worklist:
    """The worklist of ``patients`` (the engine's denominator-not-numerator list) with each
    patient's last records and due date, read from the practice's own database."""
    ind = catalogue.indicator(indicator_id)
    targets = tuple(targets_of(ind.numerator))
    records = last_records(engine, catalogue, targets, period_end, [p for p, _ in patients])
    detail = {}
    for p, _ in patients:
        lasts = records.get(p, {})
        detail[p] = (
            tuple(lasts.get((t.codelist, t.table), Last(None)) for t in targets),
            due_date(ind.numerator, lasts),
        )
    return Worklist(ind.id, ind.title, period_end, tuple(patients), targets, detail)


def write_worklist(worklist: Worklist, path: Path, *, forbidden_dir: Path | None = None) -> None:
    """Write the worklist as CSV to ``path`` (mode 0600, refusing to overwrite)."""
    target = path.expanduser().resolve()
    if forbidden_dir is not None and target.is_relative_to(forbidden_dir.resolve()):
        raise AgentUserError(
            f"--out {path}: worklists are not written inside the agent home {forbidden_dir}"
        )
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AgentUserError(f"--out {path}: the file exists; refusing to overwrite it") from None
    except OSError as exc:
        raise AgentUserError(f"--out {path}: cannot write: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(worklist.to_csv())
