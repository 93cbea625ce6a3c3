"""CSV extracts, the shape a clinical system's reporting tool exports: one file per table
(``patients.csv``, ``events.csv``, ``medications.csv``), a header row, ISO or UK day-first
dates as declared. Read row by row and inserted in batches inside one transaction, so memory
does not grow with the file and a bad row leaves the store untouched.

Only the patient ids and their birth dates (to catch duplicates, events for unknown patients
and events dated before birth) are held in memory: they grow with the number of patients, not
with the size of the files.
"""

from __future__ import annotations

import codecs
import csv
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine

from agent.errors import SourceError

from .common import (
    CODE_RE,
    DATE_FORMATS,
    MAX_UNIT,
    BatchWriter,
    LoadReport,
    normalise_value,
    parse_date,
    replacing,
    system_of,
)

# Sex as extracts write it -> F/M/U. The digits are the NHS Data Dictionary person stated
# gender codes (1 male, 2 female, 9 indeterminate, 0 / X not known).
SEX_CODES: dict[str, str] = {
    "f": "F",
    "female": "F",
    "2": "F",
    "m": "M",
    "male": "M",
    "1": "M",
    "u": "U",
    "unknown": "U",
    "not known": "U",
    "i": "U",
    "indeterminate": "U",
    "9": "U",
    "0": "U",
    "x": "U",
}

FILES = ("patients", "events", "medications")


@dataclass(frozen=True)
class TableSpec:
    required: tuple[str, ...]
    optional: tuple[str, ...]
    default_system: str | None = None


SPECS: dict[str, TableSpec] = {
    "patients": TableSpec(
        required=("patient_id", "birth_date", "sex", "registration_start"),
        optional=("local_ref", "registration_end", "death_date"),
    ),
    "events": TableSpec(
        required=("patient_id", "date", "code"),
        optional=("system", "value", "unit"),
        default_system="snomedct",
    ),
    "medications": TableSpec(
        required=("patient_id", "date", "code"),
        optional=("system",),
        default_system="dmd",
    ),
}

MAX_ID = 2**63 - 1


class _RowError(ValueError):
    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


def load_csv(directory: Path, engine: Engine, *, date_format: str = "iso") -> LoadReport:
    """Replace the store's contents with the extract in ``directory`` (one transaction)."""
    if date_format not in DATE_FORMATS:
        raise SourceError(f"date format {date_format!r}: use one of {', '.join(DATE_FORMATS)}")
    if not directory.is_dir():
        what = "not a directory" if directory.exists() else "no such directory"
        raise SourceError(f"{directory}: {what} (expected {', '.join(FILES)} .csv)")
    paths = {name: directory / f"{name}.csv" for name in FILES}
    for path in paths.values():
        if not path.is_file():
            raise SourceError(
                f"{path}: not found (an extract has {', '.join(f + '.csv' for f in FILES)}; "
                "events.csv or medications.csv with only its header row is fine)"
            )
    converted: Counter[str] = Counter()
    with replacing(engine) as conn:
        writer = BatchWriter(conn, iso_dates=True)
        seen: dict[int, int] = {}  # patient_id -> line
        births: dict[int, str] = {}  # patient_id -> birth_date (ISO text)
        for row in _rows(paths["patients"], "patients", _patient_parser(date_format)):
            line, values = row
            pid = values["patient_id"]
            if pid in seen:
                raise SourceError(
                    f"{paths['patients']} line {line}, column patient_id: duplicate patient id "
                    f"(first on line {seen[pid]})"
                )
            seen[pid] = line
            births[pid] = values["birth_date"]
            writer.add("patients", values)
        if not seen:
            # A load replaces the store's contents: a cut or empty extract would empty it.
            raise SourceError(
                f"{paths['patients']}: no patients, only a header row (an extract of a practice "
                "has its patients; a load replaces the store's contents); nothing was loaded"
            )
        for name in ("events", "medications"):
            parse = _clinical_parser(name, date_format, births, seen, converted)
            for _line, clinical in _rows(paths[name], name, parse):
                writer.add_tuple(name, clinical)
        writer.flush()
        counts = writer.counts
    return LoadReport(
        source=f"csv:{directory}",
        patients=counts["patients"],
        events=counts["events"],
        medications=counts["medications"],
        converted=dict(converted),
    )


Parser = Callable[[dict[str, str]], dict[str, Any]]
Row = TypeVar("Row")


