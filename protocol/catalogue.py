"""The indicator catalogue: indicators as data, not code.

A catalogue is a versioned list of indicators, the codelists they use, the age bands cells are
reported by, and the network's disclosure policy. The network signs it (payloadType
``application/vnd.fedqi.catalogue.v1+json``); agents compile it to SQL.

Semantics shared by every engine (the agent's SQL compiler and its reference evaluator):

* **Period end** ``E`` is the last day of the reporting period. Rows dated after ``E`` are ignored
  by every rule.
* **Base population**: patients registered on ``E`` and alive on ``E``:
  ``birth_date <= E`` and ``registration_start <= E`` and (``registration_end`` is null or
  ``registration_end > E``) and (``death_date`` is null or ``death_date > E``). A registration
  end date or death date is the first day the patient is no longer registered.
* **Window** ``Window(months=N)``: ``E - N months < date <= E`` (the start bound exclusive, the end
  inclusive). ``E - N months`` keeps the day of month, clipped to the month's last day
  (31 March - 1 month = 28/29 February). No window means "any date on or before ``E``".
* **Age** is completed years on ``E`` (a 29 February birthday is reached on 1 March in
  non-leap years).
* **Latest value**: of the rows with a code in the codelist and a numeric value in the window, the
  one with the latest date decides; several on that date: the lowest value decides (the
  convention clinical systems use for same-day blood pressure readings).
* **Latest code**: the latest row of the family codelist in the window; several on that date:
  true if any of them has a code in the target codelist.
* **On register**: the latest row of the register codelist on or before ``E`` exists and no row of
  the resolved codelist is dated on or after it (a same-day resolution resolves).
* **First code**: the earliest row of the codelist on or before ``E`` falls in the window.
* **Score**: the sum of the weights of the terms whose rule holds on ``E``, compared with the
  threshold (each term is a rule of its own, evaluated as everywhere else).
* **Counts**: ``denominator`` = base and population and not excluded; ``numerator`` = denominator
  and numerator rule; ``exclusions`` = base and population and not numerator and exclusion rule.
  Achievers are selected first, so an exclusion never removes a patient who meets the target
  (the QOF rule order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from .canonical import model_bytes, parse_canonical

Sex = Literal["F", "M", "U"]
CodeSystem = Literal["snomedct", "dmd", "loinc", "rxnorm", "cvx", "icd10", "omop"]
TableName = Literal["events", "medications"]
Comparison = Literal["<", "<=", ">", ">=", "=="]
StratumDimension = Literal["age_band", "sex"]

IndicatorId = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")]
CodelistId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(min_length=1, max_length=2000)]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9.\-]{1,32}$")]
Sha1Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- codelists ---------------------------------------------------------------------------------


class CodeEntry(_Frozen):
    """One code of a codelist (the term as published; some published lists carry none)."""

    system: CodeSystem
    code: Code
    term: ShortText | None = None


class CodelistSource(_Frozen):
    """Where a codelist was published, so that anyone can fetch the same file and compare.

    ``file_sha1`` is the publisher's content hash of the file (OpenCodelists records it as
    ``sha`` in a project's ``codelists.json``: SHA-1 of the file's lines joined by ``\\n``).
    ``derivation`` says which published codes were left out, and why, when the list is not the
    published file unchanged.
    """

    cluster: ShortText
    publisher_id: ShortText
    version: Annotated[str, Field(min_length=1, max_length=64)]
    file: ShortText
    file_sha1: Sha1Hex
    repository: ShortText
    commit: Annotated[str, Field(pattern=r"^[0-9a-f]{7,40}$")]
    rows: int = Field(ge=1, le=20000)
    derivation: LongText | None = None


def codes_sha256(pairs: Iterable[tuple[str, str]]) -> str:
    """SHA-256 of a set of (system, code) pairs: ``system|code\\n`` per pair, sorted. Terms do
    not count: two lists with the same codes select the same rows."""
    text = "".join(f"{system}|{code}\n" for system, code in sorted(set(pairs)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Codelist(_Frozen):
    """A published codelist carried whole in the catalogue, with its provenance and the hash of
    its codes. The hash is checked whenever a catalogue is read: a catalogue whose codes do not
    match a codelist's ``codes_sha256`` is refused, naming the codelist."""

    id: CodelistId
    title: ShortText
    source: CodelistSource
    codes_sha256: Sha256Hex
    codes: tuple[CodeEntry, ...] = Field(min_length=1, max_length=20000)

    @model_validator(mode="after")
    def _unique_codes_and_hash(self) -> Codelist:
        keys = [(c.system, c.code) for c in self.codes]
        if len(set(keys)) != len(keys):
            raise ValueError(f"codelist {self.id}: duplicate codes")
        actual = codes_sha256(keys)
        if actual != self.codes_sha256:
            raise ValueError(
                f"codelist {self.id}: its {len(keys)} codes hash to {actual[:12]}..., not the "
                f"codes_sha256 {self.codes_sha256[:12]}... it declares (codes changed after the "
                "catalogue was built)"
            )
        return self

    @classmethod
    def of(
        cls, id: str, title: str, codes: Iterable[CodeEntry], source: CodelistSource
    ) -> Codelist:
        """A codelist with its ``codes_sha256`` computed from ``codes``."""
        entries = tuple(codes)
        digest = codes_sha256((c.system, c.code) for c in entries)
        return cls(id=id, title=title, source=source, codes_sha256=digest, codes=entries)

    def sha256(self) -> str:
        """SHA-256 of the codelist's canonical bytes (recorded in every submission's provenance)."""
        return hashlib.sha256(model_bytes(self)).hexdigest()

    def pairs(self) -> frozenset[tuple[str, str]]:
        return frozenset((c.system, c.code) for c in self.codes)


