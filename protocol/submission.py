"""The messages agents and the aggregator exchange (protocol v1 payloads).

Every model is frozen and forbids unknown fields. There is no free-text field in anything a
practice sends: identifiers are patterned, counts are bounded integers, reasons are enums, so the
schema itself cannot carry a patient-level payload.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .canonical import model_bytes, parse_canonical, sha256_hex
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


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class Count(_Frozen):
    """A released count and its disclosure status.

    ``zero``: a true zero (value 0). ``exact``: the true count (value >= 1). ``rounded``: the
    true count rounded under the policy. ``suppressed``: withheld, no value: never a zero.
    """

    status: DisclosureStatus
    value: int | None = Field(default=None, ge=0, le=MAX_COUNT)

    @model_validator(mode="after")
    def _status_fits_value(self) -> Count:
        if self.status == "suppressed":
            if self.value is not None:
                raise ValueError("a suppressed count carries no value")
        elif self.value is None:
            raise ValueError(f"a {self.status} count needs a value")
        elif self.status == "zero" and self.value != 0:
            raise ValueError("a zero count has value 0")
        elif self.status == "exact" and self.value == 0:
            raise ValueError("an exact 0 is status 'zero'")
        return self


class Stratum(_Frozen):
    age_band: AgeBandLabel = "all"
    sex: SexStratum = "all"

    @property
    def is_total(self) -> bool:
        return self.age_band == "all" and self.sex == "all"


class Cell(_Frozen):
    """Counts for one indicator in one stratum."""

    denominator: Count
    exclusions: Count
    indicator: IndicatorId
    numerator: Count
    stratum: Stratum

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.indicator, self.stratum.age_band, self.stratum.sex)

    @model_validator(mode="after")
    def _numerator_within_denominator(self) -> Cell:
        n, d = self.numerator, self.denominator
        if (
            n.value is not None
            and d.value is not None
            and n.status in ("exact", "zero")
            and d.status in ("exact", "zero")
            and n.value > d.value
        ):
            raise ValueError(f"{self.indicator}: numerator {n.value} > denominator {d.value}")
        return self


class Period(_Frozen):
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
        nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
        return cls(start=start, end=nxt - dt.timedelta(days=1))

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

    @model_validator(mode="after")
    def _rules(self) -> Submission:
        if (self.supersedes is None) != (self.reason is None):
            raise ValueError("supersedes and reason go together")
        if self.supersedes == self.submission_id:
            raise ValueError("a submission cannot supersede itself")
        keys = [c.key for c in self.cells]
        if keys != sorted(keys):
            raise ValueError("cells must be sorted by (indicator, age_band, sex)")
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate cell")
        return self

    def to_bytes(self) -> bytes:
        return model_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Submission:
        return parse_canonical(data, cls)


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
