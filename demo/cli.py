"""``fedqi-demo``: a whole network of practices on one machine, through the real path.

The demo plans a deterministic network (seeded), then drives the real command-line tools as
separate processes: ``fedqi-aggregator`` (``db upgrade``, ``init``, ``practice add``,
``enrol-token``, ``user add``, ``serve``) and, per practice, ``fedqi-agent`` (``synth``,
``init``, ``enrol``, ``run``, ``audit verify``), each agent in its own home with its own key,
talking to the aggregator over HTTP on loopback. It never touches the aggregator's database:
the only things it reads are the CLIs' JSON output, the HTTP API and the agents' own outboxes.

Demo home layout (``--home``, default ``./demo-home``)::

    demo.json                    the plan, the log key, the demo users' tokens (mode 0600)
    demo.lock                    held by the demo running on this home (its pid): one at a time
    aggregator/aggregator.toml   the aggregator's settings (db, key_dir)
    aggregator/aggregator.db     its SQLite database; aggregator/keys/ its keys
    practices/<ODS>.sqlite       each practice's synthetic records (+ .json: the synth summary)
    agents/<ODS>/                each practice's agent home (config, key, trust, outbox)
    ig-pack/                     the IG pack for the network's catalogue (index.html)
    logs/                        every command's output, per practice, and the server's log

Re-running resumes: every step looks at what exists and does only what is missing.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import fcntl
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import IO, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from agent.cli import run_app
from agent.errors import AgentUserError, ExitCode, exit_code_help

STATE_VERSION = 1
AUD = "fedqi-demo"
NETWORK_NAME = "fedqi demo network"
DEFAULT_SEED = 1
DEFAULT_GROUPS = 5  # or --practices, when there are fewer practices than that
DEFAULT_PORT = 8400
#: demo practices are small so the whole network builds in a couple of minutes on 2 cores;
#: sizes are drawn log-uniformly between these (patient rows, about 3/4 of them registered).
MIN_PATIENTS, MAX_PATIENTS = 400, 2500
STEP_TIMEOUT = 900  # seconds for any one command; a hung step fails loudly instead of hanging

GROUP_NAMES = (
    "Riverside",
    "Northgate",
    "Hillcrest",
    "Eastfield",
    "Westbrook",
    "Southmoor",
    "Oakwood",
    "Lakeside",
    "Millbrook",
    "Ashton",
)
PLACES = (
    "Abbey", "Albion", "Beech", "Bridge", "Brook", "Castle", "Cedar", "Church", "Clover",
    "Crown", "Elm", "Fairfield", "Forge", "Glebe", "Grange", "Green", "Harbour", "Hawthorn",
    "Heath", "Holly", "Kings", "Larch", "Linden", "Market", "Meadow", "Mill", "Moor", "Orchard",
    "Park", "Priory", "Queens", "Rowan", "Station", "Tannery", "Vale", "Victoria", "Willow",
    "Wharf", "Windmill", "Yew",
)  # fmt: skip
KINDS = ("Surgery", "Medical Centre", "Health Centre", "Medical Practice", "Family Practice")
ROLES = ("admin", "network_lead", "practice", "ig_officer")
ROLE_LABELS = {
    "admin": "admin",
    "network_lead": "network lead",
    "practice": "practice user",
    "ig_officer": "IG officer",
}


class DemoExit(IntEnum):
    """``fedqi-demo``'s exit codes: the one table (``fedqi-demo --help``, docs/demo.md)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    MISSING_EXTRA = 3
    INTERRUPTED = 130


DEMO_EXIT_MEANINGS: dict[DemoExit, str] = {
    DemoExit.OK: "the network ran and every check passed",
    DemoExit.FAILED: "a step failed or a check did not pass (the message names the practice, "
    "the command and its log file)",
    DemoExit.USAGE: "an option is unknown or out of range (the message names it and the range); "
    "nothing was started",
    DemoExit.MISSING_EXTRA: "the demo extra is not installed (the line printed names the pip install to run)",
    DemoExit.INTERRUPTED: "interrupted (Ctrl-C, SIGINT, SIGTERM or SIGHUP) before it served; run "
    "fedqi-demo again to resume",
}


def demo_exit_help() -> str:
    return exit_code_help(DEMO_EXIT_MEANINGS)


class DemoError(AgentUserError):
    """A demo step failed; the message names the practice, the command and its log file."""

    exit_code = DemoExit.FAILED


class DemoUsageError(DemoError):
    """An option out of range: exits 2, as an unknown option does."""

    exit_code = DemoExit.USAGE


class PortTakenError(DemoError):
    """The aggregator could not listen on its port: another process holds it."""


#: ``fedqi-aggregator serve``'s exit code when another process holds its port
#: (``aggregator.errors.ExitCode.PORT_IN_USE``, docs/aggregator.md): written here because the
#: demo drives the aggregator through its command line only (tests/demo/test_demo.py checks
#: that the two agree). Its error line says the same in the system's words, which differ.
AGGREGATOR_PORT_IN_USE = 4


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PracticePlan:
    ods: str
    name: str
    group: str
    patients: int
    imd_decile: int
    quality: float
    seed: int


@dataclass(frozen=True)
class NetworkPlan:
    groups: tuple[str, ...]
    practices: tuple[PracticePlan, ...]


def group_names(count: int) -> tuple[str, ...]:
    names = [f"{GROUP_NAMES[i % len(GROUP_NAMES)]} PCN" for i in range(count)]
    return tuple(
        n if i < len(GROUP_NAMES) else f"{n} {i // len(GROUP_NAMES) + 1}"
        for i, n in enumerate(names)
    )


def plan_network(practices: int, groups: int, seed: int = DEFAULT_SEED) -> NetworkPlan:
    """A deterministic network: the same arguments always give the same practices.

    Practices are dealt round-robin into groups. Each group has its own deprivation profile
    (centres spread from decile 2 to 9), each practice a log-uniform size, an IMD decile near its
    group's centre, and a recording quality that rises with affluence plus noise: the spread of
    quality and the deprivation gradient real networks show.
    """
    names = group_names(groups)
    net = random.Random(f"fedqi-demo:{seed}")
    places = list(PLACES)
    net.shuffle(places)
    plans = []
    for i in range(practices):
        rng = random.Random(f"fedqi-demo:{seed}:{i}")
        g = i % groups
        centre = 5.5 if groups == 1 else 2 + 7 * g / (groups - 1)
        imd = min(10, max(1, round(rng.gauss(centre, 1.3))))
        size = math.exp(rng.uniform(math.log(MIN_PATIENTS), math.log(MAX_PATIENTS)))
        quality = min(0.95, max(0.1, 0.3 + 0.045 * imd + rng.gauss(0, 0.12)))
        place = places[i % len(places)]
        suffix = f" {i // len(places) + 1}" if i >= len(places) else ""
        plans.append(
            PracticePlan(
                ods=f"Y{90001 + i:05d}",
                name=f"{place} {KINDS[rng.randrange(len(KINDS))]}{suffix}",
                group=names[g],
                patients=int(round(size, -1)),
                imd_decile=imd,
                quality=round(quality, 2),
                seed=seed * 100_000 + i + 1,
            )
        )
    return NetworkPlan(groups=names, practices=tuple(plans))


