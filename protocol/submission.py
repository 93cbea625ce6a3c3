"""The messages agents and the aggregator exchange (protocol v1 payloads).

Every model is frozen and forbids unknown fields. There is no free-text field in anything a
practice sends: identifiers are patterned, counts are bounded integers, reasons are enums, so the
schema itself cannot carry a patient-level payload.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic.dataclasses import dataclass

from .canonical import _parse_sorted, model_bytes, parse_canonical, register_fast_parser, sha256_hex
from .catalogue import IndicatorId

PROTOCOL_MAJOR = 1

MAX_COUNT = 10_000_000
MAX_CELLS = 6000

OdsCode = Annotated[str, Field(pattern=r"^[A-Z][0-9]{5}$")]
Audience = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.\-]{0,62}$")]
Kid = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{43}$")]
Uuid = Annotated[
    str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]
Nonce = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{22}$")]  # 16 random bytes, base64url
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Version = Annotated[str, Field(pattern=r"^[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}$")]
EpochSeconds = Annotated[int, Field(ge=0, lt=2**53)]
Seq = Annotated[int, Field(ge=1, lt=2**53)]
AgeBandLabel = Annotated[str, Field(pattern=r"^(all|[0-9]{1,3}(-[0-9]{1,3}|\+))$")]
SexStratum = Literal["all", "F", "M", "U"]
DisclosureStatus = Literal["exact", "rounded", "suppressed", "zero"]
CorrectionReason = Literal["data_correction", "late_data", "codelist_fix", "software_fix"]
#: How the network may show a practice's values, chosen by the practice: ``named`` (to the
#: network lead and admin, as before; the default, and what an absent field means),
#: ``pseudonymised`` (to everyone, the lead and admin included), ``totals_only`` (only inside
#: network totals: no per-practice value shown to anyone but the practice itself).
Visibility = Literal["named", "pseudonymised", "totals_only"]
VISIBILITIES: tuple[str, ...] = get_args(Visibility)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


# Counts, strata and cells are slotted dataclasses, not models: a submission holds hundreds of
# cells (a benchmark submission 360, so 1,800 objects), and pydantic builds these some 40% faster,
# with no per-object dict. Their rules (status against value, numerator against denominator)
# are checked by the Submission that holds them, in one pass over its cells, where an error can
# name the cell (see Submission._rules); a count on its own is checked by check_count.
_CELL_CONFIG = ConfigDict(extra="forbid", strict=False)


@dataclass(frozen=True, slots=True, config=_CELL_CONFIG)
class Count:
    """A released count and its disclosure status.

    ``zero``: a true zero (value 0). ``exact``: the true count (value >= 1). ``rounded``: the
    true count rounded under the policy. ``suppressed``: withheld, no value: never a zero,
    except a stratum's exclusions under a policy with ``exclusions_by_stratum=False``, which is
    suppressed whatever it holds, and a numerator of a small population (a whole-practice
    denominator of 1..T), suppressed zeros included (protocol.disclosure.count_range reads
    either as 0 or more).
    """

    status: DisclosureStatus
    value: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = None


def count_fault(count: Count) -> str | None:
    """What is wrong with ``count``'s status against its value, or ``None``."""
    status, value = count.status, count.value
    if status == "suppressed":
        return None if value is None else "a suppressed count carries no value"
    if value is None:
        return f"{'an' if status == 'exact' else 'a'} {status} count needs a value"
    if status == "zero":
        return None if value == 0 else "a zero count has value 0"
    if status == "exact" and value == 0:
        return "an exact 0 is status 'zero'"
    return None


def check_count(count: Count) -> Count:
    """``count`` if its status fits its value; ``ValueError`` naming the rule if not."""
    fault = count_fault(count)
    if fault is not None:
        raise ValueError(fault)
    return count


@dataclass(frozen=True, slots=True, config=_CELL_CONFIG)
class Stratum:
    age_band: AgeBandLabel = "all"
    sex: SexStratum = "all"

    @property
    def is_total(self) -> bool:
        return self.age_band == "all" and self.sex == "all"


@dataclass(frozen=True, slots=True, config=_CELL_CONFIG)
class Cell:
    """Counts for one indicator in one stratum."""

    denominator: Count
    exclusions: Count
    indicator: IndicatorId
    numerator: Count
    stratum: Stratum

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.indicator, self.stratum.age_band, self.stratum.sex)


