"""Stored statements: the engine's compiled SQL for a DuckDB practice, kept in the agent home.

Compiling the catalogue's query needs SQLAlchemy and duckdb_engine (about 0.2 s of CPU to
import, and as much again to open an engine and to build and compile the plan), which is most of
a ``preview`` beside the query itself (docs/benchmarks.md). The compiled statement does not
depend on the period end: every date bound is a bound parameter named after it
(``end__period_end``, ``end__m_15``, ``end__age_80``; ``dates.bound_value``). So it is compiled
once, stored in ``<home>/statements/``, and run again for any period on a plain ``duckdb``
connection, its date bounds recomputed from the period end and every other parameter as stored.
With it is stored, compiled, the check that refuses a practice database holding a row dated
before its patient's birth (:func:`agent.sources.birth.practice_check`), which runs first on the
same connection, as opening the database through SQLAlchemy runs it (agent/engine/compute.py),
unless the file is the one last found clean and has not changed since (agent/engine/clean.py).

A statement is stored under a key (:func:`statement_key`) that names everything the SQL depends
on: the source of the ``agent`` and ``protocol`` packages (every ``*.py`` file's bytes), the
versions of SQLAlchemy, duckdb_engine and DuckDB, the catalogue's SHA-256, the indicators asked
for and the code-matching strategy. A change to any of them is another key, so the stale
statement is never read (and is pruned; the newest :data:`KEEP` are kept). A statement holds no
patient data: the SQL, the catalogue's codes and numbers, and the names of the tables it reads.
A file that does not parse, or whose digest does not match its content, is read as absent and
written again.

Only the embedded default, a DuckDB file, takes this path; SQLite, PostgreSQL and OMOP sources
compile every time (agent/engine/compute.py).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import SourceError
from agent.sources.birth import PRACTICE_DATED, BirthCheck, count_before_birth, practice_error
from agent.sources.form import form_error, malformed
from protocol.catalogue import Catalogue
from protocol.disclosure import RawCell

from .dates import END_PARAM_PREFIX, bound_value

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .compiler import CodeMatch

STATEMENTS_DIR = "statements"
FORMAT = 2  # 2: with the before-birth check
KEEP = 8  # statements kept per agent home (a catalogue update or an upgrade makes a new one)
# The period end a statement is compiled for: any will do, its date bounds are parameters.
_ANY_END = dt.date(2000, 1, 31)
# What a stored constant may be: the codes string, numbers and labels of the catalogue.
_CONSTANT_TYPES = (str, int, float, bool)
# The newest dated record of the practice (agent.periods.stale_source): a practice-level date.
NEWEST_SQL = (
    "SELECT max(d) FROM (SELECT max(date) AS d FROM events "
    "UNION ALL SELECT max(date) AS d FROM medications)"
)


@dataclass(frozen=True)
class Statement:
    """A compiled counts query: ``sql`` with positional parameters ``$1, $2, ...`` named by
    ``names``; the values of those not named ``end__...`` in ``constants``. ``before_birth``:
    the before-birth check's statements, compiled (no parameters)."""

    key: str
    sql: str
    names: tuple[str, ...]
    constants: dict[str, Any]
    indicators: tuple[str, ...]
    tables: tuple[str, ...]
    before_birth: BirthCheck[str]

    def params(self, period_end: dt.date) -> list[Any]:
        """The statement's parameters for ``period_end``, in position order."""
        out: list[Any] = []
        for name in self.names:
            if name.startswith(END_PARAM_PREFIX):
                out.append(bound_value(name[len(END_PARAM_PREFIX) :], period_end))
            else:
                out.append(self.constants[name])
        return out

    def body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "key": self.key,
            "sql": self.sql,
            "names": list(self.names),
            "constants": self.constants,
            "indicators": list(self.indicators),
            "tables": list(self.tables),
            "before_birth": {"persons": self.before_birth.persons, "rows": self.before_birth.rows},
        }


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """SHA-256 over the source of the packages the SQL comes from and the libraries that
    compile and run it: a changed compiler, schema, catalogue model or library is another key."""
    from importlib.metadata import version

    roots = [Path(importlib.import_module(p).__file__ or "").parent for p in ("agent", "protocol")]
    return fingerprint(
        roots, [f"{d}={version(d)}" for d in ("sqlalchemy", "duckdb_engine", "duckdb")]
    )


def fingerprint(roots: Sequence[Path], versions: Sequence[str]) -> str:
    """SHA-256 over every ``*.py`` file under ``roots`` (its path and bytes) and ``versions``."""
    h = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root.parent).as_posix().encode("utf-8") + b"\0")
            h.update(path.read_bytes() + b"\0")
    for text in versions:
        h.update(text.encode("utf-8") + b"\0")
    return h.hexdigest()


def statement_key(
    catalogue: Catalogue, indicators: Sequence[str] | None, code_match: CodeMatch = "join"
) -> str:
    parts = [
        FORMAT,
        code_fingerprint(),
        "duckdb",
        catalogue.sha256(),
        None if indicators is None else list(indicators),
        code_match,
    ]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


