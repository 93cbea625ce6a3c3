"""Which kind of database file a path holds, from its first bytes and its name (no database
library loaded: ``agent.engine.compute`` asks this before deciding whether to load SQLAlchemy)."""

from __future__ import annotations

from pathlib import Path

SQLITE_SUFFIXES = {".sqlite", ".sqlite3", ".db"}
DUCKDB_SUFFIXES = {".duckdb", ".ddb"}
DUCKDB_PREFIX = "duckdb:///"  # a DuckDB URL's prefix; the database path follows it


def sniff(path: Path) -> str | None:
    """``"sqlite"`` or ``"duckdb"`` from the file's header; None if neither (or unreadable)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head.startswith(b"SQLite format 3\x00"):
        return "sqlite"
    if head[8:12] == b"DUCK":
        return "duckdb"
    return None