def _rows(
    path: Path, name: str, parse: Callable[[dict[str, str]], Row]
) -> Iterator[tuple[int, Row]]:
    spec = SPECS[name]
    with path.open(newline="", encoding="utf-8-sig") as fh:
        # strict: a quoted field still open at the end of the file is an error, not a value
        # (and text after a closing quote is refused, where it would be run into the value).
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise SourceError(f"{path} line 1: empty file (expected a header row)") from None
        except UnicodeDecodeError:
            raise SourceError(_not_utf8(path)) from None
        except csv.Error as exc:
            raise SourceError(f"{path} line 1: cannot read the header ({exc})") from None
        columns = _columns(path, spec, header)
        width = len(columns)
        line = reader.line_num  # the last line read: a record starts on the line after it
        try:
            for fields in reader:
                # A record that ends on a later line than it starts holds a quoted field that
                # ran on: its quote is not closed on its line (no value holds a line break).
                if reader.line_num != line + 1:
                    raise SourceError(_unclosed_quote(path, line + 1))
                line = reader.line_num
                if not fields:
                    continue  # a blank line
                if len(fields) != width:
                    raise SourceError(
                        f"{path} line {line}: {len(fields)} fields, the header has {width}"
                    )
                record = {c: f.strip() for c, f in zip(columns, fields, strict=True)}
                try:
                    yield line, parse(record)
                except _RowError as exc:
                    raise SourceError(f"{path} line {line}, column {exc.column}: {exc}") from None
        except csv.Error as exc:
            # The file ended inside a quoted field, or a quote ran onto later lines before
            # failing: name the line the quote opens on, not where the reader gave up.
            if reader.line_num != line + 1 or "unexpected end of data" in str(exc):
                raise SourceError(_unclosed_quote(path, line + 1)) from None
            raise SourceError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from None
        except UnicodeDecodeError:
            raise SourceError(_not_utf8(path)) from None


