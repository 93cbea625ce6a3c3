"""fedqi-aggregator's exit codes agree across commands (the table in aggregator/errors.py): an
argument naming something that does not exist, or a file given on the command line that cannot
be read or is not valid, is bad input (2), as `key list --practice` and `user revoke` already
answered, not a failure (1)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.errors import ExitCode


def test_unknown_names_and_bad_files_are_bad_input(network, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad_json = tmp_path / "cat.json"
    bad_json.write_text("{not json")
    keys = ("--key-dir", str(network.settings.key_dir))
    cases = [
        (("key", "revoke", "no-such-kid", *keys), "no key with kid no-such-kid"),
        (("enrol-token", "Z99999"), "practice Z99999 is not registered"),
        (("key", "list", "--practice", "Z99999"), "no such practice"),
        (("catalogue", "publish", str(tmp_path / "missing.json"), *keys), "cannot read catalogue"),
        (("catalogue", "publish", str(bad_json), *keys), "is invalid at"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert network.cli(*args) == ExitCode.BAD_INPUT, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, (args, err)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_the_database_it_creates_is_the_owners_only(tmp_path: Path) -> None:
    # A SQLite database holds every submission and the users: not readable by other accounts.
    db = tmp_path / "new" / "fedqi-aggregator.db"
    db.parent.mkdir()
    before = os.umask(0o022)
    try:
        assert main(["db", "upgrade", "--db", f"sqlite:///{db}"]) == ExitCode.OK
        assert os.umask(0o022) == 0o022  # the command gave the umask back
    finally:
        os.umask(before)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
