"""The named checks every signed message the aggregator accepts passes (submission, enrol,
rotate), in the order they run. Each takes what it checks and returns what the next one needs,
or raises an :class:`~aggregator.errors.AggregatorError` whose message and ``code`` name the
check; nothing is stored before the last one passes.

 1. :func:`check_size`          the body is within the cap                     413 body-too-large
 2. :func:`check_shape`         the bytes are one well-formed DSSE envelope    400 envelope-format
 3. :func:`check_kind`          its payloadType is this message's kind         400 payload-type
    :func:`check_signer_count`  it carries the number of signatures the kind needs
 4. :func:`check_key_active`    the signing key is enrolled and active        401 unknown-key,
                                                                               403 key-revoked / key-retired
 5. :func:`check_signature`     the signatures verify; gives the payload bytes 401 signature
 6. :func:`check_payload`       the payload is canonical JSON of the message's schema, parsed
                                once into its model                            400 canonical-form,
                                                                               422 schema
 7. :func:`check_binding`       a submission's kid and practice are its key's  403 key-binding /
                                                                               practice-binding
    :func:`check_audience`      ``aud`` is this network                        403 wrong-audience
 8. (replay: :func:`aggregator.submissions.commit.check_seq`)
 9. :func:`check_issued_at`     ``iat`` is within the clock window             422 iat-window
    :func:`check_period_is_month` its period is one calendar month, first to last day
                                                                               422 period-not-calendar-month
    :func:`check_period_ended`  a submission's period has ended                422 period-not-ended
10. :func:`check_catalogue`     the catalogue is one this network published    422 unknown-catalogue /
                                                                               catalogue-mismatch
11. :func:`check_business_rules` indicators and strata known, numerator <= denominator   422
12. :func:`check_disclosure`    the disclosure policy holds                    422 disclosure

:func:`aggregator.submissions.service.verify` runs them for a submission;
:mod:`aggregator.practices.service` runs 1-7 and 9 for enrol and rotate (so practices/ imports
this module, and submissions/ imports nothing of practices/).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel

from protocol.canonical import parse_canonical
from protocol.disclosure import check_cells
from protocol.envelope import Envelope
from protocol.errors import (
    CanonicalFormError,
    DisclosureError,
    EnvelopeFormatError,
    PayloadTypeError,
    SchemaError,
    UnsupportedVersionError,
    VerificationError,
)
from protocol.submission import Period, Submission

from ..catalogues.service import KnownCatalogue
from ..db.models import PracticeKey
from ..errors import (
    AuthenticationError,
    BadRequestError,
    ForbiddenError,
    PayloadTooLargeError,
    UnprocessableError,
)

M = TypeVar("M", bound=BaseModel)


def check_size(body: bytes, cap: int) -> None:
    """Check 1: the body is within the cap."""
    if len(body) > cap:
        raise PayloadTooLargeError(f"size: body is {len(body)} bytes, the cap is {cap}")


def check_shape(body: bytes) -> Envelope:
    """Check 2: the bytes are one DSSE envelope in its unique wire form."""
    try:
        return Envelope.from_bytes(body)
    except EnvelopeFormatError as exc:
        raise BadRequestError(f"envelope: {exc}", code="envelope-format") from None


def check_kind(env: Envelope, kind: str) -> None:
    """Check 3: the envelope's payloadType is a supported version of ``kind``."""
    try:
        found = env.kind
    except (PayloadTypeError, UnsupportedVersionError) as exc:
        raise BadRequestError(f"payloadType: {exc}", code=exc.code) from None
    if found != kind:
        raise BadRequestError(
            f"payloadType: {env.payloadType!r} is not a {kind} message", code="payload-type"
        )


def check_signer_count(env: Envelope, count: int, rule: str) -> None:
    """Check 3, continued: the message carries the ``count`` signatures its kind needs
    (``rule`` says so in words, for the error)."""
    if len(env.signatures) != count:
        raise BadRequestError(f"envelope: {rule}", code="envelope-format")


def check_key_active(key: PracticeKey | None, kid: str) -> PracticeKey:
    """Check 4: the key the envelope names is enrolled and active (``key``: its stored row,
    or ``None``)."""
    if key is None:
        raise AuthenticationError(
            f"key: kid {kid} is not enrolled with this aggregator", code="unknown-key"
        )
    if key.status == "revoked":
        raise ForbiddenError(f"key: kid {kid} was revoked", code="key-revoked")
    if key.status != "active":
        raise ForbiddenError(
            f"key: kid {kid} is {key.status} (rotated away); sign with the current key",
            code="key-retired",
        )
    return key


def check_signature(verify: Callable[[], bytes]) -> bytes:
    """Check 5: ``verify`` (a :func:`protocol.envelope.verify_envelope` call) passes; gives
    the payload bytes it returns."""
    try:
        return verify()
    except VerificationError as exc:  # SignatureError among them
        raise AuthenticationError(f"signature: {exc}", code="signature") from None


def check_payload(payload: bytes, model: type[M]) -> M:
    """Check 6: the payload is the canonical (RFC 8785) JSON of ``model``: parsed once, here."""
    try:
        return parse_canonical(payload, model)
    except CanonicalFormError as exc:
        raise BadRequestError(f"canonical form: {exc}", code="canonical-form") from None
    except SchemaError as exc:
        raise UnprocessableError(f"schema: {exc}", code="schema") from None


