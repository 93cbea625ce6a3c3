"""A serving demo owns its home: a second run on it is refused while the first is alive, signals
to the demo's pid stop it cleanly, and only an aggregator whose demo is gone is stopped as stale.
Real `fedqi-demo` processes on a one-practice, one-month network, built once and resumed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.demo_process import serve_demo

DEMO = Path(sys.executable).parent / "fedqi-demo"
SMALL = ["--practices", "1", "--periods", "1"]


class Serving:
    """`fedqi-demo` serving in the background, as `make demo &` from a script runs it: its own
    session (no terminal's Ctrl-C) and SIGINT inherited ignored."""

    def __init__(self, home: Path) -> None:
        demo = serve_demo(
            [*SMALL, "--home", str(home)],
            timeout=300,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        self.proc, self.url, self._output = demo.proc, demo.url, demo.output
        self.lines = demo.output.lines
        self.server_pid = json.loads((home / "demo.json").read_text())["server_pid"]

    @property
    def stderr(self) -> str:
        return "".join(self.lines)[-3000:]

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._output.join(10)
        return code

    def ready(self) -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # its aggregator, if it outlived it
            os.kill(self.server_pid, signal.SIGKILL)


def _once(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DEMO), *SMALL, "--home", str(home), "--port", "0", "--once"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _gone(pid: int, within: float = 15) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("serving") / "demo-home"
    built = _once(home)
    assert built.returncode == 0, built.stderr[-3000:]
    return home


@pytest.fixture
def serving(home: Path) -> Iterator[Serving]:
    demo = Serving(home)
    try:
        yield demo
    finally:
        demo.kill()


def test_a_second_run_on_a_home_in_use_is_refused_and_leaves_the_first_serving(
    home: Path, serving: Serving
) -> None:
    second = _once(home)
    assert second.returncode == 1, second.stderr[-3000:]
    assert f"is in use by another fedqi-demo that is still running (pid {serving.proc.pid})" in (
        second.stderr
    ), second.stderr
    assert "stopped this demo's aggregator" not in second.stderr
    assert "Resuming" not in second.stderr  # refused before doing anything
    time.sleep(1)
    assert serving.proc.poll() is None, serving.stderr
    assert serving.ready()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_demos_pid_stops_it_and_its_aggregator_cleanly(
    serving: Serving, signum: signal.Signals
) -> None:
    os.kill(serving.proc.pid, signum)  # to the demo alone, not its process group
    assert serving.wait(60) == 0, serving.stderr
    assert "stopped; run `fedqi-demo` again to serve this network again" in serving.stderr
    assert _gone(serving.server_pid), "the demo's aggregator is still running"


def test_an_aggregator_ended_by_a_signal_from_outside_is_named_as_such(serving: Serving) -> None:
    os.kill(serving.server_pid, signal.SIGTERM)  # what an earlier run used to send it
    assert serving.wait(60) == 1, serving.stderr
    assert "the aggregator was terminated by SIGTERM (exit -15) from outside this demo" in (
        serving.stderr
    ), serving.stderr
    assert "stopped by itself" not in serving.stderr


def test_only_an_aggregator_whose_demo_has_ended_is_stopped_as_stale(
    home: Path, serving: Serving
) -> None:
    serving.proc.kill()  # the demo dies without stopping its aggregator
    serving.proc.wait()
    assert serving.ready()
    again = _once(home)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        f"stopped this demo's aggregator (pid {serving.server_pid}), left running by an "
        "earlier run that has ended" in again.stderr
    ), again.stderr
    assert _gone(serving.server_pid)