def _not_utf8(path: Path) -> str:
    """The file's first byte that is not UTF-8, named by its line. The text reader decodes
    ahead of the CSV reader, in blocks, so neither knows the line: the file is read again, as
    bytes, up to that byte (on this error only)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, reason = 1, "not UTF-8"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            held = len(decoder.getstate()[0])  # bytes of a character the last block split
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += chunk.count(b"\n", 0, max(exc.start - held, 0))
                reason = exc.reason
                break
            line += chunk.count(b"\n")
        else:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                reason = exc.reason
    return f"{path} line {line}: not UTF-8 text ({reason}); save the extract as UTF-8"


def _columns(path: Path, spec: TableSpec, header: list[str]) -> list[str]:
    """The header's column names (case-insensitive); SourceError for an unknown, repeated or
    missing one."""
    columns = [h.strip().lower() for h in header]
    known = set(spec.required) | set(spec.optional)
    listed = ", ".join(spec.required + spec.optional)
    if not known & set(columns):
        # Nothing on line 1 names a column: most likely data, with the header row left out. Its
        # values are a patient's (an id, a date of birth): never quoted.
        raise SourceError(
            f"{path} line 1: names none of the columns (is the header row missing? line 1 "
            f"must name them: {listed})"
        )
    for i, col in enumerate(columns, 1):
        if col not in known:
            # A name holding a digit may be a value (a header row cut short, data in its place):
            # named by its place then, not quoted.
            shown = f"{i} (its name holds digits)" if any(c.isdigit() for c in col) else repr(col)
            raise SourceError(f"{path} line 1: unknown column {shown} (known: {listed})")
    dupes = [c for c, n in Counter(columns).items() if n > 1]
    if dupes:
        raise SourceError(f"{path} line 1: column {dupes[0]!r} appears twice")
    for col in spec.required:
        if col not in columns:
            raise SourceError(f"{path} line 1: missing required column {col!r}")
    return columns


def _unclosed_quote(path: Path, line: int) -> str:
    return (
        f"{path} line {line}: a quoted field is not closed (its quote opens on this line; a "
        "value cannot run onto the next line); nothing was loaded"
    )


def _required(record: dict[str, str], col: str) -> str:
    text = record.get(col, "")
    if not text:
        raise _RowError(col, "empty (a value is required)")
    return text


# Parsed dates as ISO text, by (format, text): an extract repeats a few thousand distinct dates
# millions of times, and the store takes ISO text as it is.
_DATES: dict[tuple[str, str], str] = {}


def _date(record: dict[str, str], col: str, date_format: str, *, required: bool) -> Any:
    text = record.get(col, "")
    if not text:
        if required:
            raise _RowError(col, "empty (a date is required)")
        return None
    iso = _DATES.get((date_format, text))
    if iso is None:
        try:
            iso = parse_date(text, date_format).isoformat()
        except ValueError as exc:
            # The message names no date (parse_date's never does): a patient's date of birth.
            raise _RowError(
                col, f"{exc}; the load was declared --date-format {date_format}"
            ) from None
        if len(_DATES) > 100_000:
            _DATES.clear()
        _DATES[(date_format, text)] = iso
    return iso


#: A value as an extract writes it: a decimal number in ASCII, with an optional exponent
#: (float() would also read "1_000", "nan", "inf" and another script's digits).
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _patient_id(record: dict[str, str]) -> int:
    # No message here quotes the id: it is the patient's (the line and column say where).
    text = _required(record, "patient_id")
    # The digits 0-9 only: int() would also read "1_0" as 10, a sign, spaces, or another
    # script's digits (an ASCII string's isdigit() is true only for 0-9, and it is the cheaper).
    if not (text.isascii() and text.isdigit()):
        raise _RowError("patient_id", "not a whole number in the digits 0-9")
    if len(text) > 19 or int(text) > MAX_ID:
        raise _RowError("patient_id", "out of range (0..2^63-1)")
    return int(text)


def _patient_parser(date_format: str) -> Parser:
    def parse(record: dict[str, str]) -> dict[str, Any]:
        sex_text = _required(record, "sex")
        sex = SEX_CODES.get(sex_text.lower())
        if sex is None:
            raise _RowError(
                "sex",
                "unknown sex code (use F/M/U, Female/Male/Unknown, or the NHS codes 2/1/9/0/X)",
            )
        local_ref = record.get("local_ref") or None
        if local_ref is not None and len(local_ref) > 64:
            raise _RowError("local_ref", "longer than 64 characters")
        start = _date(record, "registration_start", date_format, required=True)
        end = _date(record, "registration_end", date_format, required=False)
        if end is not None and end <= start:
            raise _RowError("registration_end", "not after registration_start")
        # ISO text compares as the dates do. Dates that cannot be are refused, not loaded:
        # a rule's age or registration window would read them silently.
        birth = _date(record, "birth_date", date_format, required=True)
        if birth > start:
            raise _RowError("birth_date", "after registration_start (registered before birth)")
        death = _date(record, "death_date", date_format, required=False)
        if death is not None and death < birth:
            raise _RowError("death_date", "before birth_date")
        return {
            "patient_id": _patient_id(record),
            "local_ref": local_ref,
            "birth_date": birth,
            "sex": sex,
            "registration_start": start,
            "registration_end": end,
            "death_date": death,
        }

    return parse


def _clinical_parser(
    name: str,
    date_format: str,
    births: dict[int, str],
    patient_lines: dict[int, int],
    converted: Counter[str],
) -> Callable[[dict[str, str]], tuple[Any, ...]]:
    spec = SPECS[name]
    assert spec.default_system is not None
    default_system = spec.default_system
    with_value = name == "events"
    systems: dict[str, str] = {}  # as written -> fedqi system (few distinct values)
    codes: set[str] = set()  # codes already checked

    def parse(record: dict[str, str]) -> Any:
        pid = _patient_id(record)
        birth = births.get(pid)
        if birth is None:
            raise _RowError("patient_id", "no such patient in patients.csv")
        system_text = record.get("system", "") or default_system
        system = systems.get(system_text)
        if system is None:
            system = system_of(system_text)
            if system is None:
                raise _RowError(
                    "system",
                    "unknown code system "
                    "(snomedct, dmd, loinc, rxnorm, cvx, icd10, omop or a FHIR system URI)",
                )
            systems[system_text] = system
        code = _required(record, "code")
        if code not in codes:
            if not CODE_RE.match(code):
                raise _RowError("code", "not a code (1-32 letters, digits, '.', '-')")
            codes.add(code)
        date = _date(record, "date", date_format, required=True)
        # ISO text compares as the dates do (both are whole days: the format has no partial
        # date). A row dated before birth cannot be, and a rule would count it silently.
        if date < birth:
            raise _RowError(
                "date",
                f"before the birth_date of its patient (patients.csv line "
                f"{patient_lines[pid]}): a record cannot precede the patient's birth; "
                "nothing was loaded",
            )
        if not with_value:
            return (pid, date, system, code)  # agent.sources.schema.medications column order
        value_text = record.get("value", "")
        value: float | None = None
        if value_text:
            if not _NUMBER_RE.fullmatch(value_text):
                raise _RowError("value", "not a number (digits 0-9, a '.', an exponent)")
            value = float(value_text)
            if not math.isfinite(value):
                raise _RowError("value", "not a finite number (too large for a double)")
        unit = record.get("unit") or None
        if unit is not None and len(unit) > MAX_UNIT:
            raise _RowError("unit", f"longer than {MAX_UNIT} characters")
        new_value, new_unit = normalise_value(system, code, value, unit)
        if new_value is not None and not math.isfinite(new_value):
            # HbA1c % converted to mmol/mol: a finite percentage can overflow the conversion.
            raise _RowError("value", "not a finite number once converted from % to mmol/mol")
        if new_unit != unit:
            converted["HbA1c % converted to mmol/mol"] += 1
        return (pid, date, system, code, new_value, new_unit)  # agent.sources.schema.events order

    return parse
