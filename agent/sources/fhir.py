"""FHIR R4: bulk-export ndjson folders and Bundles (transaction, collection, ...) onto the
canonical tables.

What is read (docs/sources.md has the whole mapping):

* ``Patient`` -> ``patients``: a pseudonymous integer ``patient_id`` in order of appearance;
  the FHIR id is kept as ``local_ref`` (local worklists only). Registration comes from the
  Care Connect GP registration-details extension when present, otherwise from the patient's
  earliest dated record (or the birth date if there is none).
* ``Condition``, ``Observation`` (value, components of panels such as blood pressure, coded
  values), ``Procedure``, ``Immunization`` -> ``events``; ``MedicationRequest`` and
  ``MedicationStatement`` -> ``medications``. Every coding in a system fedqi reads becomes a
  row, with its system, so codelists may name codes from several systems.
* A Condition's abatement is not turned into a "resolved" code: UK systems record resolution
  as a code of its own, which is read like any other. The number of Conditions with an
  abatement date is reported.

Other resource types are counted and reported, not fatal. A line that is not valid JSON, or a
resource that refers to a patient the export does not contain, stops the load with the file
and line, and the store is left as it was. Every field is read through :class:`_Node`, with
the JSON type FHIR gives it: a field of another type stops the load naming its path
(``code.coding[0]``), never its value.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import gzip
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from sqlalchemy import Engine

from agent.errors import SourceError

from .common import (
    CODE_RE,
    MAX_UNIT,
    BatchWriter,
    LoadReport,
    normalise_value,
    replacing,
    system_of,
)

# GP Connect's registration details (registrationPeriod); matched on its last path segment
# because exports spell the base URL several ways (http/https, with or without STU3).
REGISTRATION_EXTENSION = (
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-RegistrationDetails-1"
)
REGISTRATION_EXTENSION_NAME = REGISTRATION_EXTENSION.rsplit("/", 1)[1]
GENDERS = {"female": "F", "male": "M", "other": "U", "unknown": "U"}
RESOURCE_TYPE_RE = re.compile(r"[A-Z][A-Za-z]{0,63}")  # matched whole (fullmatch)
# FHIR's date (YYYY, YYYY-MM, YYYY-MM-DD) and dateTime or instant (a whole date, then a time
# hh:mm:ss[.fraction] and a zone, Z or +hh:mm / -hh:mm), matched whole (fullmatch): nothing
# before or after it. The zone, which FHIR requires with a time, may be left out (as some
# exports do): the date as written is read either way. Groups: year, month, day, time.
FHIR_DATE_RE = re.compile(
    r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})"
    r"(T(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?"
    r"(?:Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?"
)
DATE_FORMS = "YYYY, YYYY-MM or YYYY-MM-DD"
DATE_TIME_FORMS = f"{DATE_FORMS}, or YYYY-MM-DDThh:mm:ss with a zone"

# Statuses that mean "this did not happen / was recorded in error".
SKIP_STATUS = {
    "Observation": {"entered-in-error", "cancelled"},
    "Procedure": {"entered-in-error", "not-done"},
    "Immunization": {"entered-in-error", "not-done"},
    "MedicationRequest": {"entered-in-error", "cancelled", "draft"},
    "MedicationStatement": {"entered-in-error", "not-taken"},
}
SKIP_INTENT = {"proposal", "plan"}  # a MedicationRequest that was never an issue
SKIP_VERIFICATION = {"entered-in-error", "refuted"}

READ_TYPES = {
    "Patient",
    "Medication",
    "Condition",
    "Observation",
    "Procedure",
    "Immunization",
    "MedicationRequest",
    "MedicationStatement",
}


@dataclass
class _Patient:
    local_ref: str
    birth_date: dt.date
    sex: str
    registration_start: dt.date | None
    registration_end: dt.date | None
    death_date: dt.date | None
    first_record: dt.date | None = None
    where: str = ""


class _Problem(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


T = TypeVar("T")

# Characters no FHIR id, code, uri or reference holds, and no database stores as given: the C0
# and C1 controls (NUL, line breaks, tab, ...) and lone surrogates (a JSON \ud800 escape).
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# How deep a Bundle may hold Bundles (each read recurses; JSON's own depth is bounded by the
# reader's, see _parse).
MAX_BUNDLE_DEPTH = 8


def _json_type(value: Any) -> str:
    """A JSON value's type as an error names it (never the value itself)."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


