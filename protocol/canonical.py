"""Canonical JSON (RFC 8785) for every signed payload.

A payload is accepted only if its bytes are exactly the RFC 8785 form of what they parse to, and
exactly the canonical dump of the model they parse into. So there is one byte string per message,
retries are byte-identical, and nothing can ride along in whitespace, key order, duplicate keys,
escape variants or defaulted fields.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Literal, TypeVar, Union

import rfc8785
from pydantic import BaseModel, ValidationError
from pydantic.dataclasses import is_pydantic_dataclass

from .errors import CanonicalFormError, SchemaError

M = TypeVar("M", bound=BaseModel)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise CanonicalFormError(f"duplicate key {key!r} in JSON object")
        seen[key] = value
    return seen


def _reject_float_constants(value: str) -> Any:
    raise CanonicalFormError(f"non-finite number {value} is not JSON")


#: The most digits a JSON integer may have here: far beyond any count, time or sequence number
#: (the protocol's integers are safe integers, 16 digits at most), far below the 4,300 at
#: which Python refuses to convert one (a ValueError, which would otherwise escape the parse).
MAX_INT_DIGITS = 100


def parse_int(error: type[Exception], where: str) -> Callable[[str], int]:
    """A ``json.loads`` ``parse_int`` hook refusing, as ``error``, an integer of more than
    :data:`MAX_INT_DIGITS` digits in ``where``."""

    def parse(text: str) -> int:
        digits = len(text) - text.startswith("-")
        if digits > MAX_INT_DIGITS:
            raise error(f"{where} holds an integer of {digits} digits")
        return int(text)

    return parse


_PAYLOAD_INT = parse_int(CanonicalFormError, "payload JSON")


def loads_strict(data: bytes) -> Any:
    """Parse JSON bytes, rejecting duplicate keys, NaN/Infinity, invalid UTF-8, integers of
    more than :data:`MAX_INT_DIGITS` digits and nesting deeper than the parser can follow."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonicalFormError(f"payload is not valid UTF-8: {exc}") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_float_constants,
            parse_int=_PAYLOAD_INT,
        )
    except json.JSONDecodeError as exc:
        raise CanonicalFormError(f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise CanonicalFormError("payload JSON is nested too deeply") from None


_MAX_SAFE_INT = 2**53 - 1
_FAST_DUMPS = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
).encode


def _is_fast_domain(value: Any, *, owned: bool = False) -> bool:
    """True when RFC 8785 bytes equal the standard library's sorted compact dump: integers
    within +-(2**53 - 1), floats the C encoder writes as ECMAScript does (below), ASCII keys (so
    code point order is UTF-16 order), only dict / list / str / int / float / bool / None.
    String escaping is the same in both (short escapes for \\b \\t \\n \\f \\r, lower-case
    \\u00xx for other controls, everything else raw).

    Floats: a finite float that is not a whole number and lies in [1e-4, 1e16) in magnitude is
    written by ``float.__repr__`` in plain decimal notation with the shortest digits that read
    back as it, which is what ECMAScript's ``Number::toString`` writes there. A whole number is
    written ``140.0`` by Python and ``140`` by ECMAScript: with ``owned`` (the caller's value is
    a private dump that may be changed) a whole float within +-(2**53 - 1) is replaced by the
    equal int in its container; otherwise it leaves the fast domain, as does any other float."""
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            for k in v:
                if type(k) is not str or not k.isascii():
                    return False
            pairs: Any = v.items()
        elif type(v) is list:
            pairs = enumerate(v)
        else:
            pairs = ((None, v),)
        # Scalars are checked here, without a trip through the stack: most nodes are leaves.
        for key, item in pairs:
            t = type(item)
            if t is str or t is bool or item is None:
                continue
            if t is int:
                if not -_MAX_SAFE_INT <= item <= _MAX_SAFE_INT:
                    return False
            elif t is dict or t is list:
                stack.append(item)
            elif t is float:
                if not _plain_float(item):
                    if (
                        owned
                        and key is not None
                        and item.is_integer()
                        and abs(item) <= _MAX_SAFE_INT
                    ):
                        v[key] = int(item)
                    else:
                        return False
            else:
                return False
    return True