def cell_fault(cell: Cell) -> str | None:
    """What is wrong with ``cell`` (a count's status against its value, or an exact numerator
    above an exact denominator), naming the count; or ``None``."""
    for kind in ("denominator", "numerator", "exclusions"):
        fault = count_fault(getattr(cell, kind))
        if fault is not None:
            return f"{kind}: {fault}"
    n, d = cell.numerator, cell.denominator
    if (
        n.value is not None
        and d.value is not None
        and n.status in ("exact", "zero")
        and d.status in ("exact", "zero")
        and n.value > d.value
    ):
        return f"numerator {n.value} > denominator {d.value}"
    return None


def _cells_fault(cells: tuple[Cell, ...]) -> str | None:
    """The first fault of ``cells`` (order, duplicates, and each cell's :func:`cell_fault`).

    One pass over a submission's cells, with the common case inline: a cell whose counts are
    each suppressed without a value, or a positive exact / rounded value, or a zero 0, and
    whose numerator is not above an exact denominator, needs no further look."""
    previous: tuple[str, str, str] | None = None
    for i, cell in enumerate(cells):
        stratum = cell.stratum
        key = (cell.indicator, stratum.age_band, stratum.sex)
        if previous is not None and key <= previous:
            if key == previous:
                return "duplicate cell"
            return "cells must be sorted by (indicator, age_band, sex)"
        previous = key
        for count in (cell.denominator, cell.numerator, cell.exclusions):
            status, value = count.status, count.value
            if value is None:
                if status != "suppressed":
                    break
            elif value == 0:
                if status != "zero" and status != "rounded":
                    break
            elif status == "suppressed" or status == "zero":
                break
        else:
            n, d = cell.numerator, cell.denominator
            if n.value is None or d.value is None or n.value <= d.value:
                continue
        fault = cell_fault(cell)
        if fault is not None:
            return f"cells[{i}] {key[0]} {key[1]}/{key[2]}: {fault}"
    return None


class Period(_Frozen):
    """A reporting period: in protocol v1 one calendar month, first to last day.

    The model checks only that it does not end before it starts, so a submission already
    signed and logged with any other period still parses (the log, its audit and the IG
    officer's checks read history as it was signed). What a sender may send now is the
    aggregator's check: it refuses a period that is not :attr:`is_calendar_month`
    (``period-not-calendar-month``), and an agent builds periods with :meth:`month` only."""

    end: dt.date
    start: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end < self.start:
            raise ValueError("period end before start")
        return self

    @classmethod
    def month(cls, year: int, month: int) -> Period:
        start = dt.date(year, month, 1)
        return cls(start=start, end=start.replace(day=calendar.monthrange(year, month)[1]))

    @property
    def is_calendar_month(self) -> bool:
        """The period runs from the first to the last day of one month."""
        start = self.start
        last = calendar.monthrange(start.year, start.month)[1]
        return start.day == 1 and self.end == start.replace(day=last)

    @property
    def label(self) -> str:
        return f"{self.start.year:04d}-{self.start.month:02d}"


class CatalogueRef(_Frozen):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._\-]{0,63}$")]
    sha256: Sha256Hex
    version: int = Field(ge=1, le=1_000_000)


class CodelistRef(_Frozen):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
    sha256: Sha256Hex


class IndicatorProvenance(_Frozen):
    codelists: tuple[CodelistRef, ...] = Field(max_length=100)
    id: IndicatorId
    version: int = Field(ge=1, le=10000)


class Provenance(_Frozen):
    agent_version: Version
    disclosure_policy: Sha256Hex  # sha256 of the (possibly tightened) policy applied
    extract_time: EpochSeconds
    indicators: tuple[IndicatorProvenance, ...] = Field(max_length=200)
    source: Literal["sqlite", "duckdb", "postgresql", "csv", "fhir", "omop"]


class Submission(_Frozen):
    """``application/vnd.fedqi.submission.v1+json``"""

    # Fields in sorted order, here and in every model a submission holds: the canonical order,
    # which lets protocol.canonical parse a submission in one pass (tests check the order).
    aud: Audience
    catalogue: CatalogueRef
    cells: tuple[Cell, ...] = Field(min_length=1, max_length=MAX_CELLS)
    iat: EpochSeconds
    kid: Kid
    nonce: Nonce
    period: Period
    practice: OdsCode
    provenance: Provenance
    reason: CorrectionReason | None = None
    seq: Seq
    submission_id: Uuid
    supersedes: Uuid | None = None
    v: Literal[1] = 1
    # Absent (None) means "named": submissions from before this field keep their bytes.
    visibility: Visibility | None = None

    @model_validator(mode="after")
    def _rules(self) -> Submission:
        if (self.supersedes is None) != (self.reason is None):
            raise ValueError("supersedes and reason go together")
        if self.supersedes == self.submission_id:
            raise ValueError("a submission cannot supersede itself")
        fault = _cells_fault(self.cells)
        if fault is not None:
            raise ValueError(fault)
        return self

    def to_bytes(self) -> bytes:
        return model_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Submission:
        return parse_canonical(data, cls)


