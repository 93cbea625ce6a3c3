"""A submission's cells as stored: one ``cells`` row per indicator.

The whole-practice cell (age band ``all``, sex ``all``), which is what benchmarks read, goes in
the row's columns. Every other stratum of the indicator goes in the row's ``strata`` text, a
compact JSON array with one array per stratum, in the submission's order::

    [[age_band, sex, denominator, denominator_status, numerator, numerator_status,
      exclusions, exclusions_status], ...]

with ``null`` for a suppressed count's value. Nothing is lost: :func:`protocol_cells` gives back
exactly the protocol cells a submission sent (tests/aggregator/test_cells_storage.py), and the
exact envelope bytes are stored beside them.

Why not a row per stratum: a 40-indicator submission with 9 strata each would write 360 rows,
and on PostgreSQL the rows' primary-key and foreign-key checks were most of the database's CPU
per submission (docs/benchmarks.md, "Aggregator ingestion").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.submission import Cell as ProtocolCell
from protocol.submission import Count, Stratum

TOTAL = ("all", "all")

#: The ``cells`` columns in the order :func:`cell_rows` gives them.
COLUMNS = (
    "submission_id",
    "indicator",
    "denominator",
    "denominator_status",
    "numerator",
    "numerator_status",
    "exclusions",
    "exclusions_status",
    "strata",
)


@dataclass(frozen=True)
class StoredCell:
    """One stored cell (the total or a stratum) of one indicator."""

    indicator: str
    age_band: str
    sex: str
    denominator: int | None
    denominator_status: str
    numerator: int | None
    numerator_status: str
    exclusions: int | None
    exclusions_status: str

    @property
    def is_total(self) -> bool:
        return (self.age_band, self.sex) == TOTAL


def cell_rows(
    submission_id: str, cells: Sequence[ProtocolCell]
) -> list[tuple[str | int | None, ...]]:
    """The ``cells`` rows (in :data:`COLUMNS` order) of a submission's protocol cells.

    Raises ``ValueError`` for an indicator without its whole-practice cell (the disclosure
    check refuses such a submission before it gets here)."""
    out: list[tuple[str | int | None, ...]] = []
    strata: list[str] = []
    total: ProtocolCell | None = None
    current: str | None = None

    def close() -> None:
        if total is None:
            raise ValueError(f"indicator {current}: no whole-practice cell ('all', 'all')")
        d, n, e = total.denominator, total.numerator, total.exclusions
        out.append(
            (
                submission_id,
                current,
                d.value,
                d.status,
                n.value,
                n.status,
                e.value,
                e.status,
                "[" + ",".join(strata) + "]",
            )
        )

    for c in cells:
        if c.indicator != current:
            if current is not None:
                close()
            current, total, strata = c.indicator, None, []
        s = c.stratum
        if s.age_band == "all" and s.sex == "all":
            total = c
            continue
        d, n, e = c.denominator, c.numerator, c.exclusions
        # The compact JSON of [age_band, sex, d, d status, n, n status, e, e status], written
        # out directly (twice as fast as the encoder for a submission's hundreds of strata):
        # the labels and statuses are patterned / enumerated by the protocol models, so they
        # never need escaping (tests/aggregator/test_cells_storage.py compares with json).
        dv, nv, ev = d.value, n.value, e.value
        strata.append(
            f'["{s.age_band}","{s.sex}",{"null" if dv is None else dv},"{d.status}",'
            f'{"null" if nv is None else nv},"{n.status}",{"null" if ev is None else ev},'
            f'"{e.status}"]'
        )
    if current is not None:
        close()
    return out


def stored_cells(row: Any) -> list[StoredCell]:
    """The cells of one stored ``cells`` row (an ORM row or a result row with its columns):
    the whole-practice cell first, then the strata in stored order."""
    total = StoredCell(
        row.indicator,
        *TOTAL,
        row.denominator,
        row.denominator_status,
        row.numerator,
        row.numerator_status,
        row.exclusions,
        row.exclusions_status,
    )
    return [total, *(StoredCell(row.indicator, *s) for s in json.loads(row.strata))]


def protocol_cells(rows: Iterable[Any]) -> tuple[ProtocolCell, ...]:
    """Stored ``cells`` rows of one submission back as its protocol cells, in protocol order."""
    out = [
        ProtocolCell(
            indicator=c.indicator,
            stratum=Stratum(age_band=c.age_band, sex=c.sex),  # type: ignore[arg-type]
            denominator=Count(status=c.denominator_status, value=c.denominator),  # type: ignore[arg-type]
            numerator=Count(status=c.numerator_status, value=c.numerator),  # type: ignore[arg-type]
            exclusions=Count(status=c.exclusions_status, value=c.exclusions),  # type: ignore[arg-type]
        )
        for row in rows
        for c in stored_cells(row)
    ]
    out.sort(key=lambda c: c.key)
    return tuple(out)