def _plain_float(x: float) -> bool:
    """Whether ``json`` writes ``x`` exactly as RFC 8785 does (see :func:`_is_fast_domain`)."""
    return 1e-4 <= abs(x) < 1e16 and not x.is_integer()


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 bytes of a JSON-compatible value.

    Values in the common domain (see :func:`_is_fast_domain`) are dumped by the standard
    library's C encoder, which gives the same bytes some 30 times faster (a submission's
    hundreds of cells); anything else goes through ``rfc8785``."""
    return _canonical(value, owned=False)


def _canonical(value: Any, *, owned: bool) -> bytes:
    if _is_fast_domain(value, owned=owned):
        try:
            return _FAST_DUMPS(value).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: let rfc8785 raise its error
            pass
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalFormError(f"value has no RFC 8785 form: {exc}") from None


def model_bytes(model: BaseModel) -> bytes:
    """The canonical bytes of a model: RFC 8785 over its JSON dump, ``None`` fields left out."""
    return _canonical(model.model_dump(mode="json", exclude_none=True), owned=True)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _NotFast(Exception):
    """Raised inside the fast parse: leave the payload to the strict path."""


def _not_fast(_text: str) -> Any:
    raise _NotFast


def _safe_int(text: str) -> int:
    value = int(text)
    if len(text) > 15 and not -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
        raise _NotFast
    return value


def _parse_fast(data: bytes, model: type[M]) -> M | None:
    """The model when ``data`` is accepted by the common path, else ``None``.

    One parse, one validation, one dump: ASCII bytes with no float, non-finite or unsafe integer
    token, whose model's sorted compact dump by the C encoder is ``data`` itself. Then the dump is
    in the fast domain (equal text: ASCII keys, no float, safe integers), so ``model_bytes(obj) ==
    data``; and ``data``, being that canonical form, parses (without duplicate keys) to a value
    whose RFC 8785 form is ``data``: every check of the strict path holds, on the same value.
    Anything else, every rejection included, returns ``None`` and takes the strict path, which
    runs the checks in order and names the fault."""
    if not data.isascii():
        return None
    try:
        value = json.loads(
            data.decode("ascii"),
            parse_float=_not_fast,
            parse_int=_safe_int,
            parse_constant=_not_fast,
        )
        obj = model.model_validate(value)
        dumped = _FAST_DUMPS(obj.model_dump(mode="json", exclude_none=True)).encode("utf-8")
    except Exception:  # noqa: BLE001 - the strict path raises the right error
        return None
    return obj if dumped == data else None


_PLAIN_TYPES = (str, bool, type(None), dt.date)


def _safe_bounds(metadata: Any) -> bool:
    """Whether constraints ``metadata`` keep an integer within +-(2**53 - 1)."""
    lo = hi = False
    for m in metadata:
        for name in ("le", "lt"):
            v = getattr(m, name, None)
            hi = hi or (isinstance(v, int) and v <= _MAX_SAFE_INT + (name == "lt"))
        for name in ("ge", "gt"):
            v = getattr(m, name, None)
            lo = lo or (isinstance(v, int) and v >= -_MAX_SAFE_INT - (name == "gt"))
    return lo and hi


def _plain_annotation(tp: Any, metadata: Any = ()) -> bool:
    """Whether values of ``tp`` (constrained by ``metadata``) dump as RFC 8785 writes them once
    the text has no escapes: strings, booleans, null, dates, integers bounded to the safe range,
    literals, tuples and unions of those, and sorted models. No floats (their text differs),
    no dicts (their key order would be the input's)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        inner, *extra = typing.get_args(tp)
        found = [*metadata]
        for e in extra:
            found.extend(getattr(e, "metadata", [e]))
        return _plain_annotation(inner, found)
    if origin is Literal:
        return all(
            isinstance(a, (str, bool)) or (isinstance(a, int) and abs(a) <= _MAX_SAFE_INT)
            for a in typing.get_args(tp)
        )
    if origin in (Union, types.UnionType):
        return all(_plain_annotation(a, metadata) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return len(args) == 2 and args[1] is Ellipsis and _plain_annotation(args[0])
    if isinstance(tp, type) and (issubclass(tp, BaseModel) or is_pydantic_dataclass(tp)):
        return _sorted_model(tp)
    if tp is int:
        return _safe_bounds(metadata)
    return tp in _PLAIN_TYPES


@cache
def _sorted_model(model: type[Any]) -> bool:
    """Whether ``model``'s JSON dump is already its canonical form when the text is plain
    (see :func:`_parse_sorted`): fields declared in sorted order, no aliases, no custom
    serialisers, extra fields forbidden, every field of a plain type, and the same for every
    model (or pydantic dataclass) inside it."""
    fields = model.__pydantic_fields__
    names = list(fields)
    decorators = model.__pydantic_decorators__
    config = model.model_config if issubclass(model, BaseModel) else model.__pydantic_config__
    if (
        names != sorted(names)
        or config.get("extra") != "forbid"
        or decorators.field_serializers
        or decorators.model_serializers
    ):
        return False
    for name, info in fields.items():
        if info.alias not in (None, name) or info.serialization_alias not in (None, name):
            return False
        if not _plain_annotation(info.annotation, info.metadata):
            return False
    return True


def _parse_sorted(data: bytes, model: type[M]) -> M | None:
    """The fastest path, for sorted models (:func:`_sorted_model`): parse and validate in one
    step (pydantic's strict JSON mode: no coercion), dump once, compare.

    If the dump equals ``data``: the text is ASCII without a backslash (so no escapes), and it
    is the compact dump of a sorted model tree: keys in code-point order (RFC 8785's, for ASCII
    keys), no duplicates, ``None`` fields left out, no floats, integers in the safe range. That
    is the RFC 8785 form of its own parse and ``model_bytes`` of the model: every check of the
    strict path holds. Anything else returns ``None``."""
    if not data.isascii() or b"\\" in data:
        return None
    try:
        obj = model.model_validate_json(data, strict=True)
        dumped = model.__pydantic_serializer__.to_json(obj, exclude_none=True)
    except Exception:  # noqa: BLE001 - the other paths raise the right error
        return None
    return obj if dumped == data else None


# Model-specific fast parsers (see register_fast_parser), tried first.
_FAST_PARSERS: dict[type[Any], Callable[[bytes], Any]] = {}


def register_fast_parser(model: type[M], parse: Callable[[bytes], M | None]) -> None:
    """Let :func:`parse_canonical` try ``parse`` first for ``model``: it returns the model only
    for bytes the other paths would accept as that very model (its module's tests show this),
    and ``None`` for anything else, which then takes the other paths and their errors."""
    _FAST_PARSERS[model] = parse


def parse_canonical(data: bytes, model: type[M]) -> M:
    """Parse payload bytes into ``model``, requiring the bytes to be the model's canonical form.

    Raises :class:`CanonicalFormError` when the bytes are not RFC 8785 canonical (or not the
    model's own canonical dump, e.g. an explicit ``null`` or a float where an integer belongs),
    and :class:`SchemaError` when the value does not fit the model.
    """
    fast = _FAST_PARSERS.get(model)
    obj = fast(data) if fast is not None else None
    if obj is None and _sorted_model(model):
        obj = _parse_sorted(data, model)
    if obj is None:
        obj = _parse_fast(data, model)
    if obj is not None:
        return obj
    value = loads_strict(data)
    if canonical_json(value) != data:
        raise CanonicalFormError("payload bytes are not in RFC 8785 canonical form")
    try:
        obj = model.model_validate(value)
    except ValidationError as exc:
        raise SchemaError(_describe(exc, model.__name__)) from None
    if model_bytes(obj) != data:
        raise CanonicalFormError(
            f"payload is canonical JSON but not the canonical form of a {model.__name__} "
            "(explicit nulls, defaulted fields or non-integer numbers)"
        )
    return obj


def _describe(exc: ValidationError, name: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    suffix = f" (+{more} more)" if more > 0 else ""
    return f"{name} schema: " + "; ".join(parts) + suffix
