"""The practice database file last found clean of records dated before birth and of values not in
their form, kept in the agent home so that the check (:mod:`agent.sources.birth`,
:mod:`agent.sources.form`) is paid once per change of the file, not by every command that
computes.

The check reads every row of ``events`` and ``medications`` (about 60 ms of CPU on DuckDB and
1.6 s on SQLite for 30,000 patients; docs/benchmarks.md), while a practice's database changes
far less often than the agent reads it. So, for a SQLite or DuckDB file, the identity of the
database found clean is recorded in ``<home>/clean-source.json`` (beside ``statements/``,
written atomically, owner-only): its resolved path and, for the file and each file that holds
its content beside it (DuckDB ``<file>.wal``, ``.wal.checkpoint`` and ``.wal.recovery``;
SQLite ``<file>-wal`` and ``<file>-journal``), whether it is there and its size, modification
and change times (nanoseconds), inode and device; and the version of the check passed
(:data:`agent.sources.birth.PRACTICE_CHECK_VERSION`). A command whose database has that identity
skips the check; any other runs it, and records the identity only if nothing is wrong. A
database that failed is never recorded.

    identity(path, kind) -> Identity | None      read before the check
    refuse_unless_clean(home, identity, check)   skip, or check and record

Races. The identity is read before the check reads the database, so a write during the check
changes the file's identity after the one recorded and the next command checks again. A write
leaves the same identity only if it keeps the size and lands in the same tick of the file
system's clock as the write before it; so a file modified or changed less than
:data:`RACY_NS` before its identity was read is not recorded (it is checked again next time),
as git treats a "racily clean" file: any later write then has a modification time after the
recorded one (or, if that is set back, a change time). On Windows the "change time" is the
file's creation time, so there only its size, modification time and file index tell. (This
assumes the file system's clock is the machine's, within that margin.) Where the identity
matches, the check is skipped as of when it was read, as a check that ran would hold only
until it finished: a command reads the database after either.

A file that cannot be identified (not a regular file; a SQLite ``file:`` URI) is checked every
time, and so is a PostgreSQL database, which has no file: nothing it offers cheaply is a sound
marker of any change to its tables (its write-ahead position is the cluster's, and unlogged
tables write none). A record that cannot be read, or is not one, is ignored: the check runs.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.sources.birth import PRACTICE_CHECK_VERSION

from .stored import write_private

RECORD = "clean-source.json"
#: The files beside a database that hold part of its content, by kind.
SIDE_FILES = {
    "duckdb": (".wal", ".wal.checkpoint", ".wal.recovery"),
    "sqlite": ("-wal", "-journal"),
}
#: A file modified less than this before its identity was read is not recorded: 2 s, the
#: coarsest timestamp of the common file systems (FAT's).
RACY_NS = 2_000_000_000


def _clock() -> int:
    """Now, in nanoseconds (a function, so that tests can move it)."""
    return time.time_ns()


@dataclass(frozen=True)
class Identity:
    """A database file's identity as recorded (``body``), and whether it is too recent to be."""

    body: dict[str, Any]
    racy: bool


def identity(path: Path, kind: str) -> Identity | None:
    """The identity of the ``kind`` ("sqlite" or "duckdb") database file ``path`` now, or None
    if it has none (not a regular file, or not to be read)."""
    now = _clock()
    files: dict[str, list[int] | None] = {}
    try:
        resolved = path.resolve(strict=True)
        for suffix in ("", *SIDE_FILES[kind]):
            try:
                st = os.stat(f"{resolved}{suffix}")
            except FileNotFoundError:
                if not suffix:
                    return None
                files[suffix] = None
                continue
            if not stat.S_ISREG(st.st_mode):
                return None
            files[suffix] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
    except (OSError, KeyError, RuntimeError):  # RuntimeError: a symlink loop
        return None
    body = {"check": PRACTICE_CHECK_VERSION, "kind": kind, "path": str(resolved), "files": files}
    # The later of its modification and change times: a write whose modification time was
    # set back (cp -p, rsync -t, os.utime) still changed the file just now.
    racy = any(f is not None and max(f[1], f[2]) > now - RACY_NS for f in files.values())
    return Identity(body, racy)


def recorded(home: Path, ident: Identity) -> bool:
    """Whether ``ident`` is the identity recorded in ``home`` (False if none can be read)."""
    try:
        body = json.loads((home / RECORD).read_text("utf-8"))
    except (OSError, ValueError, RecursionError):  # not JSON or UTF-8; nested past parsing
        return False
    return bool(body == ident.body)


def record(home: Path, ident: Identity) -> None:
    """Record ``ident`` as the database last found clean, unless it is too recent to trust.
    Best effort: a home that cannot be written only means checking again next time."""
    if ident.racy:
        return
    try:
        write_private(home / RECORD, json.dumps(ident.body))
    except OSError:
        return


def refuse_unless_clean(home: Path, ident: Identity | None, check: Callable[[], None]) -> None:
    """Run ``check`` (which raises if the database is not clean) unless ``ident``, read before
    it, is the identity recorded in ``home``; record it if the check passes. ``ident`` None:
    always check, record nothing."""
    if ident is not None and recorded(home, ident):
        return
    check()
    if ident is not None:
        record(home, ident)
