"""What the agent says when the aggregator is down, the URL is not an aggregator at all or its
certificate does not verify: at once, naming the stored message, which stays queued (real
servers on loopback)."""

from __future__ import annotations

import http.server
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_helpers import Agent, AggregatorServer

from agent.outbound.outbox import Outbox
from tests.tls_helpers import cert_pem, certificate, key_pem


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def plain_http_server() -> Iterator[str]:
    """Something that answers HTTP on loopback but is not a fedqi aggregator."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _queued(agent: Agent) -> list[int]:
    with Outbox.open(agent.home) as outbox:
        return [m.id for m in outbox.messages(kind="submission", state="queued")]


def test_submit_to_a_stopped_aggregator_says_so_at_once_naming_the_queued_message(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    # guard off: its run below sends every month to the last complete one, and a month the
    # disclosure guard held would stop it with exit 9 (release auto); that is not this test's
    agent = agent_factory(aggregator, guard="off")
    aggregator.kill()
    code, out, err = agent("submit", "--period", "2026-02")
    assert code == 5, (out, err)
    (queued,) = _queued(agent)
    lines = err.strip().splitlines()
    # With a verified catalogue cached, the catalogue is asked for once: no wait through the
    # backoff (retries 2 at 0.05 s here; 4 at 1 s by default, 15 s), the submission is signed,
    # stored and queued, and the one line that says so names it.
    assert len(lines) == 1, err
    assert "aggregator unreachable" in lines[0] and "1 try)" in lines[0], err
    assert (
        f"submission #{queued} (period 2026-02) is stored in the outbox and stays queued"
        in lines[0]
    )
    assert "fedqi-agent run" in lines[0] and "Traceback" not in err
    # "At once" is read from what it said, not timed (a loaded machine is slow to compute the
    # period): every wait between tries is told before it starts ("next in N s"), and none was.
    assert "next in" not in err

    aggregator.start()
    resent = agent.json("run", "--allow-stale")  # the months after the records' end too
    assert [o["message"] for o in resent][:1] == [queued]  # type: ignore[index,union-attr]
    assert resent[0]["state"] == "accepted"  # type: ignore[index]


def test_a_message_left_queued_is_resent_in_the_background(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """transport.background_resend: submit returns at once, naming the message and the
    background process, which sends it once the aggregator is back, then exits."""
    import os

    agent = agent_factory(aggregator, transport__background_resend="true")
    aggregator.kill()
    code, out, err = agent("submit", "--period", "2026-02")
    assert code == 5, (out, err)
    (queued,) = _queued(agent)
    assert f"submission #{queued} (period 2026-02)" in err
    m = re.search(r"a background process \(pid (\d+)\) keeps resending it", err)
    assert m, err
    pid = int(m.group(1))
    # a second failure does not start a second resender
    code, out, err2 = agent("submit", "--period", "2026-03")
    assert code == 5 and "already retrying" in err2, err2
    aggregator.start()
    deadline = time.monotonic() + 90
    while _queued(agent) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _queued(agent) == [], (agent.home / "resend.log").read_text()
    states = {m["id"]: m["state"] for m in agent.json("audit", "list")}  # type: ignore[union-attr]
    assert states[queued] == "accepted", states
    while time.monotonic() < deadline:  # it exits once nothing is queued
        # (started from this process, which ran the agent in-process: reap it here)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the background resend {pid} is still running")
    log = (agent.home / "resend.log").read_text()
    assert "accepted" in log and "still unreachable" in log, log


def test_submit_to_a_url_that_is_not_an_aggregator_says_what_answered(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent], plain_http_server: str
) -> None:
    agent = agent_factory(aggregator, guard="off")  # its run sends every month (see above)
    env = {"FEDQI_AGENT_AGGREGATOR_URL": plain_http_server}
    code, out, err = agent("submit", "--period", "2026-02", env=env)
    assert code == 5, (out, err)
    last = err.strip().splitlines()[-1]
    assert f"{plain_http_server} is not a fedqi aggregator" in last, err
    assert "application/problem+json" in last and "aggregator_url" in last
    assert "text/html" in last  # what it reached: the plain server's HTML error page
    # Not refused for ever: the message is kept queued for the right URL.
    (queued,) = _queued(agent)
    assert f"#{queued}" in last
    code, out, err = agent("run", "--json", "--allow-stale")
    assert code == 0 and "accepted" in out, err


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """An HTTPS server on loopback whose certificate the network's CA signed: (its URL, that
    CA's PEM file, another CA's PEM file)."""
    network_ca = certificate("network CA", ca=True)
    _, other_cert = certificate("some other CA", ca=True)
    key, cert = certificate("aggregator", issuer=network_ca, loopback=True)
    (tmp_path / "server.pem").write_bytes(cert_pem(cert) + key_pem(key))
    (tmp_path / "network-ca.pem").write_bytes(cert_pem(network_ca[1]))
    (tmp_path / "other-ca.pem").write_bytes(cert_pem(other_cert))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "server.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield (
        f"https://127.0.0.1:{server.server_address[1]}",
        tmp_path / "network-ca.pem",
        tmp_path / "other-ca.pem",
    )
    server.shutdown()
    server.server_close()


def test_a_certificate_that_does_not_verify_is_configuration_with_no_background_resend(
    aggregator: AggregatorServer,
    agent_factory: Callable[..., Agent],
    tls_server: tuple[str, Path, Path],
) -> None:
    """A ca_bundle that did not sign the server's certificate: exit 3 at once, naming ca_bundle
    and the URL, nothing signed, no retries and no background resend (the error is permanent
    until the configuration changes). A missing ca_bundle file is configuration too."""
    url, network_ca, other_ca = tls_server
    agent = agent_factory(aggregator, transport__background_resend="true")
    wrong = {"FEDQI_AGENT_AGGREGATOR_URL": url, "FEDQI_AGENT_CA_BUNDLE": str(other_ca)}

    code, out, err = agent("submit", "--period", "2026-02", env=wrong)
    assert code == 3, (code, out, err)
    (line,) = err.strip().splitlines()
    assert f"the TLS certificate of {url} does not verify against ca_bundle {other_ca}" in line
    assert "certificate verify failed" in line and "set ca_bundle" in line
    assert "background" not in line and "unreachable" not in line and "try 1" not in err
    assert _queued(agent) == []  # nothing was signed: the catalogue could not be fetched
    assert not (agent.home / "resend.log").exists()

    # A message already queued stays queued, said so, and still no background resend.
    aggregator.kill()
    stopped = {"FEDQI_AGENT_TRANSPORT__BACKGROUND_RESEND": "false"}
    assert agent("submit", "--period", "2026-02", env=stopped)[0] == 5
    (queued,) = _queued(agent)
    code, out, err = agent("submit", "--period", "2026-02", env=wrong)
    assert code == 3, (code, out, err)
    assert f"submission #{queued} (period 2026-02) is stored in the outbox and stays queued" in err
    assert "does not verify against ca_bundle" in err and "background" not in err
    code, out, err = agent("run", env=wrong)
    assert code == 3 and "does not verify against ca_bundle" in err, (code, out, err)
    code, out, err = agent("audit", "verify", env=wrong)
    assert code == 3 and "does not verify" in err and "nothing was verified" in err, err
    assert not (agent.home / "resend.log").exists() and _queued(agent) == [queued]

    # No ca_bundle: the system trust store does not know the network's CA either.
    code, out, err = agent("audit", "verify", env={"FEDQI_AGENT_AGGREGATOR_URL": url})
    assert code == 3 and "against the system trust store (no ca_bundle set)" in err, err

    # A ca_bundle file that is not there: configuration, not an unreachable aggregator.
    missing = {**wrong, "FEDQI_AGENT_CA_BUNDLE": str(other_ca.with_name("nope.pem"))}
    code, out, err = agent("run", env=missing)
    assert code == 3, (code, out, err)
    assert f"ca_bundle {other_ca.with_name('nope.pem')}: cannot load" in err, err
    assert "No such file or directory" in err

    # The right CA verifies (this server is no aggregator, and is named so: exit 5).
    right = {**wrong, "FEDQI_AGENT_CA_BUNDLE": str(network_ca)}
    code, out, err = agent("audit", "verify", env=right)
    assert code == 5 and f"{url} is not a fedqi aggregator" in err, err
