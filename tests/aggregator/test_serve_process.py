"""`fedqi-aggregator serve` as its own process (what production runs), on loopback."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from agg_helpers import serve_on_a_free_port

from aggregator.errors import ConfigError, ExitCode, PortInUseError
from tests.ports import free_port

BIN = Path(sys.executable).parent / "fedqi-aggregator"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_answers_and_stops_on_sigterm(network, workers):
    proc, port = serve_on_a_free_port(network, "--workers", workers)
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
        assert r.json() == {"status": "ready"}
        key = httpx.get(f"http://127.0.0.1:{port}/v1/log/key", timeout=5).json()
        assert key["aud"] == "fedqi-test"
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down cleanly, then re-raises the signal it caught (so -SIGTERM is fine)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)


def _cookie_over_https_from(port: int, source: str, token: str) -> str:
    """Sign in from ``source`` as a proxy that terminated TLS would: the Set-Cookie header."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as c:
        r = c.post(
            f"http://127.0.0.1:{port}/dashboard/login",
            data={"token": token},
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"},
        )
    assert r.status_code == 303, r.text
    return r.headers["set-cookie"]


@pytest.mark.parametrize(
    ("allow", "source", "secure"),
    [
        (None, "127.0.0.1", True),  # the default trusts a proxy on the same host
        (None, "127.0.0.2", False),  # ... and no other: its X-Forwarded-Proto is not believed
        ("*", "127.0.0.2", True),  # deploy/'s compose file: only the proxy reaches the port
        ("127.0.0.2", "127.0.0.2", True),
    ],
)
def test_the_session_cookie_is_secure_behind_a_trusted_proxy(network, allow, source, secure):
    env = {} if allow is None else {"FEDQI_AGGREGATOR_FORWARDED_ALLOW_IPS": allow}
    proc, port = serve_on_a_free_port(network, env=env)
    try:
        cookie = _cookie_over_https_from(port, source, network.user("admin"))
        assert cookie.startswith("fedqi_session=")
        assert ("; secure" in cookie.lower()) is secure, cookie
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)


def test_the_compose_file_trusts_its_proxy() -> None:
    compose = (
        Path(__file__).resolve().parents[2] / "deploy" / "aggregator" / "compose.yaml"
    ).read_text()
    assert 'FEDQI_AGGREGATOR_FORWARDED_ALLOW_IPS: "*"' in compose


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_port_in_use_is_one_clear_error(network, workers):  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [str(BIN), "serve", "--db", network.db, "--key-dir", str(network.settings.key_dir),
             "--port", str(port), "--workers", workers],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert r.returncode == ExitCode.PORT_IN_USE, (r.returncode, r.stderr)
    assert f"error: serve: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "Traceback" not in r.stderr and "startup complete" not in r.stderr


def test_a_port_in_use_is_told_by_its_errno_not_by_the_systems_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows says "Only one usage of each socket address ..." with its own number (10048):
    still a port in use (exit 4, which the demo acts on), the system's words kept. Another
    failure to bind (an address this machine does not have: EADDRNOTAVAIL) stays exit 1."""
    import aggregator.web.serving
    from aggregator.cli import _bind

    here = SimpleNamespace(host="127.0.0.1", port=8400)
    windows = "Only one usage of each socket address (protocol/network address/port) is normally permitted"

    def held(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
        raise OSError(10048, windows)

    with monkeypatch.context() as m:
        m.setattr(aggregator.web.serving, "bound_socket", held)
        with pytest.raises(PortInUseError) as raised:
            _bind(here)
    assert raised.value.message == f"serve: cannot listen on 127.0.0.1:8400: {windows}"

    elsewhere = SimpleNamespace(host="192.0.2.1", port=free_port())  # TEST-NET-1: nobody's
    with pytest.raises(ConfigError) as raised_too:
        _bind(elsewhere)
    assert not isinstance(raised_too.value, PortInUseError)
    assert raised_too.value.message.startswith("serve: cannot listen on 192.0.2.1:")


def test_workers_that_uvicorn_binds_still_refuse_a_held_port_with_exit_4(
    network, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    """Where SO_REUSEPORT does not spread connections (not Linux), ``serve --workers 2`` hands
    the port to uvicorn, which would bind it itself and exit 3 on a clash: serve tries the port
    first, so a held one is its one line and exit 4 there too, and uvicorn is never started."""
    import uvicorn

    import aggregator.web.serving
    from aggregator.cli import main as cli

    monkeypatch.setattr(aggregator.web.serving, "spreads_connections", lambda: False)
    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(args))
    for name in ("FEDQI_AGGREGATOR_DB", "FEDQI_AGGREGATOR_KEY_DIR", "FEDQI_AGGREGATOR_CONFIG"):
        monkeypatch.setenv(name, "")  # serve sets these for its workers; undone after the test
        monkeypatch.delenv(name)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        capsys.readouterr()
        code = cli(["serve", "--db", network.db, "--key-dir", str(network.settings.key_dir),
                    "--port", str(port), "--workers", "2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == ExitCode.PORT_IN_USE == 4, err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err, err
    assert started == []


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_logs_a_changed_visibility_to_its_log(network, workers):  # type: ignore[no-untyped-def]
    """docs/governance.md: a changed visibility choice is logged (logger
    fedqi.aggregator.visibility: practice, old and new value, the submission). serve configured
    only uvicorn's loggers, so the line reached no handler; it is now in serve's output, and it
    holds no count."""
    from agg_helpers import enrolled

    from protocol.submission import Submission

    agent = enrolled(network, "C83003")
    proc, port = serve_on_a_free_port(network, "--workers", workers)
    try:
        sub = agent.submission_model().model_copy(update={"visibility": "totals_only"})
        sub = Submission.from_bytes(sub.to_bytes())
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/submissions",
            content=agent.sign(sub.to_bytes()),
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    line = next(x for x in err.splitlines() if "fedqi.aggregator.visibility" in x)
    assert (
        f"practice C83003 visibility named -> totals_only from submission {sub.submission_id}"
        in line
    )
    assert line.startswith("INFO:")
    # no count of the submission in it: only the practice, the two values and the id
    rest = line.replace(sub.submission_id, "").replace("C83003", "")
    assert not any(ch.isdigit() for ch in rest), line