def load(home: Path, key: str) -> Statement | None:
    """The statement stored under ``key``, or None (absent, unreadable or not intact)."""
    try:
        data = json.loads((home / STATEMENTS_DIR / f"{key}.json").read_text("utf-8"))
        body, digest = data["body"], data["sha256"]
        if body.get("format") != FORMAT or body.get("key") != key or _digest(body) != digest:
            return None
        statement = Statement(
            key=key,
            sql=str(body["sql"]),
            names=tuple(str(n) for n in body["names"]),
            constants=dict(body["constants"]),
            indicators=tuple(str(i) for i in body["indicators"]),
            tables=tuple(str(t) for t in body["tables"]),
            before_birth=BirthCheck(
                dict(PRACTICE_DATED),
                str(body["before_birth"]["persons"]),
                {label: str(body["before_birth"]["rows"][label]) for label in PRACTICE_DATED},
            ),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if any(
        not n.startswith(END_PARAM_PREFIX) and n not in statement.constants for n in statement.names
    ):
        return None
    return statement


def save(home: Path, statement: Statement) -> None:
    """Store ``statement`` (atomically, owner-only), keeping the newest :data:`KEEP`. Best
    effort: an agent home that cannot be written only means compiling again next time."""
    folder = home / STATEMENTS_DIR
    body = statement.body()
    text = json.dumps({"body": body, "sha256": _digest(body)})
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        write_private(folder / f"{statement.key}.json", text)
        stored = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in stored[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        return


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file in its folder, then renamed over
    it), owner-only: a reader finds the old file or the new one, never part of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def compile_statement(
    engine: sa.Engine,
    catalogue: Catalogue,
    indicators: Sequence[str] | None,
    key: str,
    code_match: CodeMatch = "join",
) -> Statement:
    """Compile the counts query on ``engine``'s (connected, DuckDB) dialect, for any period end.

    Raises ValueError if a parameter that is not a named date bound holds a date (it would be
    the compiled period's, wrong for another) or a value that is not a plain constant."""
    from agent.sources import schema
    from agent.sources.birth import practice_check

    from .compiler import plan_for

    plan = plan_for(engine.dialect, catalogue, indicators, _ANY_END, code_match)
    # render_postcompile: an IN list's values become positional parameters of their own.
    compiled = plan.counts_query().compile(
        dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
    )
    if compiled.positiontup is None:
        raise ValueError(f"{engine.dialect.name}: the compiled statement is not positional")
    processors = getattr(compiled, "_bind_processors", {})
    constants: dict[str, Any] = {}
    for name, value in compiled.params.items():
        if name.startswith(END_PARAM_PREFIX):
            bound_value(name[len(END_PARAM_PREFIX) :], _ANY_END)  # a known bound
            continue
        if name in processors:
            value = processors[name](value)
        if isinstance(value, dt.date) or not isinstance(value, _CONSTANT_TYPES):
            raise ValueError(f"parameter {name} holds {type(value).__name__}, not a constant")
        constants[name] = value
    return Statement(
        key=key,
        sql=str(compiled),
        names=tuple(compiled.positiontup),
        constants=constants,
        indicators=tuple(i.id for i in plan.indicators),
        tables=tuple(schema.TABLES),
        before_birth=practice_check(engine.dialect.name).map(
            lambda q: str(q.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
        ),
    )


def run(
    path: Path,
    statement: Statement,
    catalogue: Catalogue,
    period_end: dt.date,
    *,
    refuse_before_birth: bool = True,
    home: Path | None = None,
) -> tuple[list[RawCell], dt.date | None]:
    """Run ``statement`` for ``period_end`` on the DuckDB file ``path`` (read-only): the same
    cells as ``compute_cells``, and the date of the newest dated record (:data:`NEWEST_SQL`,
    on the same connection: under a millisecond, DuckDB answers it from its column statistics).
    A file that cannot be read, lacks a canonical table or holds a row dated before its
    patient's birth (checked first, by the statement's ``before_birth``, unless
    ``refuse_before_birth`` is false, as :func:`agent.engine.compute.open_source` takes it) is
    one SourceError line, worded as for every other way of opening it. Given the agent
    ``home``, the check is skipped for the file last found clean there, unchanged since
    (agent/engine/clean.py); its identity is read once the file is open, so while DuckDB's lock
    keeps any writer out."""
    import duckdb

    from . import _cells

    where = str(path)
    try:
        con = duckdb.connect(where, read_only=True)
    except duckdb.Error as exc:
        raise SourceError.cannot_open(where, exc) from None
    try:
        present = {
            str(r[0])
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            ).fetchall()
        }
        missing = [t for t in statement.tables if t not in present]
        if missing:
            raise SourceError.missing_tables(where, missing)
        try:
            if refuse_before_birth:

                def check() -> None:
                    problems = malformed("duckdb", lambda q: con.execute(q).fetchall())
                    error = form_error(f"source.url: the practice database {where} has ", problems)
                    if error is None:
                        counts = count_before_birth(
                            statement.before_birth, lambda q: con.execute(q).fetchone()
                        )
                        error = practice_error(where, counts)
                    if error is not None:
                        raise error

                if home is None:
                    check()
                else:
                    from . import clean

                    clean.refuse_unless_clean(home, clean.identity(path, "duckdb"), check)
            rows = con.execute(statement.sql, statement.params(period_end)).fetchall()
            row = con.execute(NEWEST_SQL).fetchone()
        except duckdb.Error as exc:
            raise SourceError.cannot_read(exc) from None
    finally:
        con.close()
    indicators = [catalogue.indicator(i) for i in statement.indicators]
    return _cells(catalogue, indicators, rows), (row[0] if row else None)
