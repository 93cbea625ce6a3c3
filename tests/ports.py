"""Loopback ports for the tests that start real servers (``fedqi-aggregator serve``, nginx,
PostgreSQL, the demo): one port picker, and a start that survives the port being taken.

``free_port`` binds port 0, reads the port the kernel chose and closes the socket; the server
binds it seconds later (after its imports). Any process can take the port in between (a
client's outgoing connection is enough), and the server then exits with "Address already in
use". So a server is started with ``on_a_free_port(start)``: ``start(port)`` starts it and waits
until it answers, raising ``PortInUse`` when it exits saying its address is in use; it is then
started again on another port, a few times. Any other failure fails at once, as before.

Only a first start moves: a server restarted after its URL was given out (to an agent, a
config file, another server) keeps its port.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, AnyStr, TypeVar

import httpx

T = TypeVar("T")

#: How many ports a start tries before its failure is the test's.
ATTEMPTS = 5

# What each server says when its port is taken: serve ("cannot listen on 127.0.0.1:P: Address
# already in use"), uvicorn and PostgreSQL ("Address already in use", "[Errno 98]"), nginx
# ("bind() to 127.0.0.1:P failed (98: Address already in use)"), and the demo's own check
# before it starts serve ("port P on 127.0.0.1 is in use").
_IN_USE = re.compile(
    r"address already in use|errno 98\b|\(98: |port \d+ on 127\.0\.0\.1 is in use", re.IGNORECASE
)


class PortInUse(Exception):
    """The server could not bind its port: another process took it after ``free_port``."""


def free_port() -> int:
    """A loopback port that was free a moment ago (see the module's docstring)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def says_port_in_use(text: str) -> bool:
    return bool(_IN_USE.search(text))


def on_a_free_port(start: Callable[[int], T], attempts: int = ATTEMPTS) -> T:
    """``start(port)`` on a free port, and again on another one while it raises ``PortInUse``
    (at most ``attempts`` ports); what the first start that succeeds returns."""
    taken: list[str] = []
    for _ in range(attempts):
        port = free_port()
        try:
            return start(port)
        except PortInUse as exc:
            taken.append(f"port {port}: {exc}")
    raise AssertionError(f"every port tried was taken before the server bound it: {taken}")


def fail_unless_running(proc: subprocess.Popen[Any], output: Callable[[], str], what: str) -> None:
    """Nothing while ``proc`` runs. Once it has exited: ``PortInUse`` if ``output()`` (read only
    then) says its address was in use, else an AssertionError with that output."""
    if proc.poll() is None:
        return
    text = output()
    if says_port_in_use(text):
        raise PortInUse(f"{what} exited ({proc.returncode}): {text[-2000:]}")
    raise AssertionError(f"{what} exited ({proc.returncode}): {text}")


def stop(proc: subprocess.Popen[Any]) -> None:
    """Terminate ``proc`` if it still runs (kill it if it has not ended 30 s later)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stderr_of(proc: subprocess.Popen[Any]) -> Callable[[], str]:
    """``proc``'s piped stderr as text (for ``output``: read once it has exited)."""

    def read() -> str:
        if proc.stderr is None:
            return ""
        data = proc.stderr.read()
        return data.decode(errors="replace") if isinstance(data, bytes) else data

    return read


def wait_answering(
    proc: subprocess.Popen[Any],
    url: str,
    *,
    output: Callable[[], str] | None = None,
    what: str = "the server",
    timeout: float = 120.0,
    also: Callable[[], bool] = lambda: True,
) -> None:
    """Wait until ``url`` answers 200 (and ``also()`` holds) while ``proc`` runs; see
    ``fail_unless_running`` for a ``proc`` that exits first. ``output`` (a log file's reader:
    it is read on a timeout too) defaults to ``proc``'s piped stderr (read once it has exited).
    The default timeout is for a loaded 2-core machine, where serve takes 15 s to import and
    bind with one worker and 20 to 30 s with two (2.5 s idle)."""
    read = output or stderr_of(proc)
    deadline = time.monotonic() + timeout
    while True:
        if also():
            try:
                if httpx.get(url, timeout=2, verify=False).status_code == 200:
                    return
            except httpx.TransportError:
                pass
        fail_unless_running(proc, read, what)
        if time.monotonic() > deadline:
            said = f": {output()}" if output else ""
            raise AssertionError(f"{what} did not answer {url} within {timeout:.0f} s{said}")
        time.sleep(0.2)


def started(
    proc: subprocess.Popen[AnyStr],
    url: str,
    *,
    output: Callable[[], str] | None = None,
    what: str = "the server",
    timeout: float = 120.0,
    also: Callable[[], bool] = lambda: True,
) -> subprocess.Popen[AnyStr]:
    """``proc`` once ``url`` answers (``wait_answering``); a ``proc`` that does not is not left
    running. For the ``start`` of ``on_a_free_port``."""
    try:
        wait_answering(proc, url, output=output, what=what, timeout=timeout, also=also)
    except BaseException:
        stop(proc)
        raise
    return proc


class LineReader:
    """Collects the lines of a text stream of ``proc`` (its stderr, say) in a thread."""

    def __init__(self, proc: subprocess.Popen[str], stream: Iterable[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._thread.start()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def join(self, timeout: float = 10) -> None:
        self._thread.join(timeout)

    def wait_for(self, needle: str, *, what: str, timeout: float, poll: float = 0.3) -> None:
        """Wait until a line holds ``needle`` while ``proc`` runs (as ``fail_unless_running``,
        with everything it wrote, once the reader has it all, as its output)."""
        deadline = time.monotonic() + timeout
        while not any(needle in ln for ln in self.lines):
            fail_unless_running(self.proc, self._everything, what)
            assert time.monotonic() < deadline, self.text[-3000:]
            time.sleep(poll)

    def _everything(self) -> str:
        self.join()  # the process has exited: the reader gets the rest, then the end
        return self.text[-3000:]