def check_binding(sub: Submission, kid: str, practice_ods: str) -> None:
    """Check 7: the payload names the key that signed it and the practice that key is bound to."""
    if sub.kid != kid:
        raise ForbiddenError(
            f"binding: payload kid {sub.kid} is not the signing key {kid}", code="key-binding"
        )
    if sub.practice != practice_ods:
        raise ForbiddenError(
            f"binding: kid {kid} is bound to practice {practice_ods}, not {sub.practice}",
            code="practice-binding",
        )


def check_audience(aud: str, expected: str) -> None:
    """Check 7, continued: the message is addressed to this network."""
    if aud != expected:
        raise ForbiddenError(
            f"binding: aud {aud!r} is not this network ({expected!r})", code="wrong-audience"
        )


def check_issued_at(iat: int, now: float, future: int, past: int) -> None:
    """Check 9: ``iat`` is at most ``future`` seconds ahead of ``now`` and ``past`` behind."""
    if iat > now + future:
        raise UnprocessableError(
            f"iat window: iat {iat} is {iat - int(now)} s in the future (at most {future} s allowed)",
            code="iat-window",
        )
    if iat < now - past:
        raise UnprocessableError(
            f"iat window: iat {iat} is {int(now) - iat} s old (at most {past} s allowed)",
            code="iat-window",
        )


def check_period_is_month(period: Period) -> None:
    """Check 9, continued: a submission's period is one calendar month, from its first to its
    last day. Benchmarks group submissions by period, so any other period would be a group of
    its own, and two overlapping periods from one practice (March 1-30 beside March 1-31) could
    be differenced to reveal the counts of the days between them."""
    if not period.is_calendar_month:
        start = period.start
        month = Period.month(start.year, start.month)
        raise UnprocessableError(
            f"period {start.isoformat()} to {period.end.isoformat()} is not one calendar "
            f"month: a period runs from the first to the last day of one month "
            f"(e.g. {month.start.isoformat()} to {month.end.isoformat()} for {month.label})",
            code="period-not-calendar-month",
        )


#: The earliest time zone is UTC+14: a period has ended for some agent as soon as its last day
#: is over there, 14 h before it is over in UTC.
PERIOD_ZONE_SECONDS = 14 * 3600


def check_period_ended(end: dt.date, label: str, now: float, future: int) -> None:
    """Check 9, continued: a submission's period must have ended: its last day is before
    today, where today is the UTC date of the server's clock plus 14 h (the earliest time zone)
    plus the ``iat`` clock allowance ``future``. So an agent whose clock is within the iat
    allowance and whose local date is past the period's last day is never refused, and nothing
    else is accepted."""
    today = dt.datetime.fromtimestamp(now + future + PERIOD_ZONE_SECONDS, tz=dt.UTC).date()
    if end >= today:
        raise UnprocessableError(
            f"period {label} has not ended (its last day is {end.isoformat()}; "
            f"the aggregator's date, allowing {PERIOD_ZONE_SECONDS // 3600} h for time zones "
            f"and {future} s of clock skew, is {today.isoformat()})",
            code="period-not-ended",
        )


def check_catalogue(sub: Submission, known: KnownCatalogue | None) -> KnownCatalogue:
    """Check 10: the submission's catalogue (``known``: what this network published under its
    id and version, or ``None``) is published, with the same SHA-256."""
    ref = sub.catalogue
    if known is None:
        raise UnprocessableError(
            f"catalogue: {ref.id} version {ref.version} is not published by this network",
            code="unknown-catalogue",
        )
    if known.sha256 != ref.sha256:
        raise UnprocessableError(
            f"catalogue: sha256 {ref.sha256} does not match published {ref.id} v{ref.version} ({known.sha256})",
            code="catalogue-mismatch",
        )
    return known


def check_business_rules(sub: Submission, known: KnownCatalogue) -> None:
    """Check 11: every cell's indicator and stratum are the catalogue's, and no numerator
    exceeds its denominator."""
    for cell in sub.cells:
        strata = known.strata.get(cell.indicator)
        if strata is None:
            raise UnprocessableError(
                f"business rules: indicator {cell.indicator} is not in catalogue {known.catalogue.id} "
                f"v{known.catalogue.version}",
                code="unknown-indicator",
            )
        if (cell.stratum.age_band, cell.stratum.sex) not in strata:
            raise UnprocessableError(
                f"business rules: indicator {cell.indicator} has no stratum "
                f"age_band={cell.stratum.age_band} sex={cell.stratum.sex}",
                code="unknown-stratum",
            )
        n, d = cell.numerator.value, cell.denominator.value
        if n is not None and d is not None and n > d:
            raise UnprocessableError(
                f"business rules: {cell.indicator} {cell.stratum.age_band}/{cell.stratum.sex}: "
                f"numerator {n} > denominator {d}",
                code="numerator-exceeds-denominator",
            )


def check_disclosure(sub: Submission, known: KnownCatalogue) -> None:
    """Check 12: the cells keep the catalogue's disclosure policy (protocol.disclosure)."""
    try:
        check_cells(sub.cells, known.catalogue.disclosure)
    except DisclosureError as exc:
        raise UnprocessableError(f"disclosure policy: {exc}", code="disclosure") from None
