"""deploy/aggregator/nginx.conf run for real: nginx on loopback, with a throwaway TLS
certificate, in front of a real aggregator (SQLite, ``fedqi-aggregator serve``)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.ports import on_a_free_port, started
from tests.tls_helpers import write_pair

REPO = Path(__file__).resolve().parents[2]
AGG = REPO / "deploy" / "aggregator"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)"
)


def _write_tls(directory: Path) -> None:
    directory.mkdir()
    write_pair(directory / "fullchain.pem", directory / "privkey.pem")


@dataclass
class Stack:
    url: str  # the proxy's
    aggregator_log: Path  # uvicorn's access log: one line per request, with the client port

    def upstream_ports(self, path: str) -> list[str]:
        """The proxy's source ports of the aggregator's requests for ``path``, in order."""
        text = self.aggregator_log.read_text()
        return re.findall(rf'127\.0\.0\.1:(\d+) - "GET {re.escape(path)} HTTP/1\.[01]"', text)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("proxy")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FEDQI_")},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "FEDQI_AGGREGATOR_DB": f"sqlite:///{tmp / 'aggregator.db'}",
        "FEDQI_AGGREGATOR_KEY_DIR": str(tmp / "keys"),
        # believe no proxy, so that the access log shows the proxy's own address and source
        # port (a believed X-Forwarded-For replaces them with the client's, port 0)
        "FEDQI_AGGREGATOR_FORWARDED_ALLOW_IPS": "192.0.2.1",
    }
    for argv in (
        ["db", "upgrade"],
        ["init", "--name", "Proxy test", "--aud", "proxy-test"],
    ):
        done = subprocess.run(
            [str(BIN / "fedqi-aggregator"), *argv], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    log = tmp / "aggregator.log"
    _tls = tmp / "tls"
    _write_tls(_tls)

    def start_aggregator(port: int) -> tuple[subprocess.Popen[bytes], int]:
        with log.open("wb") as out:
            aggregator = subprocess.Popen(
                [str(BIN / "fedqi-aggregator"), "serve", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # a loaded 2-core machine is slow to import and bind
        started(
            aggregator,
            f"http://127.0.0.1:{port}/readyz",
            output=lambda: log.read_text(errors="replace"),
            what="the aggregator",
        )
        return aggregator, port

    def start_nginx(port: int) -> tuple[subprocess.Popen[bytes], int]:
        conf = (AGG / "nginx.conf").read_text()
        # The compose network resolves "aggregator"; here it is the loopback address, and the
        # proxy listens on a free loopback port instead of 443.
        conf = conf.replace("server aggregator:8400;", f"server 127.0.0.1:{agg_port};")
        conf = conf.replace("listen 443 ssl", f"listen 127.0.0.1:{port} ssl")
        conf = conf.replace("/etc/nginx/tls/", f"{_tls}/")
        conf = conf.replace("access_log /dev/stdout;", f"access_log {tmp}/access.log;")
        conf = conf.replace("error_log /dev/stderr warn;", f"error_log {tmp}/error.log warn;")
        conf = conf.replace(
            "http {",
            f"http {{\n    client_body_temp_path {tmp}/body;\n    proxy_temp_path {tmp}/proxy;",
        )
        conf = f"daemon off;\npid {tmp}/nginx.pid;\n" + conf
        (tmp / "nginx.conf").write_text(conf)
        said = tmp / f"nginx-{port}.stderr"  # where it says a port is in use, before it exits
        argv = [
            "nginx",
            "-c",
            str(tmp / "nginx.conf"),
            "-p",
            str(tmp),
            "-e",
            str(tmp / "start.log"),
        ]
        with said.open("wb") as err:
            nginx = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        started(nginx, f"https://127.0.0.1:{port}/healthz", output=said.read_text, what="nginx")
        return nginx, port

    aggregator, agg_port = on_a_free_port(start_aggregator)
    nginx = None
    try:
        nginx, proxy_port = on_a_free_port(start_nginx)
        yield Stack(f"https://127.0.0.1:{proxy_port}", log)
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
        aggregator.terminate()
        for proc in (nginx, aggregator):
            if proc is None:
                continue
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_the_proxy_reuses_its_connections_to_the_aggregator(stack: Stack) -> None:
    """keepalive in the upstream needs HTTP/1.1 and no "Connection: close" towards it; without
    them each request came from a new source port (and left a socket in TIME-WAIT)."""
    before = len(stack.upstream_ports("/v1/log/key"))
    with httpx.Client(verify=False) as client:
        for _ in range(20):
            assert client.get(f"{stack.url}/v1/log/key").status_code == 200
    deadline = time.time() + 10
    while len(ports := stack.upstream_ports("/v1/log/key")[before:]) < 20:
        assert time.time() < deadline, ports
        time.sleep(0.1)
    assert len(set(ports)) <= 2, ports  # one worker's pooled connection (two if one timed out)


def _audit_reads(receipts: int, checkpoints: int) -> list[str]:
    """The reads `fedqi-agent audit verify` sends with an IG token (agent/outbound/audit.py,
    verify_all): the checkpoint, a consistency proof per checkpoint seen, then per receipt its
    inclusion proof, its leaf and its stored envelope."""
    paths = ["/v1/log/checkpoint"]
    paths += ["/v1/log/proof/consistency?old=1&new=2"] * checkpoints
    for _ in range(receipts):
        paths += [
            "/v1/log/proof/inclusion?index=0&size=1",
            "/v1/log/entries?start=0&end=1",
            "/v1/envelopes/" + "0" * 64,
        ]
    return paths


def test_a_full_audit_fits_the_proxy_limits_and_submissions_stay_limited(stack: Stack) -> None:
    # Five years of monthly receipts (60, the enrolment and five key rotations) audited monthly:
    # 126 checkpoints seen; the numbers nginx.conf's comment gives. Sent as fast as one client
    # can, as the agent does; the old limit (burst 40) refused them from the 42nd on.
    reads = _audit_reads(receipts=66, checkpoints=126)
    assert len(reads) == 325
    with httpx.Client(verify=False) as client:
        statuses = [client.get(stack.url + path).status_code for path in reads]
        assert 429 not in statuses, statuses.index(429)
        assert len(set(statuses)) > 1  # the aggregator's own answers (the log here is empty)

        # Submissions keep their own, tighter limit: 5/s with a burst of 20.
        posted = [
            client.post(f"{stack.url}/v1/submissions", content=b"{}").status_code for _ in range(40)
        ]
    assert 429 not in posted[:21], posted
    assert 429 in posted, posted