# --- the cells of a submission, scanned ------------------------------------------------------
#
# A submission is almost all cells (a benchmark one: 360 cells, ~98 of its ~100 KB), and the
# aggregator parses every one it receives: validating them as models and dumping them again to
# compare was about half of its CPU per submission. In canonical form a cell has exactly one
# spelling: keys in a fixed order, no whitespace, no escapes (every string is patterned ASCII), a
# count's value left out when there is none, integers without sign or leading zeros. So one
# regular expression matches exactly the canonical text of a valid cell, built from the same
# patterns and literals as the models; and the text around the cells (the submission's own
# fields) is parsed by the general path with a single cell in place of the list.
# tests/protocol/test_parse_fastpath.py checks that this accepts exactly what the strict path
# accepts, as the very same object.


def _pattern(annotated: Any) -> bytes:
    """The regular expression of a patterned string type, without its anchors."""
    (field,) = annotated.__metadata__
    pattern: str = field.metadata[0].pattern
    assert pattern.startswith("^") and pattern.endswith("$")
    return pattern[1:-1].encode()


def _choice(literal: Any) -> bytes:
    return b"|".join(re.escape(x.encode()) for x in get_args(literal))


_NOT_CAPTURING = re.compile(rb"\((?!\?)")

# One group per count, per indicator and per stratum: their text is the key of the caches below.
_COUNT_RE = (
    rb'\{"status":"(' + _choice(DisclosureStatus) + rb')"(?:,"value":(0|[1-9][0-9]{0,7}))?\}'
)
_STRATUM_RE = (
    rb'\{"age_band":"('
    + _NOT_CAPTURING.sub(b"(?:", _pattern(AgeBandLabel))
    + rb')","sex":"('
    + _choice(SexStratum)
    + rb')"\}'
)
_COUNT = re.compile(_COUNT_RE)
_STRATUM = re.compile(_STRATUM_RE)


def _whole(pattern: bytes) -> bytes:
    """``pattern`` as one group, its own groups made non-capturing."""
    return b"(" + _NOT_CAPTURING.sub(b"(?:", pattern) + b")"


_CELL_RE = re.compile(
    rb'\{"denominator":'
    + _whole(_COUNT_RE)
    + rb',"exclusions":'
    + _whole(_COUNT_RE)
    + rb',"indicator":'
    + _whole(rb'"' + _pattern(IndicatorId) + rb'"')
    + rb',"numerator":'
    + _whole(_COUNT_RE)
    + rb',"stratum":'
    + _whole(_STRATUM_RE)
    + rb"\}"
)
_STEP = 6  # what re.split gives per cell: the text before it, then its 5 groups
assert _CELL_RE.groups == _STEP - 1
_CELLS_KEY = b',"cells":['
_CELL_JSON = TypeAdapter(Cell)
_AFTER_CELLS = b'],"iat":'

# Counts and strata repeat across cells and submissions, and they are immutable: one object
# each per spelling, made (and checked against its bound) the first time. Cleared when large.
_COUNTS: dict[bytes, Count] = {}
_STRATA: dict[bytes, Stratum] = {}
_INDICATORS: dict[bytes, str] = {}
_CACHE_LIMIT = 100_000
_new = object.__new__
_set = object.__setattr__
# The slots of a cell, set directly: the object is made without running validation, which the
# pattern has done.
_SLOTS = tuple(
    Cell.__dict__[name].__set__
    for name in ("denominator", "exclusions", "indicator", "numerator", "stratum")
)


def _cached(cache: dict[bytes, Any], text: bytes, value: Any) -> Any:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[text] = value
    return value


def _count(text: bytes) -> Count | None:
    match = _COUNT.fullmatch(text)
    assert match is not None
    status, value = match.groups()
    number = None if value is None else int(value)
    if number is not None and number > MAX_COUNT:
        return None
    count = _new(Count)
    _set(count, "status", status.decode())
    _set(count, "value", number)
    return _cached(_COUNTS, text, count)  # type: ignore[no-any-return]


def _stratum(text: bytes) -> Stratum:
    match = _STRATUM.fullmatch(text)
    assert match is not None
    stratum = _new(Stratum)
    _set(stratum, "age_band", match[1].decode())
    _set(stratum, "sex", match[2].decode())
    return _cached(_STRATA, text, stratum)  # type: ignore[no-any-return]


