"""Helpers for the end-to-end tests: a real aggregator (the ``fedqi-aggregator`` CLI, then
``serve`` as a uvicorn subprocess on loopback) and a real agent (``agent.cli.main``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.cli import main as agent_main
from tests.ports import on_a_free_port, started

BIN = Path(sys.executable).parent
AUD = "test-net"


class AggregatorServer:
    """One aggregator: its SQLite database, key directory and (when started) a uvicorn process."""

    def __init__(
        self,
        root: Path,
        *,
        db_file: Path | None = None,
        key_dir: Path | None = None,
        db_url: str | None = None,
    ):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.db_file = db_file or root / "aggregator.db"
        self.db_url = db_url  # another database (PostgreSQL) instead of the SQLite file
        self.key_dir = key_dir or root / "keys"
        #: Chosen by the first start (on a free port); kept by every restart, since agents and
        #: tests were given the URL.
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "serve.log"  # serve-PORT.log once started

    @property
    def db(self) -> str:
        return self.db_url or f"sqlite:///{self.db_file}"

    @property
    def url(self) -> str:
        assert self.port is not None, "the aggregator has no port before its first start"
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        """Run a ``fedqi-aggregator`` admin command (in-process through its ``main``; ``serve``
        runs as a subprocess in :meth:`start`)."""
        import contextlib
        import io

        from aggregator.cli import main as aggregator_main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = aggregator_main(list(args))
        assert code == 0, f"fedqi-aggregator {' '.join(args)} -> {code}: {err.getvalue()}"
        return out.getvalue()

    def setup(self, practices: tuple[str, ...] = ("A12345",), origin: str | None = None) -> None:
        """``origin``: the log's checkpoint origin (``init --origin``; default ``<aud>/log/v1``)."""
        self.cli("db", "upgrade", "--db", self.db)
        init = self.cli(
            "init",
            "--name",
            "Test network",
            "--aud",
            AUD,
            *(("--origin", origin) if origin else ()),
            "--db",
            self.db,
            "--key-dir",
            str(self.key_dir),
            "--json",
        )
        #: What `fedqi-aggregator init` printed (the keys to publish to practices).
        self.init_info = json.loads(init)
        for i, ods in enumerate(practices):
            self.cli(
                "practice",
                "add",
                ods,
                "--name",
                f"Practice {i}",
                "--group",
                "PCN1",
                "--list-size",
                "300",
                "--imd-decile",
                "5",
                "--db",
                self.db,
            )

    def token(self, ods: str) -> str:
        return str(json.loads(self.cli("enrol-token", ods, "--db", self.db, "--json"))["token"])

    def start(self) -> None:
        """Serve, and wait until it answers. The first start takes a free port (another if
        that one is taken before serve binds it); a restart serves on the same port again."""
        if self.port is None:
            on_a_free_port(self._serve_on)
        else:
            self._serve_on(self.port)

    def _serve_on(self, port: int) -> None:
        cmd = [
            str(BIN / "fedqi-aggregator"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--db",
            self.db,
            "--key-dir",
            str(self.key_dir),
        ]
        self.log = self.root / f"serve-{port}.log"
        start = self.log.stat().st_size if self.log.exists() else 0  # a restart appends
        log = self.log.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        log.close()

        def output() -> str:  # what this start wrote
            return self.log.read_bytes()[start:].decode(errors="replace")[-2000:]

        # (not left running if it does not answer; a loaded 2-core machine can take long to
        # import and bind)
        started(self.proc, f"http://127.0.0.1:{port}/healthz", output=output, what="aggregator")
        self.port = port

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def _files(self) -> list[Path]:
        return [
            self.db_file.with_name(self.db_file.name + suffix) for suffix in ("", "-wal", "-shm")
        ]

    def copy_to(self, root: Path) -> AggregatorServer:
        """A second aggregator with a copy of this one's database (with its SQLite WAL) and the
        same keys; stop this one first so the copy is a consistent snapshot."""
        root.mkdir(parents=True, exist_ok=True)
        for src in self._files():
            if src.exists():
                shutil.copyfile(src, root / src.name)
        return AggregatorServer(root, db_file=root / self.db_file.name, key_dir=self.key_dir)

    def restore_from(self, backup: AggregatorServer) -> None:
        """Overwrite this (stopped) aggregator's database with ``backup``'s files."""
        for mine, theirs in zip(self._files(), backup._files(), strict=True):
            mine.unlink(missing_ok=True)
            if theirs.exists():
                shutil.copyfile(theirs, mine)


@dataclass
class Agent:
    home: Path
    env: dict[str, str]

    def __call__(self, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """Run the agent CLI in-process; returns (exit code, stdout, stderr)."""
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = agent_main(list(argv), {**self.env, **(env or {})})
        return code, out.getvalue(), err.getvalue()

    def ok(self, *argv: str, env: dict[str, str] | None = None) -> str:
        code, out, err = self(*argv, env=env)
        assert code == 0, f"fedqi-agent {' '.join(argv)} -> {code}: {err}"
        return out

    def json(self, *argv: str) -> object:
        return json.loads(self.ok(*argv, "--json"))

    def subprocess(self, *argv: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env}
        return subprocess.Popen(
            [str(BIN / "fedqi-agent"), *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