def period_label(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def demo_periods(today: dt.date, count: int) -> tuple[str, str, dt.date]:
    """The ``count`` months ending with the last complete one: (first, last, last day)."""
    last_day = today.replace(day=1) - dt.timedelta(days=1)
    index = last_day.year * 12 + last_day.month - 1 - (count - 1)
    return (
        period_label(index // 12, index % 12 + 1),
        period_label(last_day.year, last_day.month),
        last_day,
    )


def months_between(first: str, last: str) -> int:
    fy, fm = (int(x) for x in first.split("-"))
    ly, lm = (int(x) for x in last.split("-"))
    return (ly * 12 + lm) - (fy * 12 + fm) + 1


# --- the demo home -----------------------------------------------------------------------------


class DemoHome:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def state_file(self) -> Path:
        return self.root / "demo.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "demo.lock"

    @property
    def aggregator_dir(self) -> Path:
        return self.root / "aggregator"

    @property
    def aggregator_config(self) -> Path:
        return self.aggregator_dir / "aggregator.toml"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.aggregator_dir / 'aggregator.db'}"

    @property
    def key_dir(self) -> Path:
        return self.aggregator_dir / "keys"

    @property
    def ig_pack(self) -> Path:
        return self.root / "ig-pack"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def records(self, ods: str) -> Path:
        return self.root / "practices" / f"{ods}.sqlite"

    def records_summary(self, ods: str) -> Path:
        return self.root / "practices" / f"{ods}.json"

    def agent(self, ods: str) -> Path:
        return self.root / "agents" / ods

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def open_log(self, name: str, mode: str = "a") -> IO[Any]:
        """The log ``name`` opened to append, readable by this user only (0600, as demo.json):
        the commands it records print the demo users' API tokens and the agents' enrolment
        tokens. A log an earlier run left with other modes is made 0600 too."""
        path = self.log(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        if "b" in mode:
            return os.fdopen(fd, "ab")
        return os.fdopen(fd, "a", encoding="utf-8")

    def load_state(self) -> dict[str, Any] | None:
        if not self.state_file.exists():
            return None
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DemoError(
                f"{self.state_file}: cannot read the demo state ({exc}); use --fresh"
            ) from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise DemoError(
                f"{self.state_file}: not a demo state this version can resume; use --fresh"
            )
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        # 0600: it holds the demo users' tokens, shown again on every run.
        tmp = self.state_file.with_name(".demo.json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state, fh, indent=2, sort_keys=True)
        os.replace(tmp, self.state_file)


# --- running the real tools --------------------------------------------------------------------


def find_tool(name: str) -> str:
    """The console script installed beside this interpreter (``make demo`` does not activate the
    venv, so PATH may not have it), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise DemoError(f"cannot find the {name!r} command: install fedqi (`make venv`) first")
    return found


def clean_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without fedqi settings, so a stray FEDQI_AGENT_* or
    FEDQI_AGGREGATOR_* variable cannot change what the demo's tools do."""
    return {
        k: v for k, v in environ.items() if not k.startswith(("FEDQI_AGENT_", "FEDQI_AGGREGATOR_"))
    }


RUNNERS = ("pool", "process")


def _warm_worker() -> None:
    """Import both command lines once in a pool worker (what each new process pays again)."""
    for name in ("fedqi-agent", "fedqi-aggregator"):
        _console_script(name)
    from agent.cli import _load_commands

    _load_commands()


def _console_script(name: str) -> Callable[..., int]:
    """The installed console script's entry point (``main(argv, environ) -> exit code``)."""
    from importlib.metadata import entry_points

    (ep,) = entry_points(group="console_scripts", name=name)
    main: Callable[..., int] = ep.load()
    return main


def _run_in_worker(
    name: str, args: list[str], env: dict[str, str]
) -> tuple[int, str, str, int, float]:
    """Run one command line in this (warm, single-threaded) worker process, as its console
    script would: same arguments, same environment, stdout and stderr captured. Returns (exit
    code, stdout, stderr, this worker's pid, its CPU seconds since it started, imports
    included)."""
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = _console_script(name)(args, env)
        except SystemExit as exc:  # a command may exit by itself
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue(), os.getpid(), time.process_time()


class Tools:
    """Runs ``fedqi-aggregator`` and ``fedqi-agent`` command lines, logging each command's
    output to a file and turning a failure into one :class:`DemoError` line.

    ``runner="pool"`` (the default) runs each command line in one of ``jobs`` long-lived worker
    processes that imported both tools once: the same console-script entry point, arguments and
    environment as a fresh process, without paying Python start-up (about 1 CPU-s) per command.
    ``runner="process"`` starts a new process for every command, as before."""

    def __init__(
        self, home: DemoHome, environ: Mapping[str, str], runner: str = "pool", jobs: int = 2
    ) -> None:
        self.home = home
        self.env = clean_environ(environ)
        self.aggregator_cmd = find_tool("fedqi-aggregator")
        self.agent_cmd = find_tool("fedqi-agent")
        self._log_lock = threading.Lock()
        self.commands_run = 0
        self.runner = runner
        self._worker_cpu: dict[int, float] = {}  # pool worker pid -> its CPU so far
        self._pool: Any = None
        if runner == "pool":
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # forkserver: workers start from a clean single-threaded server, not a fork of this
            # process and its progress-bar thread.
            self._pool = ProcessPoolExecutor(
                max_workers=jobs,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=_warm_worker,
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def commands_cpu(self) -> float:
        """CPU of every command so far: finished child processes plus the pool's commands."""
        with self._log_lock:
            return _children_cpu() + sum(self._worker_cpu.values())

    def _execute(self, cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        if self._pool is None:
            return subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env=env,
                timeout=STEP_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        from concurrent.futures import TimeoutError as FutureTimeout

        name = Path(cmd[0]).name
        future = self._pool.submit(_run_in_worker, name, cmd[1:], env)
        try:
            code, out, err, pid, cpu = future.result(timeout=STEP_TIMEOUT)
        except FutureTimeout:
            raise subprocess.TimeoutExpired(cmd, STEP_TIMEOUT) from None
        with self._log_lock:
            self._worker_cpu[pid] = max(cpu, self._worker_cpu.get(pid, 0.0))
        return subprocess.CompletedProcess(cmd, code, out, err)

    def _run(
        self,
        cmd: list[str],
        log: str,
        *,
        env: Mapping[str, str] | None = None,
        ok_codes: Sequence[int] = (0,),
        what: str,
    ) -> subprocess.CompletedProcess[str]:
        log_path = self.home.log(log)
        began = time.monotonic()
        cpu_before = self.commands_cpu()
        try:
            proc = self._execute(cmd, {**self.env, **(env or {})})
        except subprocess.TimeoutExpired:
            raise DemoError(
                f"{what}: `{_show(cmd, env)}` took over {STEP_TIMEOUT} s (log: {log_path})"
            ) from None
        cpu_after = self.commands_cpu()
        with self._log_lock, self.home.open_log(log) as fh:
            self.commands_run += 1
            fh.write(
                f"$ {_show(cmd, env)}\n{proc.stdout}{proc.stderr}"
                f"[exit {proc.returncode} after {time.monotonic() - began:.1f} s; CPU of the "
                f"demo's finished commands +{cpu_after - cpu_before:.2f} s]\n\n"
            )
        if proc.returncode not in ok_codes:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            last = lines[-1] if lines else "(no output)"
            raise DemoError(
                f"{what}: `{_show(cmd, env)}` exited {proc.returncode}: {last} (log: {log_path})"
            )
        return proc

    def aggregator(
        self, *args: str, log: str = "aggregator-admin", what: str = "aggregator"
    ) -> Any:
        cmd = [self.aggregator_cmd, *args, "--config", str(self.home.aggregator_config), "--json"]
        return _json(self._run(cmd, log, what=what), what)

    def agent(
        self,
        ods: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        ok_codes: Sequence[int] = (0,),
        home: bool = True,
    ) -> Any:
        where = ["--home", str(self.home.agent(ods))] if home else []
        cmd = [self.agent_cmd, *args, *where, "--json"]
        proc = self._run(cmd, ods, env=env, ok_codes=ok_codes, what=f"practice {ods}")
        return _json(proc, f"practice {ods}")


def _children_cpu() -> float:
    # Exact per command only with --jobs 1 (parallel commands add to the same counter).
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


#: A variable named so is never written out with its value (a token, a key, a password).
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSPHRASE|CREDENTIAL", re.IGNORECASE)


def _show(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """A command line as the logs and messages show it: the program by its name (on PATH once
    the venv is activated) and every argument shell-quoted, so a line can be copied and run
    whatever spaces or quotes its paths hold. ``env``: the variables the demo sets for this
    command alone (never the caller's environment), shown first as shell assignments
    (``FEDQI_AGENT_FIRST_PERIOD=2025-12 fedqi-agent run ...``), so a copied line runs with them;
    one named as a secret (:data:`_SECRET_NAME`) is shown without its value."""
    assign = [
        f"{k}=<not shown>" if _SECRET_NAME.search(k) else f"{k}={shlex.quote(v)}"
        for k, v in (env or {}).items()
    ]
    return " ".join([*assign, shlex.join([Path(cmd[0]).name, *cmd[1:]])])


def _json(proc: subprocess.CompletedProcess[str], what: str) -> Any:
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise DemoError(
            f"{what}: expected JSON from `{_show(proc.args)}`, got {proc.stdout[:200]!r}"
        ) from None


# --- the aggregator server ---------------------------------------------------------------------


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _refuse_foreign(home: DemoHome) -> None:
    """A directory that is not a demo home is never used (nor deleted by --fresh); a path that
    is not a directory, or cannot be made one, is named as such."""
    if home.root.exists() and not home.root.is_dir():
        raise DemoError(
            f"--home {home.root}: exists and is not a directory (choose another --home)"
        )
    if not home.root.exists() or home.state_file.exists() or home.aggregator_dir.exists():
        return
    if any(p.name != home.lock_file.name for p in home.root.iterdir()):
        raise DemoError(
            f"{home.root} exists and is not a fedqi demo home; refusing to use or delete it "
            "(choose another --home)"
        )


@contextlib.contextmanager
def claim_home(home: DemoHome) -> Iterator[None]:
    """Hold the demo home for the whole run (build, serve, stop): an exclusive lock on its
    demo.lock, which the kernel drops when this process ends, however it ends. A second run on
    the same home while this one is alive is refused, so the only server a run may stop as
    stale is one whose demo is gone."""
    _refuse_foreign(home)
    created = not home.root.exists()
    try:
        home.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, or not ours to write
        raise DemoError(
            f"--home {home.root}: cannot be made ({exc.strerror or exc}); choose another --home"
        ) from None
    fd = os.open(home.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DemoError(
                f"{home.root} is in use by another fedqi-demo that is still running (pid "
                f"{holder}); left it untouched: stop that one first (Ctrl-C where it runs, or "
                f"kill -INT {holder}) or pass another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            # A run that stopped before making anything leaves no trace of itself.
            if created and [p.name for p in home.root.iterdir()] == [home.lock_file.name]:
                home.lock_file.unlink()
                home.root.rmdir()
    finally:
        os.close(fd)  # drops the lock


def _empty_home(home: DemoHome) -> None:
    """--fresh: remove everything in the home but the lock this run holds."""
    for child in home.root.iterdir():
        if child.name == home.lock_file.name:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def stop_stale_server(home: DemoHome, state: Mapping[str, Any] | None) -> int | None:
    """Stop this demo home's own server left running by an earlier run that has ended (killed,
    crashed), recognised by its recorded pid AND its command line naming this home's config;
    never anything else. Called only while holding the home (:func:`claim_home`), so the demo
    that started that server is no longer alive."""
    pid = (state or {}).get("server_pid")
    if not isinstance(pid, int):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in cmdline]
    if (
        not any(a.endswith("fedqi-aggregator") for a in args)
        or str(home.aggregator_config) not in args
    ):
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            time.sleep(0.1)
            os.kill(pid, 0)
    return pid


class Server:
    """``fedqi-aggregator serve`` as a child process."""

    def __init__(self, tools: Tools, port: int) -> None:
        self.tools = tools
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        home = self.tools.home
        log = home.open_log("aggregator", "ab")
        cmd = [
            self.tools.aggregator_cmd,
            "serve",
            "--config",
            str(home.aggregator_config),
            "--port",
            str(self.port),
        ]
        log.write(f"$ {_show(cmd)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.tools.env
        )
        log.close()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    tail = home.log("aggregator").read_text(errors="replace").strip().splitlines()
                    last = tail[-1] if tail else "(no output)"
                    taken = self.proc.returncode == AGGREGATOR_PORT_IN_USE
                    raise (PortTakenError if taken else DemoError)(
                        f"the aggregator exited ({self.proc.returncode}) while starting: "
                        f"{last} (log: {home.log('aggregator')})"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return
                time.sleep(0.2)
        self.stop()
        raise DemoError(f"the aggregator did not become ready at {self.url} within {timeout:.0f} s")

    def cpu_seconds(self) -> float | None:
        """CPU the server has used so far (Linux /proc; None elsewhere)."""
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --- one practice ------------------------------------------------------------------------------


@dataclass
class PracticeResult:
    ods: str
    registered: int = 0
    enrolled: bool = False
    steps_done: list[str] = field(default_factory=list)
    run_outcomes: list[dict[str, Any]] = field(default_factory=list)
    guard_approved: list[str] = field(default_factory=list)  # months the guard held, approved
    error: str | None = None


def build_practice(
    plan: PracticePlan,
    *,
    tools: Tools,
    server_url: str,
    registered_at_aggregator: set[str],
    first_period: str,
    period_end: dt.date,
    tick: Callable[[str, int], None],
) -> PracticeResult:
    """Every step one practice needs, each skipped when already done: synthesise records,
    register, create the agent home, enrol, submit every due period."""
    home = tools.home
    result = PracticeResult(plan.ods)
    records = home.records(plan.ods)
    summary_file = home.records_summary(plan.ods)
    if records.exists() and summary_file.exists():
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
    else:
        partial = records.with_name(f"{plan.ods}.partial.sqlite")
        summary = tools.agent(
            plan.ods,
            "synth",
            "--patients", str(plan.patients),
            "--seed", str(plan.seed),
            "--quality", f"{plan.quality}",
            "--period-end", period_end.isoformat(),
            "--out", str(partial),
            "--force",
            home=False,
        )  # fmt: skip
        os.replace(partial, records)
        summary_file.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        result.steps_done.append("synth")
    result.registered = int(summary["registered"])
    tick("records", 1)

    if plan.ods not in registered_at_aggregator:
        tools.aggregator(
            "practice", "add", plan.ods,
            "--name", plan.name,
            "--group", plan.group,
            "--list-size", str(result.registered),
            "--imd-decile", str(plan.imd_decile),
            log=plan.ods,
            what=f"practice {plan.ods}",
        )  # fmt: skip
        result.steps_done.append("practice add")

    agent_home = home.agent(plan.ods)
    if _init_agent(tools, plan.ods, agent_home, server_url, records):
        result.steps_done.append("init")

    if not (agent_home / "trust.json").exists():
        token = tools.aggregator(
            "enrol-token", plan.ods, "--hours", "1", log=plan.ods, what=f"practice {plan.ods}"
        )["token"]
        tools.agent(plan.ods, "enrol", "--token", token)
        result.steps_done.append("enrol")
    result.enrolled = True
    tick("enrolled", 1)

    # `run` resends anything queued, then submits every month from first_period to the last
    # complete one: one process per agent, the way a practice's scheduler runs it.
    # A month the disclosure guard holds waits for the practice's approval, and the months
    # after it wait for it (docs/disclosure.md); run then exits 9 (ExitCode.HELD), so that a
    # practice's scheduler sees it. The demo approves it on the practice's behalf (synthetic
    # records) and runs again; `fedqi-agent pending` is how a practice reads why.
    # A network resumed in a later month than it was made in has no records for the months
    # since (its synthetic records end on period_end): `run` would refuse them as computed on
    # a stale extract (docs/agent.md, "Stale records"), so the demo asks for them deliberately.
    run = ["run"]
    if period_end < dt.date.today().replace(day=1) - dt.timedelta(days=1):
        run.append("--allow-stale")
    for _ in range(60):
        outcomes = tools.agent(
            plan.ods,
            *run,
            env={"FEDQI_AGENT_FIRST_PERIOD": first_period},
            ok_codes=(ExitCode.OK, ExitCode.REFUSED, ExitCode.HELD),
        )
        result.run_outcomes += [o for o in outcomes if o.get("state") != "held"]
        tick("submitted", sum(1 for o in outcomes if o.get("state") == "accepted"))
        held = [o for o in outcomes if o.get("state") == "held"]
        if not held or not str(held[-1].get("detail", "")).startswith("disclosure guard: "):
            result.run_outcomes += held
            break
        approved = tools.agent(plan.ods, "approve", str(held[-1]["message"]), ok_codes=(0, 6))
        result.guard_approved.append(str(held[-1].get("period")))
        result.run_outcomes.append(approved)
        tick("submitted", 1 if approved.get("state") == "accepted" else 0)
    return result


def _init_agent(tools: Any, ods: str, agent_home: Path, server_url: str, records: Path) -> bool:
    """Make the practice's agent home pointed at ``server_url`` (``fedqi-agent init``), or, on a
    resumed run, point the existing one there; True if ``init`` ran. A home an earlier run left
    with its config but not yet its key (interrupted inside ``init``) is pointed at this run's
    server first, which may be on another --port, so that the key made now is enrolled here."""
    if (agent_home / "keys" / "active").exists():
        _point_agent_at(agent_home, server_url)
        return False
    if (agent_home / "agent.toml").exists():
        _point_agent_at(agent_home, server_url)
        tools.agent(ods, "init")
        return True
    tools.agent(
        ods,
        "init",
        "--practice", ods,
        "--aud", AUD,
        "--aggregator-url", server_url,
        "--source-url", str(records),
    )  # fmt: skip
    return True


def _point_agent_at(agent_home: Path, server_url: str) -> None:
    """A resumed demo may serve on another --port: update the agent's aggregator_url in its own
    config file (the one setting the demo owns there)."""
    config = agent_home / "agent.toml"
    if not config.exists():
        return
    lines = config.read_text(encoding="utf-8").splitlines()
    wanted = f"aggregator_url = {json.dumps(server_url)}"
    changed = [wanted if ln.startswith("aggregator_url =") else ln for ln in lines]
    if changed != lines:
        config.write_text("\n".join(changed) + "\n", encoding="utf-8")


# --- the whole network -------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    practices: int
    groups: int
    periods: int
    home: Path
    port: int
    once: bool
    as_json: bool
    fresh: bool
    jobs: int
    seed: int
    runner: str = "pool"


def _check_options(o: Options) -> None:
    if not 1 <= o.practices <= 500:
        raise DemoUsageError(f"--practices {o.practices}: choose 1 to 500")
    if not 1 <= o.groups <= o.practices:
        raise DemoUsageError(f"--groups {o.groups}: choose 1 to --practices ({o.practices})")
    if not 1 <= o.periods <= 60:
        raise DemoUsageError(f"--periods {o.periods}: choose 1 to 60 months")
    if not 0 <= o.port <= 65535:
        raise DemoUsageError(f"--port {o.port}: choose 1 to 65535 (0: any free port)")
    if not 1 <= o.jobs <= 16:
        raise DemoUsageError(f"--jobs {o.jobs}: choose 1 to 16")
    if o.runner not in RUNNERS:
        raise DemoUsageError(f"--runner {o.runner!r}: choose {' or '.join(RUNNERS)}")


def _prepare_home(
    o: Options, home: DemoHome, say: Callable[[str], None]
) -> tuple[str, dict[str, Any] | None]:
    """Decide fresh / new / resumed; returns (mode, existing state)."""
    _refuse_foreign(home)
    state = home.load_state() if home.root.exists() else None
    looks_like_demo = state is not None or (home.root / "aggregator").exists()
    if o.fresh and home.root.exists():
        _stop_stale_server(home, state, say)
        _require_port(o)  # before the old demo is removed
        if looks_like_demo:
            _empty_home(home)
            say(f"--fresh: removed {home.root}; starting a new network")
        return "fresh", None
    if state is None:
        if (home.root / "aggregator").exists():
            raise DemoError(
                f"{home.root} holds a demo that never finished its first step; re-run with --fresh"
            )
        _require_port(o)  # before anything is made
        return "new", None
    wanted = {"practices": o.practices, "groups": o.groups, "periods": o.periods, "seed": o.seed}
    made = {k: state.get(k) for k in wanted}
    if made != wanted:
        was = " ".join(f"--{k} {v}" for k, v in made.items())
        raise DemoError(
            f"{home.root} holds a demo made with {was}; re-run with those options, or add "
            "--fresh to start a new one"
        )
    _stop_stale_server(home, state, say)
    _require_port(o)
    return "resumed", state


def _stop_stale_server(
    home: DemoHome, state: Mapping[str, Any] | None, say: Callable[[str], None]
) -> None:
    stopped = stop_stale_server(home, state)
    if stopped:
        say(
            f"stopped this demo's aggregator (pid {stopped}), left running by an earlier run "
            "that has ended"
        )


def _require_port(o: Options) -> None:
    """A --port in use is said before the demo makes or removes anything (and again when the
    server starts, in case it was taken meanwhile); after this demo's own stale server, which
    may have held it, is stopped."""
    if o.port and not port_is_free(o.port):
        raise DemoError(
            f"port {o.port} on 127.0.0.1 is in use (another demo or aggregator?): stop it or pass "
            "another --port"
        )


def _setup_aggregator(tools: Tools, home: DemoHome, state: dict[str, Any]) -> None:
    for sub in (home.aggregator_dir, home.logs, home.root / "practices", home.root / "agents"):
        sub.mkdir(parents=True, exist_ok=True)
    if not home.aggregator_config.exists():
        # Absolute paths: the tools run from any directory.
        home.aggregator_config.write_text(
            "# the demo aggregator's settings (see docs/aggregator.md)\n"
            f"db = {json.dumps(home.db_url)}\n"
            f"key_dir = {json.dumps(str(home.key_dir))}\n",
            encoding="utf-8",
        )
    tools.aggregator("db", "upgrade", what="aggregator db upgrade")
    if "log_key" not in state:
        made = tools.aggregator(
            "init", "--name", NETWORK_NAME, "--aud", AUD, what="aggregator init"
        )
        state["log_key"] = made["log_key"]
        home.save_state(state)
    # The IG pack, from the catalogue just published (regenerated on every run: cheap, and a
    # catalogue change shows in it); the dashboard also serves it live at /dashboard/ig-pack.
    tools.aggregator("ig-pack", "--out", str(home.ig_pack), what="aggregator ig-pack")


def _add_users(tools: Tools, home: DemoHome, state: dict[str, Any], plan: NetworkPlan) -> None:
    first = plan.practices[0]
    wanted = {
        "admin": ("Demo Admin", []),
        "network_lead": (f"{first.group} lead", ["--group", first.group]),
        "practice": (f"{first.name} user", ["--practice", first.ods]),
        "ig_officer": (f"{first.name} IG officer", ["--practice", first.ods]),
    }
    users = state.setdefault("users", {})
    for role in ROLES:
        if role in users:
            continue
        name, extra = wanted[role]
        made = tools.aggregator(
            "user", "add", name, "--role", role, *extra, what=f"user add {role}"
        )
        users[role] = {
            "name": name,
            "token": made["token"],
            "practice": made.get("practice"),
            "group": made.get("group"),
        }
        home.save_state(state)  # tokens are shown once: keep each as soon as it exists


def _outbox_counts(home: DemoHome, ods: str) -> dict[str, int]:
    from agent.outbound.outbox import Outbox

    counts = {"accepted": 0, "refused": 0, "queued": 0, "held": 0, "rejected": 0}
    agent_home = home.agent(ods)
    if not (agent_home / "outbox.sqlite").exists():
        return counts
    with Outbox.open(agent_home) as outbox:
        for m in outbox.messages(kind="submission"):
            counts[m.state] = counts.get(m.state, 0) + 1
    return counts


def _log_size(server_url: str, log_key: Mapping[str, Any]) -> tuple[int, bool, str]:
    """The log's size from its latest checkpoint, verified with the log key init printed."""
    from protocol.checkpoint import verify_checkpoint
    from protocol.errors import ProtocolError
    from protocol.keys import VerifyingKey, b64url_decode

    note = httpx.get(f"{server_url}/v1/log/checkpoint", timeout=10).text
    key = VerifyingKey.from_public_bytes(b64url_decode(log_key["public_key"], what="log key"))
    try:
        cp = verify_checkpoint(note, log_key["name"], key)
    except ProtocolError as exc:
        return int(note.splitlines()[1]) if note.count("\n") > 1 else 0, False, str(exc)
    return cp.size, True, ""


def _check_dashboard(
    server_url: str, token: str, practices: Sequence[str]
) -> tuple[bool, int, str]:
    """Sign in as the admin the way a browser does and look for every practice on the overview."""
    with httpx.Client(base_url=server_url, timeout=120, follow_redirects=False) as client:
        login = client.post(
            "/dashboard/login", data={"token": token, "next": "/dashboard/overview"}
        )
        if login.status_code not in (302, 303):
            return False, 0, f"sign-in answered {login.status_code}"
        page = client.get("/dashboard/overview")
        if page.status_code != 200:
            return False, 0, f"/dashboard/overview answered {page.status_code}"
        shown = sum(1 for ods in practices if ods in page.text)
    return True, shown, ""


class PhaseClock:
    """Wall and CPU seconds per phase of the demo: this process, the commands it ran and the
    aggregator server, each measured as a difference across the phase."""

    def __init__(self, tools: Tools) -> None:
        self.tools = tools
        self.server: Server | None = None
        self.phases: dict[str, dict[str, float]] = {}
        self._name: str | None = None
        self._start: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def _now(self) -> tuple[float, float, float, float]:
        server = (self.server.cpu_seconds() if self.server else None) or 0.0
        return time.monotonic(), time.process_time(), self.tools.commands_cpu(), server

    def start(self, name: str) -> None:
        self.stop()
        self._name, self._start = name, self._now()

    def stop(self) -> None:
        if self._name is None:
            return
        now = self._now()
        wall, own, commands, server = (b - a for a, b in zip(self._start, now, strict=True))
        self.phases[self._name] = {
            "wall": round(wall, 2),
            "cpu_demo": round(own, 2),
            "cpu_commands": round(commands, 2),
            "cpu_server": round(server, 2),
            "cpu": round(own + commands + server, 2),
        }
        self._name = None


def run_demo(o: Options, err: Console, environ: Mapping[str, str]) -> tuple[dict[str, Any], Server]:
    """Build (or resume) the network and check it; returns the summary and the running server."""
    started = time.monotonic()
    _check_options(o)
    home = DemoHome(o.home)
    say = err.print
    mode, state = _prepare_home(o, home, say)
    plan = plan_network(o.practices, o.groups, o.seed)
    today = dt.date.today()
    if state is None:
        first, last, last_day = demo_periods(today, o.periods)
        home.root.mkdir(parents=True, exist_ok=True)
        state = {
            "version": STATE_VERSION,
            "practices": o.practices,
            "groups": o.groups,
            "periods": o.periods,
            "seed": o.seed,
            "first_period": first,
            "last_period": last,
            "period_end": last_day.isoformat(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        home.save_state(state)
        say(
            f"{'Creating' if mode == 'new' else 'Creating fresh'} a demo network in {home.root}: "
            f"{_count(o.practices, 'practice')} in {_count(o.groups, 'PCN')}, "
            f"{_count(o.periods, 'month')} "
            f"({first} to {last})"
        )
    else:
        say(
            f"Resuming the demo network in {home.root} (made {state.get('created')}): steps "
            "already done are skipped, the rest is done now (--fresh starts again)"
        )
    first_period = state["first_period"]
    period_end = dt.date.fromisoformat(state["period_end"])
    _, current_last, _ = demo_periods(today, 1)
    expected_per_practice = months_between(first_period, max(current_last, state["last_period"]))

    tools = Tools(home, environ, runner=o.runner, jobs=o.jobs)
    try:
        return _serve_and_build(
            o, home, tools, state, plan, mode, first_period, period_end, expected_per_practice,
            err, started, say,
        )  # fmt: skip
    finally:
        tools.close()


def _serve_and_build(
    o: Options,
    home: DemoHome,
    tools: Tools,
    state: dict[str, Any],
    plan: NetworkPlan,
    mode: str,
    first_period: str,
    period_end: dt.date,
    expected_per_practice: int,
    err: Console,
    started: float,
    say: Callable[[str], None],
) -> tuple[dict[str, Any], Server]:
    clock = PhaseClock(tools)
    clock.start("aggregator setup")
    _setup_aggregator(tools, home, state)
    existing = {
        p["practice"]: p for p in tools.aggregator("practice", "list", what="practice list")
    }
    if mode == "resumed":
        enrolled = sum(1 for p in plan.practices if (home.agent(p.ods) / "trust.json").exists())
        say(f"  found {len(existing)} practices registered, {enrolled} agents enrolled")

    server = _start_server(tools, o.port)
    clock.server = server
    state["server_pid"] = server.proc.pid if server.proc else None
    home.save_state(state)
    try:
        summary = _build_and_check(
            o, home, tools, server, state, plan, existing, first_period, period_end,
            expected_per_practice, err, started, mode, clock,
        )  # fmt: skip
    except BaseException:
        server.stop()
        raise
    return summary, server


#: How many free ports --port 0 tries: each was free when chosen, and may be taken (by any
#: process, an outgoing connection is enough) before the aggregator binds it, seconds later.
PORT_TRIES = 5


def _start_server(tools: Tools, port: int) -> Server:
    """The aggregator, serving on ``port``; with 0, on a free port, or on another free port if
    that one is taken before the aggregator binds it. A --port given is used or refused."""
    tries = 1 if port else PORT_TRIES
    for attempt in range(1, tries + 1):
        chosen = port or free_port()
        last = attempt == tries
        if not port_is_free(chosen):
            if last:
                raise DemoError(
                    f"port {chosen} on 127.0.0.1 is in use (another demo or aggregator?): stop "
                    "it or pass --port"
                )
            continue
        server = Server(tools, chosen)
        try:
            server.start()
        except PortTakenError:
            # What the refused start leaves is harmless to the next: its lines appended to the
            # aggregator's log (the next start writes its own command line before serve runs),
            # no pid in the state, no agent pointed at its port (serve binds before it writes
            # anything: it has only read the database).
            if last:
                raise
            continue
        return server
    raise AssertionError("unreachable: the last try returns or raises")


def _build_and_check(  # noqa: C901 (the demo's steps in the order they run)
    o: Options,
    home: DemoHome,
    tools: Tools,
    server: Server,
    state: dict[str, Any],
    plan: NetworkPlan,
    existing: Mapping[str, Any],
    first_period: str,
    period_end: dt.date,
    expected_per_practice: int,
    err: Console,
    started: float,
    mode: str,
    clock: PhaseClock,
) -> dict[str, Any]:
    n = len(plan.practices)
    failures: list[str] = []
    results: dict[str, PracticeResult] = {}
    audits: dict[str, dict[str, Any]] = {}
    progress = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=err,
    )
    with progress:
        t_records = progress.add_task("practice records", total=n)
        t_enrol = progress.add_task("agents enrolled", total=n)
        t_sub = progress.add_task("monthly submissions sent", total=n * expected_per_practice)
        t_audit = progress.add_task("agents audited", total=n)
        tasks = {"records": t_records, "enrolled": t_enrol, "submitted": t_sub}
        # Submissions an earlier run already made count as done.
        if mode == "resumed":
            done = sum(_outbox_counts(home, p.ods)["accepted"] for p in plan.practices)
            progress.update(t_sub, completed=done)

        def tick(name: str, amount: int) -> None:
            progress.advance(tasks[name], amount)

        clock.start("practices: records, enrolment, submissions")

        with ThreadPoolExecutor(max_workers=o.jobs, thread_name_prefix="demo") as pool:
            futures = {
                pool.submit(
                    build_practice,
                    p,
                    tools=tools,
                    server_url=server.url,
                    registered_at_aggregator=set(existing),
                    first_period=first_period,
                    period_end=period_end,
                    tick=tick,
                ): p
                # largest first, so the two lanes finish together
                for p in sorted(plan.practices, key=lambda p: -p.patients)
            }
            try:
                for fut in as_completed(futures):
                    p = futures[fut]
                    try:
                        r = fut.result()
                    except DemoError as exc:
                        failures.append(str(exc))
                        progress.console.print(
                            f"[red]FAIL[/red] {exc}", markup=True, highlight=False
                        )
                        continue
                    results[p.ods] = r
                    accepted = sum(1 for x in r.run_outcomes if x.get("state") == "accepted")
                    refused = [x for x in r.run_outcomes if x.get("state") == "refused"]
                    for x in refused:
                        failures.append(
                            f"practice {p.ods}: period {x.get('period')} refused: {x.get('detail')}"
                        )
                    progress.console.print(
                        f"{p.ods} {p.name:<28} {p.group:<15} {r.registered:>5,} registered  "
                        f"IMD {p.imd_decile:>2}  "
                        + (f"{accepted} periods accepted" if accepted else "nothing new to send")
                        + (
                            f" ({', '.join(r.guard_approved)} held by the disclosure guard, "
                            "approved by the demo)"
                            if r.guard_approved
                            else ""
                        )
                        + (f", [red]{len(refused)} refused[/red]" if refused else ""),
                        highlight=False,
                    )
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise

        clock.start("demo users")
        _add_users(tools, home, state, plan)
        clock.start("agents audited")

        def audit(p: PracticePlan) -> dict[str, Any]:
            try:
                report: dict[str, Any] = tools.agent(p.ods, "audit", "verify", ok_codes=(0, 8))
            finally:
                progress.advance(t_audit)
            return report

        enrolled_plans = [p for p in plan.practices if (home.agent(p.ods) / "trust.json").exists()]
        progress.update(t_audit, total=len(enrolled_plans))
        with ThreadPoolExecutor(max_workers=o.jobs, thread_name_prefix="audit") as pool:
            for p, pending in [(p, pool.submit(audit, p)) for p in enrolled_plans]:
                try:
                    audits[p.ods] = pending.result()
                except DemoError as exc:
                    audits[p.ods] = {"ok": False, "failures": [str(exc)]}
                if not audits[p.ods].get("ok"):
                    failures.append(
                        f"practice {p.ods}: audit verify failed: {audits[p.ods].get('failures')}"
                    )

    clock.start("checks: registry, outboxes, log, dashboard")
    registered = {
        p["practice"]: p for p in tools.aggregator("practice", "list", what="practice list")
    }
    planned = [p.ods for p in plan.practices]
    missing = [ods for ods in planned if ods not in registered]
    not_enrolled = [ods for ods in planned if not (registered.get(ods) or {}).get("active_kid")]
    if missing:
        failures.append(f"practices not registered at the aggregator: {', '.join(missing)}")
    if not_enrolled:
        failures.append(
            f"practices with no active key at the aggregator: {', '.join(not_enrolled)}"
        )

    counts = {k: 0 for k in ("accepted", "refused", "queued", "held", "rejected")}
    short: list[str] = []
    for ods in planned:
        c = _outbox_counts(home, ods)
        for k, v in c.items():
            counts[k] = counts.get(k, 0) + v
        if c["accepted"] < expected_per_practice:
            short.append(f"{ods} ({c['accepted']}/{expected_per_practice})")
    if short:
        failures.append(f"practices missing accepted periods: {', '.join(short)}")

    size, cp_ok, cp_error = _log_size(server.url, state["log_key"])
    enrolled_count = n - len(not_enrolled)
    if not cp_ok:
        failures.append(f"the log's checkpoint does not verify with the log key: {cp_error}")
    if size < enrolled_count + counts["accepted"]:
        failures.append(
            f"log size {size} is smaller than enrolments + accepted submissions "
            f"({enrolled_count} + {counts['accepted']})"
        )

    users = state.get("users", {})
    reachable, shown, dash_error = _check_dashboard(server.url, users["admin"]["token"], planned)
    if not reachable:
        failures.append(f"dashboard: {dash_error}")
    elif shown < n:
        failures.append(f"dashboard overview shows {shown} of {n} practices")

    clock.stop()
    tools_cpu = tools.commands_cpu()
    server_cpu = server.cpu_seconds()
    audit_failed = sorted(ods for ods, a in audits.items() if not a.get("ok"))
    return {
        "ok": not failures,
        "mode": mode,
        "home": str(home.root),
        "url": f"{server.url}/dashboard",
        "api_url": server.url,
        "network": {"name": NETWORK_NAME, "aud": AUD, "groups": list(plan.groups)},
        "practices": {"planned": n, "registered": n - len(missing), "enrolled": enrolled_count},
        "periods": {
            "first": first_period,
            "per_practice": expected_per_practice,
        },
        "submissions": {
            "expected": n * expected_per_practice,
            "accepted": counts["accepted"],
            "rejected": counts["refused"] + counts["rejected"],
            "pending": counts["queued"] + counts["held"],
            # months the disclosure guard held in this run, approved by the demo
            "guard_holds_approved": sum(len(r.guard_approved) for r in results.values()),
        },
        "log": {"size": size, "checkpoint_verified": cp_ok},
        "audit": {
            "verified": sum(1 for a in audits.values() if a.get("ok")),
            "failed": audit_failed,
            "all_passed": bool(audits) and not audit_failed and len(audits) == n,
        },
        "dashboard": {"reachable": reachable, "practices_shown": shown},
        "ig_pack": str(home.ig_pack),
        "users": [
            {"role": role, "name": users[role]["name"], "token": users[role]["token"]}
            for role in ROLES
            if role in users
        ],
        "seconds_to_dashboard": round(time.monotonic() - started, 1),
        # where the time goes: every CLI process the demo ran, and the aggregator server
        "commands_run": tools.commands_run,
        "runner": tools.runner,
        "phases": clock.phases,
        "cpu_seconds": {
            "commands": round(tools_cpu, 1),
            "server": None if server_cpu is None else round(server_cpu, 1),
        },
        "failures": failures,
    }


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def print_summary(summary: Mapping[str, Any], out: Console, *, served: bool = True) -> None:
    """The summary on stdout; ``served``: whether the dashboard answers after it (not with
    --once, whose aggregator stops once the network is built and checked)."""
    s = summary
    sub = s["submissions"]
    state = "[green]ready[/green]" if s["ok"] else "[red]built with failures[/red]"
    out.print(
        f"\nDemo network {state} in {s['seconds_to_dashboard']:.0f} s: "
        f"{s['practices']['enrolled']}/{s['practices']['planned']} practices enrolled in "
        f"{_plural(len(s['network']['groups']), 'PCN')}; {sub['accepted']} submissions accepted, "
        f"{sub['rejected']} rejected; log size {s['log']['size']}"
        f"{' (checkpoint verified)' if s['log']['checkpoint_verified'] else ''}; "
        f"{s['audit']['verified']}/{s['practices']['planned']} agent audits verified",
        highlight=False,
    )
    if sub.get("guard_holds_approved"):
        out.print(
            f"{sub['guard_holds_approved']} monthly submissions were held by the disclosure "
            "guard and approved by the demo on the practices' behalf (in a practice, "
            "`fedqi-agent pending` shows why one is held)",
            highlight=False,
        )
    cpu = s["cpu_seconds"]
    out.print(
        f"(CPU: {cpu['commands']:.0f} s in {s['commands_run']} commands"
        + (" in warm worker processes" if s.get("runner") == "pool" else " (one process each)")
        + (f", {cpu['server']:.0f} s in the aggregator)" if cpu["server"] is not None else ")"),
        highlight=False,
    )
    for failure in s["failures"]:
        out.print(f"[red]FAIL[/red] {failure}", highlight=False)
    if served:
        out.print(f"\nDashboard: [bold]{s['url']}[/bold]", highlight=False)
    else:
        out.print(
            f"\nDashboard (not served now, --once: `fedqi-demo` without it serves it here): "
            f"[bold]{s['url']}[/bold]",
            highlight=False,
        )
    out.print(f"IG pack: {s['ig_pack']}/index.html (and /dashboard/ig-pack)", highlight=False)
    out.print("Sign in with one of these demo tokens (kept in demo.json in the demo home):")
    for u in s["users"]:
        out.print(f"  {ROLE_LABELS[u['role']]:<14} {u['name']:<36} {u['token']}", highlight=False)
    out.print(
        f"API: curl -H 'Authorization: Bearer <token>' {s['api_url']}/v1/benchmarks/overview",
        highlight=False,
    )


# --- the command -------------------------------------------------------------------------------

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


# The environment main(argv, environ) was handed, for the length of the run: the demo's tools
# get it passed down, never through a swapped os.environ.
_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "fedqi_demo_environ", default=None
)


def _invocation_environ() -> Mapping[str, str]:
    environ = _ENVIRON.get()
    return os.environ if environ is None else environ


@app.command(epilog=demo_exit_help())
def demo(
    practices: Annotated[int, typer.Option("--practices", help="number of practices")] = 30,
    groups: Annotated[
        int | None,
        typer.Option(
            "--groups",
            help=f"number of groups, PCNs (default {DEFAULT_GROUPS}, or --practices if fewer)",
            show_default=False,
        ),
    ] = None,
    periods: Annotated[
        int, typer.Option("--periods", help="monthly periods each practice submits")
    ] = 12,
    home: Annotated[Path, typer.Option("--home", help="the demo's directory")] = Path("demo-home"),
    port: Annotated[
        int, typer.Option("--port", help="loopback port to serve on (0: any free port)")
    ] = DEFAULT_PORT,
    once: Annotated[
        bool, typer.Option("--once", help="build, check and stop; do not serve")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON summary on stdout")] = False,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="delete the demo home and start again")
    ] = False,
    jobs: Annotated[int, typer.Option("--jobs", help="agents working at once")] = 2,
    runner: Annotated[
        str,
        typer.Option(
            "--runner",
            help="pool: run each command line in one of --jobs warm worker processes; "
            "process: a new process per command (slower: Python start-up each time)",
        ),
    ] = "pool",
    seed: Annotated[int, typer.Option("--seed", help="seed of the network plan")] = DEFAULT_SEED,
) -> None:
    """A network of synthetic practices, each with its own agent, key and records, feeding a live
    aggregator and dashboard over HTTP. Re-running resumes; --fresh starts again. One run at a
    time per --home: a second one is refused while the first is alive. Ctrl-C, or SIGINT,
    SIGTERM or SIGHUP to its pid, stops it and its aggregator."""
    if groups is None:  # the default never exceeds the practices there are
        groups = min(DEFAULT_GROUPS, practices) if practices >= 1 else DEFAULT_GROUPS
    opts = Options(practices, groups, periods, home, port, once, as_json, fresh, jobs, seed, runner)
    # soft_wrap: tokens and URLs stay on one line, whatever the terminal width (or a pipe).
    err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    out = _SummaryConsole(highlight=False, soft_wrap=True, emoji=False)
    _check_options(opts)  # before the home is touched
    with _stopped_by_signals(), claim_home(DemoHome(home)):
        _build_and_serve(opts, err, out)


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP sent to the demo's pid stop it as Ctrl-C does. Set here, not
    left to Python's default: a demo started in the background by a shell inherits SIGINT
    ignored, a service manager stops with SIGTERM, and closing the terminal sends SIGHUP, which
    by default ended the demo without stopping its aggregator."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    # SIGHUP: the terminal it runs in was closed (not on Windows, which has none).
    stops = (
        signal.SIGINT,
        signal.SIGTERM,
        *((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()),
    )
    previous = {s: signal.signal(s, _interrupt) for s in stops}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _build_and_serve(opts: Options, err: Console, out: Console) -> None:
    home = DemoHome(opts.home)
    try:
        summary, server = run_demo(opts, err, _invocation_environ())
    except KeyboardInterrupt:
        err.print("\ninterrupted: run fedqi-demo again to resume where it stopped")
        raise typer.Exit(DemoExit.INTERRUPTED) from None
    try:
        try:
            if opts.as_json:
                typer.echo(json.dumps(summary, indent=2, sort_keys=True))
            else:
                print_summary(summary, out, served=summary["ok"] and not opts.once)
        except BrokenPipeError:  # what reads stdout has gone (`| head`): stop, as on Ctrl-C
            _stdout_to_devnull()
            err.print("stdout was closed before the summary was written; stopping")
            raise typer.Exit(DemoExit.FAILED) from None
        if opts.once or not summary["ok"]:
            if not summary["ok"]:
                err.print(f"see the logs in {home.logs}")
            elif not opts.as_json:  # the URL above answers only while a run serves it
                err.print(
                    "--once: the aggregator stops now, so the dashboard above is not served; "
                    "run `fedqi-demo` again without --once to serve it (it resumes)"
                )
            raise typer.Exit(DemoExit.OK if summary["ok"] else DemoExit.FAILED)
        err.print(f"Serving until Ctrl-C (server log: {home.log('aggregator')})")
        try:
            code = server.proc.wait() if server.proc else 1
        except KeyboardInterrupt:
            code = 0
        if code != 0:
            raise DemoError(_aggregator_ended(code, home.log("aggregator")))
        # Ctrl-C reaches the server too (same process group); either way this is a clean stop.
        err.print("\nstopped; run `fedqi-demo` again to serve this network again (it resumes)")
    finally:
        server.stop()


class _SummaryConsole(Console):
    """The summary's console: a closed stdout raises BrokenPipeError, as ``typer.echo`` does,
    where Rich's own handling exits at once (before the demo has stopped its aggregator)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def _stdout_to_devnull() -> None:
    """Point stdout at the null device, so that Python's flush of it at exit does not fail
    again on the closed pipe (and print 'Exception ignored')."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _aggregator_ended(code: int, log: Path) -> str:
    """Why the aggregator ended while the demo served: a negative exit is a signal (from some
    other process: this demo stops it only after it stops serving)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return (
            f"the aggregator was terminated by {name} (exit {code}) from outside this demo; "
            f"see its log ({log})"
        )
    return f"the aggregator exited by itself (exit {code}); see its log ({log})"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    token = _ENVIRON.set(dict(os.environ if environ is None else environ))
    try:
        return run_app(app, args, "fedqi-demo")
    finally:
        _ENVIRON.reset(token)


def missing_for_extra(extra: str, dist: str = "fedqi") -> list[str]:
    """The distributions ``dist[extra]`` requires (read from the installed metadata, so
    pyproject.toml stays the one list) that are not installed; nested extras such as the demo's
    ``fedqi[aggregator]`` are followed. Empty when ``dist`` is not installed (a source tree).
    (The aggregator's entry point has its own copy: the demo never imports the aggregator.)"""
    import re
    from importlib import metadata

    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return []
    marker = re.compile(r"""extra\s*==\s*["']""" + re.escape(extra) + r"""["']""")
    missing: list[str] = []
    for req in requires:
        spec, _, env = req.partition(";")
        found = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[([^\]]*)\])?", spec.strip())
        if not marker.search(env) or found is None:
            continue
        name, nested = found.group(1), found.group(2)
        if name.lower() == dist.lower():
            for inner in (nested or "").split(","):
                missing += [m for m in missing_for_extra(inner.strip(), dist) if m not in missing]
            continue
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def entry(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The ``fedqi-demo`` console script: the demo runs an aggregator, so it needs the ``demo``
    extra (``pip install 'fedqi[demo]'``); without it, one line saying so instead of a traceback."""
    missing = missing_for_extra("demo")
    if missing:
        typer.echo(
            f"error: fedqi-demo needs the 'demo' extra, which is not installed (missing: "
            f"{', '.join(missing)}); install it with: pip install 'fedqi[demo]'",
            err=True,
        )
        return DemoExit.MISSING_EXTRA
    return main(argv, environ)


if __name__ == "__main__":
    raise SystemExit(entry())
