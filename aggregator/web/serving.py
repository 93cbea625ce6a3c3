"""``serve --workers N`` on Linux: N uvicorn processes, each listening on a socket of its own,
all bound to the same address with ``SO_REUSEPORT``, so that the kernel spreads incoming
connections over them (by a hash of each connection's addresses and ports).

Why not uvicorn's own ``--workers``: there, the workers share the parent's one listening socket
and each accepts whatever is waiting when it wakes. Agents and the proxy in ``deploy/`` keep
their connections open, and a burst of them all went to whichever worker woke first: in the
ingest benchmark, two runs in three put all 16 client connections on one of the two workers,
which then did all the verifying on one core while the other idled (docs/benchmarks.md,
"Connections spread over the workers").

The parent binds the address too (with ``SO_REUSEPORT``, never listening), so a port already in
use fails at once with a clear error, and then only supervises: SIGINT or SIGTERM stops every
worker (SIGTERM, then SIGKILL after a grace period); a worker that dies on its own is started
again. Linux only: where ``SO_REUSEPORT`` does not spread connections, ``serve`` uses
uvicorn's supervisor (see :func:`spreads_connections`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

log = logging.getLogger("uvicorn.error")  # configured by uvicorn.Config, as uvicorn's own lines are
GRACE_SECONDS = 20.0  # a stopped worker's time to finish its requests before SIGKILL
POLL_SECONDS = 0.5
RESTART_PAUSE_SECONDS = 1.0  # between restarts of a worker that keeps dying


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with the aggregator's own loggers added: every
    ``fedqi.*`` logger (``fedqi.aggregator.visibility``, ``fedqi.aggregator.benchmarks``) writes
    INFO and above to stderr beside uvicorn's lines, named, whatever ``log_level`` (which sets
    uvicorn's loggers only). Without it those lines reached no handler: uvicorn configures only
    its own loggers. What they log is practice codes, settings and submission ids, never a
    count or a patient's value (the rule for any line added to them)."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = {
        **LOGGING_CONFIG,
        "formatters": dict(LOGGING_CONFIG["formatters"]),
        "handlers": dict(LOGGING_CONFIG["handlers"]),
        "loggers": dict(LOGGING_CONFIG["loggers"]),
    }
    config["formatters"]["fedqi"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
        "use_colors": False,
    }
    config["handlers"]["fedqi"] = {
        "formatter": "fedqi",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["fedqi"] = {"handlers": ["fedqi"], "level": "INFO", "propagate": False}
    return config


def spreads_connections() -> bool:
    """Whether this platform's ``SO_REUSEPORT`` balances connections over listening sockets."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bound_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` with ``SO_REUSEADDR``, as uvicorn binds one, and
    with ``reuse_port`` also ``SO_REUSEPORT`` (each worker's own socket); not yet listening.
    On Windows, where ``SO_REUSEADDR`` would let the bind take a port another process holds,
    ``SO_EXCLUSIVEADDRUSE`` instead, so a port in use is refused (WSAEADDRINUSE) there too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if sys.platform == "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _worker(uvicorn_kwargs: dict[str, Any], host: str, port: int) -> None:
    """One worker process: its own listening socket, then uvicorn until it is told to stop."""
    import uvicorn

    config = uvicorn.Config(**uvicorn_kwargs)  # sets up uvicorn's logging in this process
    sock = bound_socket(host, port, reuse_port=True)
    uvicorn.Server(config).run(sockets=[sock])


class Supervisor:
    """Starts ``workers`` processes running ``target(*args)``, keeps them running until
    ``stopping`` is set, then stops them."""

    def __init__(
        self,
        workers: int,
        target: Callable[..., None],
        args: tuple[Any, ...],
        stopping: threading.Event,
    ) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._target = target
        self._args = args
        self.stopping = stopping
        self._processes: list[BaseProcess] = [self._start() for _ in range(workers)]

    def _start(self) -> BaseProcess:
        process = self._context.Process(target=self._target, args=self._args, daemon=False)
        process.start()
        log.info("Started worker process [%s]", process.pid)
        return process

    def watch(self) -> None:
        """Until ``stopping`` is set: start again any worker that has died."""
        while not self.stopping.wait(POLL_SECONDS):
            for i, process in enumerate(self._processes):
                if process.is_alive() or self.stopping.is_set():
                    continue
                log.warning(
                    "Worker process [%s] exited with %s; starting another",
                    process.pid,
                    process.exitcode,
                )
                if not self.stopping.wait(RESTART_PAUSE_SECONDS):
                    self._processes[i] = self._start()

    def stop(self) -> None:
        self.stopping.set()
        for process in self._processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        deadline = time.monotonic() + GRACE_SECONDS
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("Worker process [%s] did not stop in time; killing it", process.pid)
                process.kill()
                process.join()


def serve_workers(uvicorn_kwargs: dict[str, Any], reserve: socket.socket, workers: int) -> None:
    """Run ``workers`` uvicorn processes on the address ``reserve`` is bound to (by
    :func:`bound_socket`; closed on return), each with its own ``SO_REUSEPORT`` socket,
    until SIGINT or SIGTERM. ``uvicorn_kwargs`` must be picklable (the app as an import
    string): each process builds its own app from them."""
    import uvicorn

    host, port = reserve.getsockname()[:2]  # the port itself where 0 asked for any
    stopping = threading.Event()
    previous = {
        s: signal.signal(s, lambda _signum, _frame: stopping.set())
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        uvicorn.Config(**uvicorn_kwargs)  # checks the settings and sets up logging here too
        log.info(
            "Serving on http://%s:%d with %d worker processes, one listening socket each",
            host,
            port,
            workers,
        )
        supervisor = Supervisor(workers, _worker, (uvicorn_kwargs, host, port), stopping)
        try:
            supervisor.watch()
        finally:
            supervisor.stop()
    finally:
        reserve.close()
        for s, handler in previous.items():
            signal.signal(s, handler)


def connections_by_worker(parent_pid: int, port: int) -> dict[int, int]:
    """Linux, read from ``/proc``: each child of ``parent_pid`` that listens on ``port`` (a
    worker of ``serve --workers N``) -> how many connections to ``port`` it holds open. Which
    worker the kernel gave each connection, for the tests and the ingest benchmark. Empty
    where there is no ``/proc``."""
    if not Path("/proc/net/tcp").exists():
        return {}
    states = _tcp_states(port)
    out = {}
    for child in _children(parent_pid):
        mine = [states[i] for i in _socket_inodes(child) if i in states]
        if _LISTEN in mine:
            out[child] = mine.count(_ESTABLISHED)
    return out


_LISTEN, _ESTABLISHED = "0A", "01"  # the st column of /proc/net/tcp


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:  # ppid, after the command name
            found.append(int(entry))
    return found


def _tcp_states(port: int) -> dict[int, str]:
    """Socket inode -> state of every TCP socket whose local port is ``port``."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rpartition(":")[2], 16) == port:
                out[int(f[9])] = f[3]
    return out


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes
