"""Loopback ports for the tests that start real servers (``fedqi-aggregator serve``, nginx,
PostgreSQL, the demo): the one port picker they share."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port that was free a moment ago: bound on port 0, read, and closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
