"""deploy/aggregator/backup.sh run for real against PostgreSQL: dumps readable by their owner
only, only complete dumps kept, a failure that leaves nothing behind and says so."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
BACKUP = REPO / "deploy" / "aggregator" / "backup.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("pg_dump") is None or shutil.which("pg_restore") is None,
    reason="pg_dump is not installed",
)


def _pg_env(url: str) -> dict[str, str]:
    """The libpq variables the compose file's backup service sets, for database ``url``."""
    parts = urlsplit(url)
    return {
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": parts.username or "postgres",
        "PGDATABASE": parts.path.lstrip("/"),
    }


def _backup(
    out: Path, pg: dict[str, str], *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(BACKUP), *args],
        env={"PATH": os.environ["PATH"], "BACKUP_DIR": str(out), **pg, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.postgres
def test_backup_writes_owner_only_dumps_and_keeps_the_newest(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    import psycopg

    url = pg_database_factory()
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("CREATE TABLE evidence (x int)")
        conn.execute("INSERT INTO evidence VALUES (42)")
    out = tmp_path / "backups"
    out.mkdir()
    # two older dumps, so that keeping 2 removes the oldest
    for i, name in enumerate(("fedqi-20200101T000000Z.dump", "fedqi-20200102T000000Z.dump")):
        (out / name).write_bytes(b"old")
        os.utime(out / name, (1_600_000_000 + i, 1_600_000_000 + i))
    done = _backup(out, _pg_env(url), BACKUP_KEEP="2")
    assert done.returncode == 0, done.stderr
    dumps = sorted(out.iterdir())
    assert [p.name for p in dumps][0] == "fedqi-20200102T000000Z.dump"
    assert len(dumps) == 2
    new = dumps[1]
    assert done.stdout.strip() == f"backup written: {new}"
    assert oct(new.stat().st_mode & 0o777) == "0o600"  # it was 0644: every local user could read
    listed = subprocess.run(["pg_restore", "--list", str(new)], capture_output=True, text=True)
    assert listed.returncode == 0 and "TABLE public evidence" in listed.stdout


@pytest.mark.postgres
def test_a_failed_backup_leaves_nothing_and_says_so(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    pg = _pg_env(pg_database_factory())
    pg["PGDATABASE"] = "fedqi_no_such_database"
    out = tmp_path / "backups"
    out.mkdir()
    for args in ((), ("--loop",)):
        done = _backup(out, pg, *args)
        assert done.returncode == 1
        assert 'database "fedqi_no_such_database" does not exist' in done.stderr  # pg_dump's
        assert "backup FAILED" in done.stderr and "no dump written" in done.stderr
        assert list(out.iterdir()) == []  # it left an empty .fedqi-*.dump.partial each time


def test_a_stopped_backup_leaves_no_partial_dump(tmp_path: Path) -> None:
    """The compose service stopped in the middle of a dump: the partial file goes with it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pg_dump").write_text(
        '#!/bin/sh\nfor a in "$@"; do case "$a" in --file=*) f=${a#--file=};; esac; done\n'
        'echo partial > "$f"\nexec sleep 60\n'
    )
    (fake / "pg_dump").chmod(0o755)
    out = tmp_path / "backups"
    out.mkdir()
    proc = subprocess.Popen(
        ["sh", str(BACKUP), "--loop"],
        env={"PATH": f"{fake}:/usr/bin:/bin", "BACKUP_DIR": str(out)},
    )
    deadline = time.time() + 30
    while not list(out.glob(".fedqi-*.dump.partial")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) != 0
    assert list(out.iterdir()) == []