_EXPECTED = {dict: "an object", list: "an array", str: "a string", bool: "true or false"}


class _Node:
    """A JSON object of a resource, and where it is in it. Every field the loader reads is
    read through it, with the JSON type FHIR gives the field: one of another type is a
    :class:`_Problem` naming the field's path (``code.coding[1].system``) and the two types,
    never the value. An absent field, or JSON null, reads as None. The path is made only for an
    error (a load reads millions of nodes)."""

    __slots__ = ("data", "_parent", "_key")

    def __init__(
        self, data: dict[str, Any], parent: _Node | None = None, key: str | tuple[str, int] = ""
    ) -> None:
        self.data = data
        self._parent = parent
        self._key = key  # a field's name, or (an array field's name, the item's index)

    @property
    def path(self) -> str:
        if self._parent is None:
            return ""
        if isinstance(self._key, tuple):
            name, index = self._key
            return f"{self._parent.at(name)}[{index}]"
        return self._parent.at(self._key)

    def at(self, name: str) -> str:
        path = self.path
        return f"{path}.{name}" if path else name

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def _get(self, name: str, kind: type[T]) -> T | None:
        value = self.data.get(name)
        if value is None or value.__class__ is kind:  # what the JSON reader makes
            return value
        raise _Problem(self.at(name), f"{_json_type(value)} where FHIR has {_EXPECTED[kind]}")

    def text(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is None or value.__class__ is str:  # the common case, without a call
            return value
        return self._get(name, str)

    def ident(self, name: str) -> str | None:
        """A string that is stored or matched as a key (an id, a reference, a unit): one
        holding a control character or a lone surrogate is refused (no FHIR id or reference
        has one; PostgreSQL cannot store NUL). Codes, systems and dates are held to their own
        patterns; a status is only compared."""
        value = self._get(name, str)
        if value is not None and _UNSTORABLE.search(value):
            raise _Problem(self.at(name), "holds a control character (NUL, a line break, a tab)")
        return value

    def flag(self, name: str) -> bool | None:
        return self._get(name, bool)

    def node(self, name: str) -> _Node | None:
        value = self.data.get(name)
        if value is None:
            return None
        if value.__class__ is not dict:
            self._get(name, dict)  # raises, naming the field
        return _Node(value, self, name)

    def nodes(self, name: str) -> list[_Node]:
        """An array of objects (empty if absent); an item of another type is refused."""
        items = self._get(name, list)
        if not items:
            return []
        out = []
        for i, item in enumerate(items):
            if item.__class__ is not dict:
                where = f"{self.at(name)}[{i}]"
                raise _Problem(where, f"{_json_type(item)} where FHIR has an object")
            out.append(_Node(item, self, (name, i)))
        return out

    def number(self, name: str) -> float | None:
        """A decimal field as a finite float."""
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Problem(self.at(name), f"{_json_type(value)} where FHIR has a number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        # Python's JSON reader takes NaN and Infinity (JSON has neither), and a number too
        # large for a double is no reading.
        if not math.isfinite(number):
            raise _Problem(
                self.at(name),
                "the value is not a finite number (NaN, Infinity, or too large to hold)",
            )
        return number


def load_fhir(path: Path, engine: Engine) -> LoadReport:
    """Replace the store's contents with the FHIR data at ``path`` (an ndjson folder or file,
    a Bundle JSON file, or a folder of them), in one transaction."""
    files = _files(path)
    with replacing(engine) as conn:
        loader = _Loader(BatchWriter(conn))
        for file in files:
            if _is_ndjson(file):
                loader.read_ndjson(file)
            else:
                loader.read_json(file)
        if not loader.patients:
            # A load replaces the store's contents: an empty or cut export would empty it.
            raise SourceError(
                f"{path}: no Patient in the data (an export of a practice has its patients; "
                "a load replaces the store's contents); nothing was loaded"
            )
        loader.finish()
        counts = loader.writer.counts
    return LoadReport(
        source=f"fhir:{path}",
        patients=counts["patients"],
        events=counts["events"],
        medications=counts["medications"],
        skipped=dict(loader.skipped),
        unknown_resource_types=dict(loader.unknown),
        converted=dict(loader.converted),
    )


def _is_ndjson(file: Path) -> bool:
    return file.name.endswith((".ndjson", ".ndjson.gz"))


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"{path}: no such file or folder")
    files = [
        p
        for p in path.iterdir()
        if p.is_file() and p.name.endswith((".ndjson", ".ndjson.gz", ".json"))
    ]
    if not files:
        raise SourceError(f"{path}: no .ndjson or .json files")

    # Patients first, then Medications (referred to by medication requests), then the rest:
    # the order bulk-export file names allow.
    def order(p: Path) -> tuple[int, str]:
        rank = 0 if p.name.startswith("Patient") else 1 if p.name.startswith("Medication.") else 2
        return (rank, p.name)

    return sorted(files, key=order)


# What reading a damaged or truncated .gz raises (BadGzipFile is an OSError: caught first).
_GZIP_ERRORS = (gzip.BadGzipFile, zlib.error, EOFError)
# A byte that is not UTF-8, as the surrogateescape error handler keeps it.
_NOT_UTF8 = re.compile(r"[\udc80-\udcff]")


def _unreadable(file: Path, exc: BaseException) -> SourceError:
    if isinstance(exc, _GZIP_ERRORS):
        # Not the library's text: BadGzipFile's quotes the file's first bytes.
        return SourceError(
            f"{file}: not a readable gzip file (damaged, cut short, or not gzip); "
            "nothing was loaded"
        )
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return SourceError(f"{file}: cannot read ({why})")


def _lines(file: Path) -> Iterator[tuple[int, str]]:
    """An ndjson file's lines, numbered from 1. A byte that is not UTF-8 is kept as a
    surrogate (``surrogateescape``), so the caller names its line (a decoder error would come
    from the whole block being decoded, with no line)."""
    try:
        with _open_text(file) as fh:
            yield from enumerate(fh, start=1)
    except (*_GZIP_ERRORS, OSError) as exc:
        raise _unreadable(file, exc) from None


def _gzip_intact(file: Path) -> bool:
    """Whether a .gz file inflates to its end with its checksums right."""
    try:
        with gzip.open(file, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except (*_GZIP_ERRORS, OSError):
        return False
    return True


def _open_text(file: Path) -> IO[str]:
    if file.name.endswith(".gz"):
        return gzip.open(file, "rt", encoding="utf-8", errors="surrogateescape")
    return file.open(encoding="utf-8", errors="surrogateescape")


def _read_bytes(file: Path) -> bytes:
    try:
        if file.name.endswith(".gz"):
            with gzip.open(file, "rb") as fh:
                return fh.read()
        return file.read_bytes()
    except (*_GZIP_ERRORS, OSError) as exc:
        raise _unreadable(file, exc) from None


def _not_utf8(where: str, column: int) -> SourceError:
    return SourceError(f"{where}: not UTF-8 text (column {column}); nothing was loaded")


def _json_int(text: str) -> int | float:
    """A JSON integer: as a float past 18 digits (only decimals are read, as floats), so a
    number of thousands of digits is no ValueError (Python's limit on int() of a string) but
    a value too large to hold, refused where it is read with its field."""
    return int(text) if len(text) <= 18 else float(text)


_DECODER = json.JSONDecoder(parse_int=_json_int)


def _parse(text: str, where: str, *, whole_file: bool = False) -> Any:
    """One JSON value (an ndjson line, or a whole Bundle file); SourceError naming ``where``
    (and, for a whole file, the line) if it is not valid JSON or nests past what can be read."""
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as first:
        exc = first
        if not whole_file and text.endswith(("\n", "\r")):
            # A line cut short is found wanting past its line break ("line 2 column 1"): the
            # error is placed on the line itself, where it ends.
            try:
                _DECODER.decode(text.rstrip("\r\n"))
            except json.JSONDecodeError as on_the_line:
                exc = on_the_line
        line = f" line {exc.lineno}" if whole_file else ""
        raise SourceError(
            # Python's "Invalid control character at" expects its position after it
            f"{where}{line}: not valid JSON ({exc.msg.removesuffix(' at')} at column "
            f"{exc.colno}); "
            "a truncated export? nothing was loaded"
        ) from None
    except RecursionError:
        raise SourceError(
            f"{where}: not a FHIR resource (arrays or objects nested too deeply to read); "
            "nothing was loaded"
        ) from None


class _Loader:
    def __init__(self, writer: BatchWriter) -> None:
        self.writer = writer
        self.keys: dict[str, int] = {}  # "Patient/<id>" or a fullUrl -> patient_id
        self.patients: dict[int, _Patient] = {}
        self.medications: dict[str, list[tuple[str, str]]] = {}  # "Medication/<id>" -> codes
        self.skipped: Counter[str] = Counter()
        self.unknown: Counter[str] = Counter()
        self.converted: Counter[str] = Counter()
        self.where = ""  # the resource being read, as errors name it (file and line or entry)

    # --- files ------------------------------------------------------------------------------

    def read_ndjson(self, file: Path) -> None:
        try:
            for n, line in _lines(file):
                if not line.strip():
                    continue
                where = f"{file} line {n}"
                bad = None if line.isascii() else _NOT_UTF8.search(line)
                if bad:
                    raise _not_utf8(where, bad.start() + 1)
                self.read(_parse(line, where), where, full_url=None)
        except SourceError:
            # Damaged compressed data can inflate to garbled text before the stream fails (its
            # checksum is only at the end): name the damage, not what it garbled.
            if file.name.endswith(".gz") and not _gzip_intact(file):
                raise _unreadable(file, gzip.BadGzipFile()) from None
            raise

    def read_json(self, file: Path) -> None:
        data = _read_bytes(file)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - data.rfind(b"\n", 0, exc.start)
            raise _not_utf8(f"{file} line {line}", column) from None
        self.read(_parse(text, str(file), whole_file=True), str(file), full_url=None)

    def read_bundle(self, bundle: _Node, where: str, depth: int) -> None:
        items: list[tuple[int, _Node, str | None]] = []
        for i, entry in enumerate(bundle.nodes("entry")):
            resource = entry.node("resource")
            if resource is None:
                self.skipped["Bundle entry without a resource"] += 1
                continue
            items.append((i, resource, entry.ident("fullUrl")))
        # Patients (and Medications) first: entries may refer to them before they appear.
        rank = {"Patient": 0, "Medication": 1}
        items.sort(key=lambda it: (rank.get(str(it[1].data.get("resourceType")), 2), it[0]))
        for i, resource, full_url in items:
            self.read(resource.data, f"{where} entry {i}", full_url=full_url, depth=depth + 1)

    # --- resources --------------------------------------------------------------------------

    def read(self, resource: Any, where: str, full_url: str | None, depth: int = 0) -> None:
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise SourceError(f"{where}: not a FHIR resource (no resourceType)")
        rtype = resource["resourceType"]
        if rtype not in READ_TYPES and rtype != "Bundle":
            if not RESOURCE_TYPE_RE.fullmatch(rtype):
                raise SourceError(f"{where}, field resourceType: not a FHIR resource type")
            self.unknown[rtype] += 1
            return
        self.where = where
        try:
            if rtype == "Bundle":
                if depth >= MAX_BUNDLE_DEPTH:
                    raise _Problem(
                        "resourceType", f"a Bundle inside more than {MAX_BUNDLE_DEPTH} Bundles"
                    )
                self.read_bundle(_Node(resource), where, depth)
                return
            getattr(self, f"_read_{rtype.lower()}")(_Node(resource), full_url)
        except _Problem as exc:
            raise SourceError(f"{where} ({rtype}), field {exc.field}: {exc}") from None

    def _read_patient(self, res: _Node, full_url: str | None) -> None:
        fhir_id = res.ident("id")
        if not fhir_id:
            raise _Problem("id", "a Patient needs an id")
        key = f"Patient/{fhir_id}"
        if key in self.keys:
            first = self.patients[self.keys[key]].where
            raise _Problem("id", f"duplicate Patient id (the first is {first})")
        if len(fhir_id) > 64:
            raise _Problem("id", "longer than 64 characters")
        birth = res.text("birthDate")
        if birth is None:
            raise _Problem("birthDate", "missing (a birth date is required)")
        birth_date = self._date(birth, "birthDate", date_only=True)
        death_date = None
        deceased = res.text("deceasedDateTime")
        if deceased is not None:
            death_date = self._date(deceased, "deceasedDateTime")
        elif res.flag("deceasedBoolean") is True:
            self.skipped["Patient deceased without a date (kept as alive)"] += 1
        reg_start, reg_end = self._registration(res)
        # As the CSV loader: dates that cannot be are refused, not loaded.
        if death_date is not None and death_date < birth_date:
            raise _Problem("deceasedDateTime", "before birthDate")
        if reg_start is not None and reg_start < birth_date:
            raise _Problem("registrationPeriod.start", "before birthDate (registered before birth)")
        if reg_end is not None and reg_end <= birth_date:
            raise _Problem("registrationPeriod.end", "before birthDate")
        gender = res.text("gender")
        sex = GENDERS.get(gender, "U") if gender is not None else "U"
        pid = len(self.patients) + 1
        self.patients[pid] = _Patient(
            local_ref=fhir_id,
            birth_date=birth_date,
            sex=sex,
            registration_start=reg_start,
            registration_end=reg_end,
            death_date=death_date,
            where=self.where,
        )
        self.keys[key] = pid
        if full_url:
            self.keys[full_url] = pid

    def _registration(self, res: _Node) -> tuple[dt.date | None, dt.date | None]:
        """A Patient's GP Connect registrationPeriod: (start, first day no longer registered)."""
        reg_start = reg_end = None
        for ext in res.nodes("extension"):
            url = ext.text("url")
            if url is not None and url.endswith("/" + REGISTRATION_EXTENSION_NAME):
                for sub in ext.nodes("extension"):
                    if sub.text("url") != "registrationPeriod":
                        continue
                    period = sub.node("valuePeriod")
                    if period is None:
                        continue
                    start, end = period.text("start"), period.text("end")
                    if start is not None:
                        reg_start = self._date(start, "registrationPeriod.start")
                    if end is not None:
                        reg_end = self._registration_end(end)
        if reg_start is not None and reg_end is not None and reg_end <= reg_start:
            raise _Problem(
                "registrationPeriod.end",
                "before registrationPeriod.start (a registration cannot end before it starts)",
            )
        return reg_start, reg_end

    def _registration_end(self, text: str) -> dt.date:
        """fedqi's registration_end, the first day no longer registered, from a FHIR period's
        end, its last registered day (inclusive; a partial end is the last day of its month or
        year)."""
        field = "registrationPeriod.end"
        _first, last = self._span(text, field)
        if last == dt.date.max:
            raise _Problem(
                field,
                "the last day a date can hold, so no day follows it: leave end out for a "
                "registration that has not ended",
            )
        return last + dt.timedelta(days=1)

    def _read_medication(self, res: _Node, full_url: str | None) -> None:
        codes = self._codes(res.node("code"))
        med_id = res.ident("id")
        if med_id is not None:
            self.medications[f"Medication/{med_id}"] = codes
        if full_url:
            self.medications[full_url] = codes

    def _read_condition(self, res: _Node, _full_url: str | None) -> None:
        ver = _status_code(res.node("verificationStatus"))
        if ver in SKIP_VERIFICATION:
            self.skipped[f"Condition: {ver}"] += 1
            return
        pid = self._subject(res, "subject")
        date = self._first_date(
            pid, res, ("onsetDateTime", "onsetPeriod.start", "recordedDate"), "Condition"
        )
        if date is None:
            return
        if res.has("abatementDateTime") or res.has("abatementPeriod"):
            self.skipped["Condition abatement date (not read; see docs/sources.md)"] += 1
        for system, code in self._codes(res.node("code")):
            self._event(pid, date, system, code)

    def _read_observation(self, res: _Node, _full_url: str | None) -> None:
        if self._skip_status(res, "Observation"):
            return
        pid = self._subject(res, "subject")
        date = self._first_date(
            pid,
            res,
            ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"),
            "Observation",
        )
        if date is None:
            return
        quantity = res.node("valueQuantity")
        value, unit = self._quantity(quantity)
        for system, code in self._codes(res.node("code")):
            self._event(pid, date, system, code, value, unit, quantity)
        # A coded value (e.g. smoking status "Smoker") is a code in its own right.
        for system, code in self._codes(res.node("valueCodeableConcept")):
            self._event(pid, date, system, code)
        # Panels (blood pressure): each component is its own coded value.
        for comp in res.nodes("component"):
            c_quantity = comp.node("valueQuantity")
            c_value, c_unit = self._quantity(c_quantity)
            for system, code in self._codes(comp.node("code")):
                self._event(pid, date, system, code, c_value, c_unit, c_quantity)

    def _read_procedure(self, res: _Node, _full_url: str | None) -> None:
        if self._skip_status(res, "Procedure"):
            return
        pid = self._subject(res, "subject")
        date = self._first_date(
            pid, res, ("performedDateTime", "performedPeriod.start"), "Procedure"
        )
        if date is None:
            return
        for system, code in self._codes(res.node("code")):
            self._event(pid, date, system, code)

    def _read_immunization(self, res: _Node, _full_url: str | None) -> None:
        if self._skip_status(res, "Immunization"):
            return
        pid = self._subject(res, "patient")
        date = self._first_date(pid, res, ("occurrenceDateTime", "recorded"), "Immunization")
        if date is None:
            return
        for system, code in self._codes(res.node("vaccineCode")):
            self._event(pid, date, system, code)

    def _read_medicationrequest(self, res: _Node, _full_url: str | None) -> None:
        if self._skip_status(res, "MedicationRequest"):
            return
        intent = res.text("intent")
        if intent in SKIP_INTENT:
            self.skipped[f"MedicationRequest intent {intent}"] += 1
            return
        pid = self._subject(res, "subject")
        date = self._first_date(pid, res, ("authoredOn",), "MedicationRequest")
        if date is None:
            return
        for system, code in self._medication_codes(res):
            self._medication(pid, date, system, code)

    def _read_medicationstatement(self, res: _Node, _full_url: str | None) -> None:
        if self._skip_status(res, "MedicationStatement"):
            return
        pid = self._subject(res, "subject")
        date = self._first_date(
            pid,
            res,
            ("effectiveDateTime", "effectivePeriod.start", "dateAsserted"),
            "MedicationStatement",
        )
        if date is None:
            return
        for system, code in self._medication_codes(res):
            self._medication(pid, date, system, code)

    # --- pieces -----------------------------------------------------------------------------

    def _skip_status(self, res: _Node, rtype: str) -> bool:
        status = res.text("status")
        if status in SKIP_STATUS[rtype]:
            self.skipped[f"{rtype}: {status}"] += 1
            return True
        return False

    def _subject(self, res: _Node, field: str) -> int:
        ref = res.node(field)
        text = ref.ident("reference") if ref is not None else None
        if not text:
            raise _Problem(field, "missing patient reference")
        pid = self.keys.get(text)
        if pid is None:
            key = _patient_key(text)
            if key is None:
                raise _Problem(f"{field}.reference", "does not refer to a Patient")
            pid = self.keys.get(key)
            if pid is None:
                raise _Problem(f"{field}.reference", "no such Patient in the data being loaded")
        return pid

    def _medication_codes(self, res: _Node) -> list[tuple[str, str]]:
        if "medicationCodeableConcept" in res.data:
            return self._codes(res.node("medicationCodeableConcept"))
        ref = res.node("medicationReference")
        text = ref.ident("reference") if ref is not None else None
        if text is not None:
            if text.startswith("#"):
                for contained in res.nodes("contained"):
                    if contained.ident("id") == text[1:]:
                        return self._codes(contained.node("code"))
            elif text in self.medications:
                return self.medications[text]
        self.skipped["medication reference not found in the data"] += 1
        return []

    def _codes(self, concept: _Node | None) -> list[tuple[str, str]]:
        if concept is None:
            return []
        out: list[tuple[str, str]] = []
        for coding in concept.nodes("coding"):
            uri, code = coding.text("system"), coding.text("code")
            if uri is None or code is None:
                self.skipped["coding without a system or code"] += 1
                continue
            system = system_of(uri)
            if system is None:
                self.skipped["coding in a system fedqi does not read"] += 1
                continue
            if not CODE_RE.match(code):
                self.skipped["code fedqi cannot hold (over 32 characters or odd characters)"] += 1
                continue
            if (system, code) not in out:
                out.append((system, code))
        return out

    def _quantity(self, quantity: _Node | None) -> tuple[float | None, str | None]:
        if quantity is None or "value" not in quantity.data:
            return None, None
        value = quantity.number("value")
        if value is None:
            raise _Problem(quantity.at("value"), "null where FHIR has a number")
        unit = quantity.ident("code") or quantity.ident("unit")
        if unit is not None and len(unit) > MAX_UNIT:
            self.skipped["unit over 16 characters (value kept, unit dropped)"] += 1
            unit = None
        return value, unit

    def _first_date(
        self, pid: int, res: _Node, fields: Iterable[str], rtype: str
    ) -> dt.date | None:
        """Patient ``pid``'s record's date, from the first of ``fields`` it has. A record dated
        before the patient's birth cannot be (whether or not the Patient has a registration
        period) and is refused; a partial date is so only if all of its year or month is, and
        one that covers the birth date is read as the birth date (never as an earlier day)."""
        for name in fields:
            *parents, last = name.split(".")
            node: _Node | None = res
            for part in parents:
                node = node.node(part) if node is not None else None
            value = node.text(last) if node is not None else None
            if value is not None:
                date = self._date(value, name)
                patient = self.patients[pid]
                if _fhir_date(value)[1] < patient.birth_date:
                    # Named by where they are, not by their ids (a patient's identifier).
                    raise _Problem(
                        name,
                        f"this {rtype} is dated before the birthDate of its Patient "
                        f"({patient.where}): a record cannot precede the patient's birth; "
                        "nothing was loaded",
                    )
                # A partial date reads as its first day; in the year or month of birth that
                # day may precede the birth, so it is read as the birth date instead.
                return max(date, patient.birth_date)
        self.skipped[f"{rtype} without a date"] += 1
        return None

    def _date(self, text: str, field: str, *, date_only: bool = False) -> dt.date:
        """A FHIR date, or (unless ``date_only``: birthDate) dateTime, as its first day (a
        partial date so read is counted)."""
        first, last = self._span(text, field, date_only=date_only)
        if first != last:
            self.converted["partial date: first day of the month or year used"] += 1
        return first

    def _span(self, text: str, field: str, *, date_only: bool = False) -> tuple[dt.date, dt.date]:
        """The first and last day a FHIR date or dateTime can mean. The error names the forms,
        never the text (a patient's date)."""
        try:
            first, last, has_time = _fhir_date(text)
        except _NotAFhirDate:
            forms = DATE_FORMS if date_only else DATE_TIME_FORMS
            raise _Problem(field, f"not a FHIR date ({forms})") from None
        except ValueError as exc:  # "day is out of range for month": no value in it
            raise _Problem(field, f"not a valid date ({exc})") from None
        if has_time and date_only:
            raise _Problem(field, f"not a FHIR date ({DATE_FORMS})")
        return first, last

    def _seen(self, pid: int, date: dt.date) -> None:
        patient = self.patients[pid]
        if patient.first_record is None or date < patient.first_record:
            patient.first_record = date

    def _event(
        self,
        pid: int,
        date: dt.date,
        system: str,
        code: str,
        value: float | None = None,
        unit: str | None = None,
        quantity: _Node | None = None,
    ) -> None:
        new_value, new_unit = normalise_value(system, code, value, unit)
        if new_value is not None and not math.isfinite(new_value) and quantity is not None:
            # HbA1c % converted to mmol/mol: a finite percentage can overflow the conversion.
            raise _Problem(
                quantity.at("value"), "not a finite number once converted from % to mmol/mol"
            )
        if new_unit != unit:
            self.converted["HbA1c % converted to mmol/mol"] += 1
        self._seen(pid, date)
        self.writer.add(
            "events",
            {
                "patient_id": pid,
                "date": date,
                "system": system,
                "code": code,
                "value": new_value,
                "unit": new_unit,
            },
        )

    def _medication(self, pid: int, date: dt.date, system: str, code: str) -> None:
        self._seen(pid, date)
        self.writer.add(
            "medications", {"patient_id": pid, "date": date, "system": system, "code": code}
        )

    def finish(self) -> None:
        self.writer.flush()
        for pid, p in self.patients.items():
            # A partial date in the month or year of birth can fall before the birth date:
            # registration never starts before birth.
            start = p.registration_start or max(p.first_record or p.birth_date, p.birth_date)
            if p.registration_start is None:
                self.converted["registration start taken from the first record"] += 1
                if p.registration_end is not None and p.registration_end <= start:
                    raise SourceError(
                        f"{p.where} (Patient), field registrationPeriod.end: before the "
                        "patient's first record, which starts the registration (the period "
                        "has no start); a registration cannot end before it starts, so "
                        "nothing was loaded"
                    )
            self.writer.add(
                "patients",
                {
                    "patient_id": pid,
                    "local_ref": p.local_ref,
                    "birth_date": p.birth_date,
                    "sex": p.sex,
                    "registration_start": start,
                    "registration_end": p.registration_end,
                    "death_date": p.death_date,
                },
            )
        self.writer.flush()


class _NotAFhirDate(ValueError):
    pass


@functools.lru_cache(maxsize=1 << 16)  # an export repeats a few thousand dates many times
def _fhir_date(text: str) -> tuple[dt.date, dt.date, bool]:
    """The first and last day a FHIR date or dateTime can mean (a partial date, ``1950`` or
    ``1950-03``, stands for its whole year or month), and whether it has a time.
    :class:`_NotAFhirDate` if it is in none of FHIR's forms, ValueError if its day cannot be."""
    m = FHIR_DATE_RE.fullmatch(text)
    if not m:
        raise _NotAFhirDate
    year, month, day, time = m.groups()
    first = dt.date(int(year), int(month or 1), int(day or 1))
    if day is not None:
        last = first
    elif month is not None:
        last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    else:
        last = first.replace(month=12, day=31)
    return first, last, time is not None


def _status_code(concept: _Node | None) -> str | None:
    if concept is not None:
        for coding in concept.nodes("coding"):
            code = coding.text("code")
            if code is not None:
                return code
    return None


def _patient_key(reference: str) -> str | None:
    """``Patient/<id>`` from a relative or absolute reference (history suffix dropped)."""
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == "Patient":
        return f"Patient/{parts[-1]}"
    return None
