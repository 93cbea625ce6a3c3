"""Resending queued messages from a background process.

When ``submit`` or ``approve`` finds the aggregator down, the message is already signed and
stored in the outbox, queued. Rather than keep the person waiting, the command says so at once
and starts ``fedqi-agent run --queued-only --keep-trying SECONDS`` detached from the terminal
(``transport.background_resend``, on by default): that process resends what is queued, with
the usual backoff between rounds, until nothing is queued or ``transport.background_seconds``
have passed, writing what it does to ``resend.log`` in the agent home. One such process runs per
agent home at a time (a lock file); the scheduled ``fedqi-agent run`` resends anything left.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from agent.home.settings import AgentSettings

LOCK_FILE = "resend.lock"
LOG_FILE = "resend.log"
#: The longest wait between two rounds of the background resend (seconds).
MAX_ROUND_WAIT = 60.0


@contextmanager
def resend_lock(home: Path) -> Iterator[bool]:
    """Hold the agent home's resend lock for the block; yields False (holding nothing) when
    another process holds it. POSIX advisory lock; elsewhere always True."""
    try:
        import fcntl
    except ImportError:  # Windows: no background resend races to guard against here
        yield True
        return
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def start(settings: AgentSettings, environ: Mapping[str, str]) -> str | None:
    """Start the background resend for ``settings.home`` unless it is turned off or one is
    already running; returns what to tell the person, or None."""
    t = settings.transport
    if not t.background_resend or t.background_seconds <= 0:
        return None
    home = settings.home
    with resend_lock(home) as free:
        if not free:
            return f"a background resend is already retrying (log: {home / LOG_FILE})"
    log = open(home / LOG_FILE, "ab")  # noqa: SIM115 (handed to the child, closed below)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--queued-only",
             "--keep-trying", str(t.background_seconds), "--home", str(home)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(environ), start_new_session=True,
        )  # fmt: skip
    finally:
        log.close()
    # Wait (briefly) until it holds the lock, so that a second command right after this one
    # finds it running instead of starting another.
    deadline = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < deadline:
        with resend_lock(home) as free:
            if not free:
                break
        time.sleep(0.05)
    minutes = t.background_seconds / 60
    return (
        f"a background process (pid {proc.pid}) keeps resending it for up to {minutes:g} min "
        f"(log: {home / LOG_FILE}); `fedqi-agent pending` and `audit list` show its state"
    )


def keep_trying(
    attempt: Callable[[], object],
    still_queued: Callable[[], bool],
    seconds: float,
    backoff: float,
    *,
    is_unreachable: Callable[[BaseException], bool],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Call ``attempt`` until nothing is queued or ``seconds`` have passed, waiting between
    rounds (``backoff`` doubled each round, at most :data:`MAX_ROUND_WAIT`). An exception for
    which ``is_unreachable`` is true means "try again later"; any other propagates. Returns
    whether the queue was emptied."""
    deadline = clock() + seconds
    wait = max(backoff, 0.5)
    while True:
        try:
            attempt()
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} still unreachable: {exc}", flush=True)
        if not still_queued():
            return True
        if clock() + wait > deadline:
            return False
        sleep(wait)
        wait = min(wait * 2, MAX_ROUND_WAIT)