def _scan_cells(array: bytes) -> tuple[Cell, ...] | None:
    """The cells of ``array`` (the text ``[...]`` of a submission's cells) when it is a list of
    canonical valid cells, else ``None``."""
    parts = _CELL_RE.split(array)
    # split leaves the text between matches at every sixth place: "[", "," ..., "]" exactly
    # when the matches tile the array
    n = len(parts) // _STEP
    if not 1 <= n <= MAX_CELLS or parts[::_STEP] != [b"["] + [b","] * (n - 1) + [b"]"]:
        return None
    counts, strata, indicators = _COUNTS.get, _STRATA.get, _INDICATORS.get
    set_d, set_e, set_i, set_n, set_s = _SLOTS
    out = []
    for d_text, e_text, i_text, n_text, s_text in zip(
        parts[1::_STEP],
        parts[2::_STEP],
        parts[3::_STEP],
        parts[4::_STEP],
        parts[5::_STEP],
        strict=True,
    ):
        d = counts(d_text) or _count(d_text)
        e = counts(e_text) or _count(e_text)
        num = counts(n_text) or _count(n_text)
        if d is None or e is None or num is None:
            return None  # a value above MAX_COUNT
        cell = _new(Cell)
        set_d(cell, d)
        set_e(cell, e)
        set_i(cell, indicators(i_text) or _cached(_INDICATORS, i_text, i_text[1:-1].decode()))
        set_n(cell, num)
        set_s(cell, strata(s_text) or _stratum(s_text))
        out.append(cell)
    return tuple(out)


def _parse_submission(data: bytes) -> Submission | None:
    """``data`` as a Submission when it is the canonical form of a valid one whose cells the
    scanner reads (see above); ``None`` sends it down the general path."""
    start = data.find(_CELLS_KEY)
    if start < 0:
        return None
    start += len(_CELLS_KEY) - 1
    end = data.find(_AFTER_CELLS, start)
    if end < 0:
        return None
    cells = _scan_cells(data[start : end + 1])
    if cells is None:
        return None
    one = _CELL_JSON.dump_json(cells[0], exclude_none=True)
    head = _parse_sorted(data[:start] + b"[" + one + data[end:], Submission)
    if head is None or _cells_fault(cells) is not None:
        return None
    return head.model_copy(update={"cells": cells})


register_fast_parser(Submission, _parse_submission)


class Jwk(_Frozen):
    """An Ed25519 public key as an RFC 8037 OKP JWK."""

    kty: Literal["OKP"] = "OKP"
    crv: Literal["Ed25519"] = "Ed25519"
    x: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{43}$")]


class Enrol(_Frozen):
    """``application/vnd.fedqi.enrol.v1+json``: signed by the new key (proof of possession)."""

    v: Literal[1] = 1
    aud: Audience
    practice: OdsCode
    token: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{22,64}$")]
    jwk: Jwk
    agent_version: Version
    iat: EpochSeconds
    nonce: Nonce

    def to_bytes(self) -> bytes:
        return model_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Enrol:
        return parse_canonical(data, cls)


class Rotate(_Frozen):
    """``application/vnd.fedqi.rotate.v1+json``: signed by both the old and the new key."""

    v: Literal[1] = 1
    aud: Audience
    practice: OdsCode
    old_kid: Kid
    new_jwk: Jwk
    seq: Seq
    iat: EpochSeconds
    nonce: Nonce

    def to_bytes(self) -> bytes:
        return model_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Rotate:
        return parse_canonical(data, cls)


class Receipt(_Frozen):
    """``application/vnd.fedqi.receipt.v1+json``: the aggregator's signed answer to an accepted
    message: where its log leaf sits, the proof it is in the tree, and the checkpoint."""

    v: Literal[1] = 1
    aud: Audience
    message_type: Literal["submission", "enrol", "rotate"]
    submission_id: Uuid | None = None
    envelope_sha256: Sha256Hex
    status: Literal["accepted"] = "accepted"
    leaf_index: int = Field(ge=0, lt=2**53)
    leaf_hash: Sha256Hex
    tree_size: int = Field(ge=1, lt=2**53)
    inclusion_proof: tuple[Sha256Hex, ...] = Field(max_length=64)
    checkpoint: Annotated[str, Field(min_length=1, max_length=4000)]
    iat: EpochSeconds

    def to_bytes(self) -> bytes:
        return model_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Receipt:
        return parse_canonical(data, cls)


def envelope_sha256(envelope_bytes: bytes) -> str:
    return sha256_hex(envelope_bytes)
