"""A server's free port taken before it binds (tests/ports.py): the first start moves to another
free port, and serves there; a restart keeps the port it was given."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest
from e2e_helpers import AggregatorServer

import tests.ports


def test_a_port_taken_before_serve_binds_it_is_replaced_by_another(
    aggregator_factory: Callable[..., AggregatorServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:  # another process's, as a client's connection can be
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = taken.getsockname()[1]
        chosen = iter([held, tests.ports.free_port()])  # the port picker hands out ``held`` first
        monkeypatch.setattr(tests.ports, "free_port", lambda: next(chosen))

        server = aggregator_factory()  # `fedqi-aggregator serve`, started and waited for

        assert next(chosen, None) is None  # both ports were handed out
        refused = (server.root / f"serve-{held}.log").read_text()
        assert f"cannot listen on 127.0.0.1:{held}: Address already in use" in refused
        assert server.port not in (None, held)
        assert httpx.get(f"{server.url}/readyz", timeout=10).json() == {"status": "ready"}

    # A restart serves on the same port (agents were given its URL); none is chosen for it.
    monkeypatch.setattr(tests.ports, "free_port", lambda: pytest.fail("a restart chose a port"))
    port = server.port
    server.kill()
    server.start()
    assert server.port == port
    assert httpx.get(f"{server.url}/readyz", timeout=10).json() == {"status": "ready"}


def test_only_a_port_in_use_is_tried_again_and_a_few_times_at_most() -> None:
    tried: list[int] = []

    def taken(port: int) -> None:
        tried.append(port)
        raise tests.ports.PortInUse(f"port {port} taken")

    with pytest.raises(AssertionError, match="every port tried was taken"):
        tests.ports.on_a_free_port(taken)
    assert len(tried) == tests.ports.ATTEMPTS

    tried.clear()

    def broken(port: int) -> None:  # any other failure is the test's at once
        tried.append(port)
        raise RuntimeError("no such database")

    with pytest.raises(RuntimeError, match="no such database"):
        tests.ports.on_a_free_port(broken)
    assert len(tried) == 1
