"""A submission's whole-practice counts as one compact value: ``submissions.counts``.

The benchmark refresh needs, for every practice of a period, the whole-practice counts of every
indicator it sent, and nothing of the strata. Read from ``cells`` that is a period's 260,000
rows at national scale, with the strata every cell verdict covers (about 700 bytes a row); read
from here it is the period's 6,500 submissions, one value each, sealed once (a MAC over the
whole value, :meth:`aggregator.log.verdict.Sealer.seal_counts`), and decoded for a whole period
at once with NumPy (docs/benchmarks.md, "Benchmarks from a period's counts").

The layout (version 1)::

    b"FQC1" + the indicator ids, sorted, joined by "," + b"\\n"
            + one 16-byte record per indicator in that order:
              numerator, denominator, exclusions  (int32 little-endian; -1: no value)
              numerator, denominator, exclusions status codes (uint8, :data:`STATUSES`)
              one byte of padding (0)

Submissions carrying the same indicators share the header, so a period's values are grouped by
header and each group's records read as one array (:func:`records`). The ingest writes the value
beside the ``cells`` rows it comes from (:func:`encode` of :func:`aggregator.db.cells.cell_rows`);
``cells`` stays what the strata are read from and what ``log verify`` compares.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

MAGIC = b"FQC1"
#: A count's status as its code (index); an ``unverified`` practice is never encoded here.
STATUSES = ("exact", "rounded", "suppressed", "zero")
CODE = {s: i for i, s in enumerate(STATUSES)}
SUPPRESSED, ROUNDED = CODE["suppressed"], CODE["rounded"]
RECORD = np.dtype(
    [
        ("numerator", "<i4"),
        ("denominator", "<i4"),
        ("exclusions", "<i4"),
        ("numerator_status", "u1"),
        ("denominator_status", "u1"),
        ("exclusions_status", "u1"),
        ("pad", "u1"),
    ]
)
assert RECORD.itemsize == 16

#: One total as the ingest has it: (indicator, denominator, denominator_status, numerator,
#: numerator_status, exclusions, exclusions_status), the order of ``cells``' columns.
Total = tuple[str, int | None, str, int | None, str, int | None, str]


class CountsError(ValueError):
    """A stored counts value that is not in this layout."""


def _value(v: int | None) -> int:
    if v is None:
        return -1
    if not 0 <= v < 2**31:
        raise CountsError(f"count {v} does not fit the counts layout")
    return v


def encode(totals: Iterable[Total]) -> bytes:
    """The counts value of a submission's whole-practice totals (one per indicator)."""
    ordered = sorted(totals, key=lambda t: t[0])
    ids = [t[0] for t in ordered]
    if len(set(ids)) != len(ids) or any("," in i or "\n" in i for i in ids):
        raise CountsError("indicator ids must be distinct and hold no ',' or line break")
    records = np.zeros(len(ordered), dtype=RECORD)
    for i, (_, den, den_s, num, num_s, exc, exc_s) in enumerate(ordered):
        records[i] = (
            _value(num), _value(den), _value(exc), CODE[num_s], CODE[den_s], CODE[exc_s], 0
        )  # fmt: skip
    return MAGIC + ",".join(ids).encode() + b"\n" + records.tobytes()


def encode_rows(rows: Iterable[Sequence[object]]) -> bytes:
    """:func:`encode` of ``cells`` rows (:data:`aggregator.db.cells.COLUMNS` order: the
    submission id first, the strata last)."""
    return encode(tuple(r[1:8]) for r in rows)  # type: ignore[misc]


def split(value: bytes) -> tuple[bytes, memoryview]:
    """(header, records) of a counts value; raises :class:`CountsError` if it is not one."""
    end = value.find(b"\n")
    if not value.startswith(MAGIC) or end < 0:
        raise CountsError("not a counts value (FQC1)")
    body = memoryview(value)[end + 1 :]
    if len(body) % RECORD.itemsize or len(body) // RECORD.itemsize != len(
        indicators(value[: end + 1])
    ):
        raise CountsError("a counts value whose records do not match its indicators")
    return value[: end + 1], body


def indicators(header: bytes) -> tuple[str, ...]:
    """The indicator ids a header names, in record order."""
    text = header[len(MAGIC) : -1].decode()
    return tuple(text.split(",")) if text else ()


def records(bodies: Sequence[bytes | memoryview], width: int) -> np.ndarray:
    """The records of several values sharing one header, as an array (values x ``width``)."""
    if not bodies:
        return np.zeros((0, width), dtype=RECORD)
    return np.frombuffer(b"".join(bodies), dtype=RECORD).reshape(len(bodies), width)


def decode(value: bytes) -> dict[str, Total]:
    """One value as its totals by indicator (for a single practice's reads and the tests)."""
    header, body = split(value)
    ids = indicators(header)
    out: dict[str, Total] = {}
    for ind, r in zip(ids, records([body], len(ids))[0].tolist(), strict=True):
        num, den, exc, ns, ds, es, _ = r
        out[ind] = (
            ind, None if den < 0 else den, STATUSES[ds], None if num < 0 else num, STATUSES[ns],
            None if exc < 0 else exc, STATUSES[es],
        )  # fmt: skip
    return out
