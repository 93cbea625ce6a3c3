"""Behind a proxy that limits requests as the shipped nginx does (``limit_req ... nodelay`` with
``limit_req_status 429``: an HTML 429 once the burst is spent), the agent waits and tries again,
and says the aggregator is limiting requests when it still is, never that it is not an
aggregator. A real aggregator behind a small rate-limiting proxy, both on loopback."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
from e2e_helpers import Agent, AggregatorServer

NGINX_429 = (
    b"<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n"
    b"<center><h1>429 Too Many Requests</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


class _Bucket:
    """nginx's limit_req with nodelay: ``burst`` requests at once, refilled at ``rate`` a second;
    a request finding no token is answered 429 at once. ``spent``: other clients have used the
    burst up when the first request comes, so that one is limited however slowly requests come
    (a loaded machine can be slow enough for the bucket to refill between any two)."""

    def __init__(self, rate: float, burst: int, *, spent: bool = False) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = 0.0 if spent else float(burst)
        self.at: float | None = None if spent else time.monotonic()
        self.lock = threading.Lock()
        self.limited = 0
        self.passed = 0

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            if self.at is not None:
                self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                self.passed += 1
                return True
            self.limited += 1
            return False


@contextmanager
def limiting_proxy(upstream: str, bucket: _Bucket) -> Iterator[str]:
    client = httpx.Client(base_url=upstream, timeout=30)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if not bucket.take():
                self.send_response(429)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(NGINX_429)))
                self.end_headers()
                self.wfile.write(NGINX_429)
                return
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() in ("content-type", "authorization")
            }
            answer = client.request(self.command, self.path, content=body, headers=headers)
            self.send_response(answer.status_code)
            for name in ("content-type", "retry-after"):
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _forward  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        client.close()


def test_submit_and_audit_verify_through_a_rate_limiting_proxy_wait_and_succeed(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator)
    bucket = _Bucket(rate=4, burst=2, spent=True)
    with limiting_proxy(aggregator.url, bucket) as proxy:
        env = {
            "FEDQI_AGENT_AGGREGATOR_URL": proxy,
            "FEDQI_AGENT_TRANSPORT__BACKOFF": "0.3",
            "FEDQI_AGENT_TRANSPORT__RETRIES": "4",
        }
        for period in ("2026-01", "2026-02", "2026-03"):
            code, out, err = agent("submit", "--period", period, env=env)
            assert code == 0 and "sent and accepted" in out, err
        code, out, err = agent("audit", "verify", env=env)
    assert code == 0 and "consistent with the log" in out, err
    assert "not a fedqi aggregator" not in err
    assert bucket.limited > 0, "the proxy never limited: the test proves nothing"


def test_still_limited_after_every_try_is_named_as_limiting_not_as_no_aggregator(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator)
    agent.ok("submit", "--period", "2026-01")
    with limiting_proxy(aggregator.url, _Bucket(rate=0, burst=0)) as proxy:
        env = {
            "FEDQI_AGENT_AGGREGATOR_URL": proxy,
            "FEDQI_AGENT_TRANSPORT__BACKOFF": "0.05",
            "FEDQI_AGENT_TRANSPORT__RETRIES": "2",
        }
        audit = agent("audit", "verify", env=env)
        submit = agent("submit", "--period", "2026-02", env=env)
    for code, out, err in (audit, submit):
        assert code == 5, (code, out, err)
        assert "not a fedqi aggregator" not in err and "aggregator_url" not in err, err
        assert "AUDIT FAILED" not in out + err and "Traceback" not in err
        assert f"the aggregator at {proxy} (or a proxy in front of it) is limiting requests" in (
            err
        ), err
        assert "HTTP 429 Too Many Requests on the last of 3 tries" in err
    assert "nothing was verified" in audit[2]
    assert "submission #" in submit[2] and "stays queued" in submit[2]
    # each failed try of the send was told as it happened, as limiting
    assert (
        "the aggregator is limiting requests (HTTP 429 Too Many Requests); try 1 of 3"
        in (submit[2])
    ), submit[2]