# --- rules -------------------------------------------------------------------------------------


class Window(_Frozen):
    """``E - months < date <= E`` (see the module docstring)."""

    months: int = Field(ge=1, le=1200)


class All(_Frozen):
    kind: Literal["all"] = "all"
    of: tuple[Rule, ...] = Field(min_length=1, max_length=50)


class Any_(_Frozen):
    kind: Literal["any"] = "any"
    of: tuple[Rule, ...] = Field(min_length=1, max_length=50)


class Not(_Frozen):
    kind: Literal["not"] = "not"
    rule: Rule


class Age(_Frozen):
    """Age in completed years on the period end, within ``[min, max]`` (either bound optional)."""

    kind: Literal["age"] = "age"
    min: int | None = Field(default=None, ge=0, le=130)
    max: int | None = Field(default=None, ge=0, le=130)

    @model_validator(mode="after")
    def _bounds(self) -> Age:
        if self.min is None and self.max is None:
            raise ValueError("age rule needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("age rule: min > max")
        return self


class SexIs(_Frozen):
    kind: Literal["sex"] = "sex"
    values: tuple[Sex, ...] = Field(min_length=1, max_length=3)


class RegisteredFor(_Frozen):
    """Registered since at least ``months`` months before the period end
    (``registration_start <= E - months``)."""

    kind: Literal["registered_for"] = "registered_for"
    months: int = Field(ge=1, le=1200)


class HasCode(_Frozen):
    """At least one row of ``table`` with a code in ``codelist`` in the window."""

    kind: Literal["has_code"] = "has_code"
    codelist: CodelistId
    table: TableName = "events"
    window: Window | None = None


class OnRegister(_Frozen):
    """Latest register code on or before E, not resolved on or after its date."""

    kind: Literal["on_register"] = "on_register"
    codelist: CodelistId
    resolved: CodelistId | None = None


class LatestValue(_Frozen):
    """The latest numeric value of ``codelist`` in the window compares true against ``value``.
    No value in the window: false."""

    kind: Literal["latest_value"] = "latest_value"
    codelist: CodelistId
    window: Window | None = None
    op: Comparison
    value: float = Field(ge=-1e6, le=1e6)


class LatestCode(_Frozen):
    """The latest row of the ``family`` codelist in the window has a code in ``codelist``."""

    kind: Literal["latest_code"] = "latest_code"
    family: CodelistId
    codelist: CodelistId
    window: Window | None = None


class FirstCode(_Frozen):
    """The earliest row of ``codelist`` on or before E falls within the window
    (e.g. "diagnosed in the last 9 months")."""

    kind: Literal["first_code"] = "first_code"
    codelist: CodelistId
    window: Window


class ScoreTerm(_Frozen):
    """``weight`` points when ``rule`` holds."""

    weight: int = Field(ge=1, le=100)
    rule: Rule


class Score(_Frozen):
    """The sum of the weights of the terms whose rule holds, compared with ``value``: a clinical
    score computed from coded components (e.g. CHA2DS2-VASc 2 or more from heart failure,
    hypertension, age, diabetes, stroke, vascular disease and sex)."""

    kind: Literal["score"] = "score"
    terms: tuple[ScoreTerm, ...] = Field(min_length=1, max_length=50)
    op: Comparison
    value: int = Field(ge=0, le=5000)


Rule = Annotated[
    Union[  # noqa: UP007 (explicit Union keeps the discriminated rule list readable)
        All,
        Any_,
        Not,
        Age,
        SexIs,
        RegisteredFor,
        HasCode,
        OnRegister,
        LatestValue,
        LatestCode,
        FirstCode,
        Score,
    ],
    Field(discriminator="kind"),
]

All.model_rebuild()
Any_.model_rebuild()
Not.model_rebuild()
ScoreTerm.model_rebuild()
Score.model_rebuild()


def iter_rules(rule: Rule) -> Iterator[Rule]:
    """Every node of a rule tree, depth first, the root included."""
    yield rule
    if isinstance(rule, All | Any_):
        for child in rule.of:
            yield from iter_rules(child)
    elif isinstance(rule, Not):
        yield from iter_rules(rule.rule)
    elif isinstance(rule, Score):
        for term in rule.terms:
            yield from iter_rules(term.rule)


def codelists_of(rule: Rule) -> set[str]:
    """Ids of every codelist a rule refers to."""
    ids: set[str] = set()
    for node in iter_rules(rule):
        if isinstance(node, HasCode | LatestValue | FirstCode):
            ids.add(node.codelist)
        elif isinstance(node, OnRegister):
            ids.add(node.codelist)
            if node.resolved:
                ids.add(node.resolved)
        elif isinstance(node, LatestCode):
            ids.update((node.family, node.codelist))
    return ids


# --- indicators --------------------------------------------------------------------------------


class Indicator(_Frozen):
    id: IndicatorId
    version: int = Field(ge=1, le=10000)
    title: ShortText
    rationale: LongText
    qof: Annotated[str, Field(pattern=r"^[A-Z]{2,5}[0-9]{3}$")] | None = None
    simplifications: LongText | None = None
    population: Rule
    numerator: Rule
    exclusions: Rule | None = None
    strata: tuple[StratumDimension, ...] = ("age_band", "sex")

    @model_validator(mode="after")
    def _strata_unique(self) -> Indicator:
        if len(set(self.strata)) != len(self.strata):
            raise ValueError(f"indicator {self.id}: repeated stratum dimension")
        return self

    def codelist_ids(self) -> set[str]:
        ids = codelists_of(self.population) | codelists_of(self.numerator)
        if self.exclusions is not None:
            ids |= codelists_of(self.exclusions)
        return ids


class AgeBand(_Frozen):
    label: Annotated[str, Field(pattern=r"^[0-9]{1,3}(-[0-9]{1,3}|\+)$")]
    min: int = Field(ge=0, le=130)
    max: int | None = Field(default=None, ge=0, le=130)


# --- disclosure policy -------------------------------------------------------------------------


class CountRule(_Frozen):
    """0 stays 0 (a true zero, but for a small population's numerators: protocol.disclosure);
    1..``suppress_at_or_below`` are suppressed; the rest are
    rounded to the nearest ``round_to`` (halves up). ``round_to=1`` releases exact counts."""

    suppress_at_or_below: int = Field(ge=0, le=1000)
    round_to: int = Field(ge=1, le=1000)


class DisclosurePolicy(_Frozen):
    """How a practice's counts are released (protocol.disclosure, docs/disclosure.md).

    ``exclusions_by_stratum``: whether an indicator's exclusions are released stratum by
    stratum (True, the layout of before the field) or as the whole-practice total only (False):
    then every stratum's exclusions count is ``suppressed``, zeros included, so a reader knows
    each only as 0 or more. True is left out of the policy's canonical bytes, so a policy of
    before the field keeps its bytes and its hash."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._\-]{0,63}$")]
    stratified: CountRule = CountRule(suppress_at_or_below=7, round_to=5)
    totals: CountRule = CountRule(suppress_at_or_below=0, round_to=1)
    secondary_suppression: bool = True
    exclusions_by_stratum: bool = True

    @model_serializer(mode="wrap")
    def _layout_of_before_left_out(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if self.exclusions_by_stratum and isinstance(data, dict):
            data.pop("exclusions_by_stratum", None)
        return data


# --- the catalogue -----------------------------------------------------------------------------


#: Catalogue.sha256 per object: (the catalogue, its hash), keyed by id() and checked by identity.
_SHA256: dict[int, tuple[Catalogue, str]] = {}


class Catalogue(_Frozen):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._\-]{0,63}$")]
    version: int = Field(ge=1, le=1_000_000)
    title: ShortText
    age_bands: tuple[AgeBand, ...] = Field(min_length=1, max_length=20)
    disclosure: DisclosurePolicy
    codelists: tuple[Codelist, ...] = Field(max_length=500)
    indicators: tuple[Indicator, ...] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _consistent(self) -> Catalogue:
        ids = [i.id for i in self.indicators]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate indicator id")
        cl_ids = [c.id for c in self.codelists]
        if len(set(cl_ids)) != len(cl_ids):
            raise ValueError("duplicate codelist id")
        known = set(cl_ids)
        for ind in self.indicators:
            missing = ind.codelist_ids() - known
            if missing:
                raise ValueError(f"indicator {ind.id} uses unknown codelists {sorted(missing)}")
        # Age bands must cover 0..open end without gaps or overlaps.
        expected_min = 0
        for i, band in enumerate(self.age_bands):
            if band.min != expected_min:
                raise ValueError(f"age band {band.label} should start at {expected_min}")
            last = i == len(self.age_bands) - 1
            if band.max is None:
                if not last:
                    raise ValueError(f"age band {band.label}: only the last band is open")
            else:
                if last:
                    raise ValueError("the last age band must be open (no max)")
                if band.max < band.min:
                    raise ValueError(f"age band {band.label}: max < min")
                expected_min = band.max + 1
        return self

    def indicator(self, indicator_id: str) -> Indicator:
        for ind in self.indicators:
            if ind.id == indicator_id:
                return ind
        raise KeyError(indicator_id)

    def codelist(self, codelist_id: str) -> Codelist:
        for cl in self.codelists:
            if cl.id == codelist_id:
                return cl
        raise KeyError(codelist_id)

    def to_bytes(self) -> bytes:
        return model_bytes(self)

    def sha256(self) -> str:
        """The SHA-256 of the canonical bytes. A catalogue is immutable all the way down (frozen
        models and tuples), so the hash is kept per object: a preview needs it twice, at 0.07 s
        of CPU each for the national clusters (``model_copy`` makes a new object, hashed anew)."""
        hit = _SHA256.get(id(self))
        if hit is None or hit[0] is not self:
            if len(_SHA256) >= 16:
                _SHA256.clear()
            hit = (self, hashlib.sha256(self.to_bytes()).hexdigest())
            _SHA256[id(self)] = hit
        return hit[1]

    @classmethod
    def from_bytes(cls, data: bytes) -> Catalogue:
        """Parse a catalogue's canonical bytes (as carried in its signed envelope)."""
        return parse_canonical(data, cls)

    def strata_for(self, indicator: Indicator) -> list[tuple[str, str]]:
        """Every (age_band, sex) stratum the indicator reports, the whole-practice total
        ``("all", "all")`` first. Sex strata are F, M and U, so strata partition the total."""
        bands = [b.label for b in self.age_bands] if "age_band" in indicator.strata else ["all"]
        sexes: list[str] = ["F", "M", "U"] if "sex" in indicator.strata else ["all"]
        cells = [("all", "all")]
        if indicator.strata:
            cells += [(b, s) for b in bands for s in sexes]
        return cells
