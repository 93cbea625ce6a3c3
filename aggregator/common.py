"""Checks shared by every message the aggregator accepts (enrol, rotate, submission)."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from protocol.canonical import parse_canonical
from protocol.envelope import Envelope
from protocol.errors import (
    CanonicalFormError,
    EnvelopeFormatError,
    PayloadTypeError,
    SchemaError,
    SignatureError,
    UnsupportedVersionError,
    VerificationError,
)

from .errors import (
    AuthenticationError,
    BadRequestError,
    ForbiddenError,
    PayloadTooLargeError,
    UnprocessableError,
)

M = TypeVar("M", bound=BaseModel)
ODS = re.compile(r"^[A-Z][0-9]{5}$")
log = logging.getLogger("fedqi.aggregator")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_size(body: bytes, cap: int) -> None:
    if len(body) > cap:
        raise PayloadTooLargeError(f"size: body is {len(body)} bytes, the cap is {cap}")


def open_shape(body: bytes) -> Envelope:
    """Check 2, envelope shape."""
    try:
        return Envelope.from_bytes(body)
    except EnvelopeFormatError as exc:
        raise BadRequestError(f"envelope: {exc}", code="envelope-format") from None


def check_kind(env: Envelope, kind: str) -> None:
    """Check 3, payloadType."""
    try:
        found = env.kind
    except (PayloadTypeError, UnsupportedVersionError) as exc:
        raise BadRequestError(f"payloadType: {exc}", code=exc.code) from None
    if found != kind:
        raise BadRequestError(
            f"payloadType: {env.payloadType!r} is not a {kind} message", code="payload-type"
        )


def check_signature(verify: Callable[[], bytes]) -> bytes:
    try:
        return verify()
    except SignatureError as exc:
        raise AuthenticationError(f"signature: {exc}", code="signature") from None
    except VerificationError as exc:
        raise AuthenticationError(f"signature: {exc}", code="signature") from None


def parse_payload(payload: bytes, model: type[M]) -> M:
    """Check: canonical form (and the message schema)."""
    try:
        return parse_canonical(payload, model)
    except CanonicalFormError as exc:
        raise BadRequestError(f"canonical form: {exc}", code="canonical-form") from None
    except SchemaError as exc:
        raise UnprocessableError(f"schema: {exc}", code="schema") from None


def check_audience(aud: str, expected: str) -> None:
    if aud != expected:
        raise ForbiddenError(
            f"binding: aud {aud!r} is not this network ({expected!r})", code="wrong-audience"
        )


def check_iat(iat: int, now: float, future: int, past: int) -> None:
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


#: The earliest time zone is UTC+14: a period has ended for some agent as soon as its last day
#: is over there, 14 h before it is over in UTC.
PERIOD_ZONE_SECONDS = 14 * 3600


def check_period_ended(end: dt.date, label: str, now: float, future: int) -> None:
    """A submission's period must have ended: its last day is before today, where today is the
    UTC date of the server's clock plus 14 h (the earliest time zone) plus the ``iat`` clock
    allowance ``future``. So an agent whose clock is within the iat allowance and whose local
    date is past the period's last day is never refused, and nothing else is accepted."""
    today = dt.datetime.fromtimestamp(now + future + PERIOD_ZONE_SECONDS, tz=dt.UTC).date()
    if end >= today:
        raise UnprocessableError(
            f"period {label} has not ended (its last day is {end.isoformat()}; "
            f"the aggregator's date, allowing {PERIOD_ZONE_SECONDS // 3600} h for time zones "
            f"and {future} s of clock skew, is {today.isoformat()})",
            code="period-not-ended",
        )


_HOOK_UNSET: Any = object()
_hook: Any = _HOOK_UNSET


def submission_batch_hook() -> Callable[..., None] | None:
    """``aggregator.benchmarks.hooks.on_submissions_stored(session, submissions)``, called in
    the ingest transaction with the protocol submissions a batch stored, if that module exists
    (imported once, lazily)."""
    global _hook
    if _hook is _HOOK_UNSET:
        try:
            module = importlib.import_module("aggregator.benchmarks.hooks")
        except ModuleNotFoundError as exc:
            if exc.name not in ("aggregator.benchmarks", "aggregator.benchmarks.hooks"):
                raise
            _hook = None
        else:
            _hook = getattr(module, "on_submissions_stored", None)
    found: Callable[..., None] | None = _hook
    return found
