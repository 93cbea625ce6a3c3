"""The HTTP client: verified TLS, explicit timeouts, retries that resend identical bytes."""

from __future__ import annotations

import datetime as dt
import http.server
import ssl
import threading
from pathlib import Path

import httpx
import pytest

from agent.errors import ConfigError, TransportError
from agent.home.settings import TransportSettings
from agent.outbound.transport import (
    AggregatorClient,
    CertificateError,
    NotAnAggregatorError,
    RefusedError,
)
from tests.tls_helpers import cert_pem, certificate, key_pem

BODY = b'{"payload":"e30=","payloadType":"x","signatures":[]}'


def _client(handler, retries: int = 3) -> tuple[AggregatorClient, list[float]]:  # type: ignore[no-untyped-def]
    waits: list[float] = []
    client = AggregatorClient(
        "https://agg.example.nhs.uk",
        TransportSettings(retries=retries, backoff=0.5, connect_timeout=2, read_timeout=3),
        transport=httpx.MockTransport(handler),
        sleep=waits.append,
    )
    return client, waits


def test_retries_resend_identical_bytes_with_backoff() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        if len(seen) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if len(seen) == 2:
            return httpx.Response(503, json={"title": "busy"})
        return httpx.Response(200, content=b"receipt")

    client, waits = _client(handler)
    assert client.post_envelope("/v1/submissions", BODY) == b"receipt"
    assert seen == [BODY, BODY, BODY]
    assert waits == [0.5, 1.0]


def test_refusal_is_not_retried_and_names_the_problem() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(
            409,
            json={
                "type": "urn:fedqi:problem:conflict",
                "title": "Conflict",
                "detail": "submission_id reused with other bytes",
            },
        )

    client, _ = _client(handler)
    with pytest.raises(RefusedError, match="409 Conflict: submission_id reused") as exc:
        client.post_envelope("/v1/submissions", BODY)
    assert exc.value.status == 409 and len(calls) == 1


def test_unreachable_after_all_tries_says_so() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    client, waits = _client(handler, retries=2)
    with pytest.raises(
        TransportError, match=r"unreachable at https://agg.example.nhs.uk .*3 tries"
    ):
        client.post_envelope("/v1/submissions", BODY)
    assert len(waits) == 2


def test_timeouts_are_explicit() -> None:
    client = AggregatorClient(
        "https://agg.example.nhs.uk", TransportSettings(connect_timeout=2, read_timeout=3)
    )
    timeout = client._client.timeout
    assert (timeout.connect, timeout.read) == (2, 3)
    client.close()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = certificate("fedqi test aggregator", ca=True, loopback=True)
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert_pem(cert))
    key_path.write_bytes(key_pem(key))
    return cert_path, key_path


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_tls_is_verified_against_the_system_store_or_the_ca_bundle(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Ok)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        untrusted = AggregatorClient(url, TransportSettings(retries=0))
        with pytest.raises(CertificateError, match="certificate verify failed") as exc:
            untrusted.get_bytes("/")
        assert exc.value.exit_code == 3 and "system trust store" in str(exc.value)
        untrusted.close()
        # Another CA: configuration, named, and not retried (no wait, one handshake).
        (tmp_path / "other").mkdir()
        other, _ = _self_signed(tmp_path / "other")
        waits: list[float] = []
        wrong = AggregatorClient(
            url, TransportSettings(retries=3), ca_bundle=str(other), sleep=waits.append
        )
        with pytest.raises(CertificateError, match=f"against ca_bundle {other}:") as exc:
            wrong.get_bytes("/")
        assert not isinstance(exc.value, TransportError) and waits == []
        assert f"the TLS certificate of {url} does not verify" in str(exc.value)
        wrong.close()
        trusted = AggregatorClient(url, TransportSettings(retries=0), ca_bundle=str(cert))
        assert trusted.get_bytes("/") == b"ok"
        trusted.close()
    finally:
        server.shutdown()
        server.server_close()


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(TransportError, match="loopback"):
        AggregatorClient("http://agg.example.nhs.uk")


def test_bad_or_missing_ca_bundle_is_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    for path in (bad, tmp_path / "missing.pem"):
        with pytest.raises(ConfigError, match=f"ca_bundle {path}: cannot load") as exc:
            AggregatorClient("https://agg.example.nhs.uk", ca_bundle=str(path))
        assert exc.value.exit_code == 3


def test_redirects_are_not_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"location": "http://evil.example/"})

    client, _ = _client(handler)
    with pytest.raises(TransportError, match="307"):
        client.post_envelope("/v1/submissions", BODY)


def test_after_every_try_failed_the_next_request_fails_at_once_and_retries_are_told() -> None:
    calls: list[str] = []
    told: list[tuple[str, int, int, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    client = AggregatorClient(
        "https://agg.example.nhs.uk",
        TransportSettings(retries=2, backoff=0.5),
        transport=httpx.MockTransport(handler),
        sleep=lambda s: None,
        on_retry=lambda what, why, failed, tries, wait: told.append((what, failed, tries, wait)),
    )
    with pytest.raises(TransportError, match="3 tries"):
        client.get_bytes("/v1/catalogue")
    assert told == [("GET /v1/catalogue", 1, 3, 0.5), ("GET /v1/catalogue", 2, 3, 1.0)]
    with pytest.raises(TransportError, match=r"POST /v1/submissions was not tried"):
        client.post_envelope("/v1/submissions", BODY, about="submission #4")
    assert calls == ["/v1/catalogue"] * 3  # no second round of waits


def test_a_plain_http_server_is_named_as_not_an_aggregator() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with AggregatorClient(url, TransportSettings(retries=3)) as client:
            with pytest.raises(NotAnAggregatorError) as exc:
                client.post_envelope("/v1/submissions", BODY)
            with pytest.raises(NotAnAggregatorError, match=r"HTTP 404 .*text/html"):
                client.get_bytes("/v1/log/checkpoint")
    finally:
        server.shutdown()
        server.server_close()
    assert exc.value.exit_code == 5 and not isinstance(exc.value, RefusedError)
    assert f"{url} is not a fedqi aggregator: POST /v1/submissions was answered HTTP 501" in str(
        exc.value
    )


def test_a_retry_waits_as_long_as_retry_after_asks_within_the_cap() -> None:
    """A 503 with Retry-After (what the aggregator answers while its database is away) is
    waited out: the next try comes no sooner than asked, and never later than the cap."""
    answers = iter(
        [
            httpx.Response(503, headers={"Retry-After": "5"}, json={"title": "db away"}),
            httpx.Response(503, headers={"Retry-After": "600"}, json={"title": "db away"}),
            httpx.Response(
                429,
                headers={"Retry-After": "soon", "content-type": "application/problem+json"},
                content=b'{"type":"urn:fedqi:problem:rate-limited","title":"busy","status":429}',
            ),
            httpx.Response(200, content=b"receipt"),
        ]
    )
    client, waits = _client(lambda request: next(answers))
    assert client.post_envelope("/v1/submissions", BODY) == b"receipt"
    # backoff 0.5, 1, 2: raised to 5 as asked, to the 60 s cap, and left alone when unreadable
    assert waits == [5.0, 60.0, 2.0]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    from agent.outbound.transport import retry_after

    assert retry_after(None) == 0.0 and retry_after("") == 0.0 and retry_after("soon") == 0.0
    assert retry_after("7") == 7.0
    now = dt.datetime(2026, 12, 4, 12, 0, 0, tzinfo=dt.UTC).timestamp()
    assert retry_after("Fri, 04 Dec 2026 12:00:30 GMT", now=now) == 30.0
    assert retry_after("Fri, 04 Dec 2026 11:59:00 GMT", now=now) == 0.0


NGINX_429 = b"<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n</html>\r\n"


def _nginx_429(retry_after: str | None = None) -> httpx.Response:
    headers = {"content-type": "text/html"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    return httpx.Response(429, headers=headers, content=NGINX_429)


def test_a_proxys_html_429_is_retried_honouring_retry_after() -> None:
    """nginx's limit_req answers its own HTML 429: rate limiting, retried like the aggregator's
    own 429, not taken for a server that is not an aggregator."""
    answers = iter([_nginx_429(), _nginx_429("7"), httpx.Response(200, content=b"receipt")])
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return next(answers)

    client, waits = _client(handler)
    assert client.post_envelope("/v1/submissions", BODY) == b"receipt"
    assert seen == [BODY] * 3 and waits == [0.5, 7.0]


def test_still_limited_after_every_try_says_so_not_that_it_is_no_aggregator() -> None:
    client, waits = _client(lambda request: _nginx_429("600"), retries=2)
    with pytest.raises(TransportError) as exc:
        client.get_bytes("/v1/log/proof/inclusion")
    assert not isinstance(exc.value, NotAnAggregatorError) and exc.value.exit_code == 5
    assert waits == [60.0, 60.0]  # each wait as asked, within the cap; 3 tries in all
    message = str(exc.value)
    assert "not a fedqi aggregator" not in message and "aggregator_url" not in message
    assert message == (
        "the aggregator at https://agg.example.nhs.uk (or a proxy in front of it) is limiting "
        "requests: GET /v1/log/proof/inclusion was answered HTTP 429 Too Many Requests on the "
        "last of 3 tries (waited 120 s in all); try again later"
    )


def test_a_single_try_answered_429_does_not_stop_the_requests_after_it() -> None:
    """The catalogue is fetched with one try (a verified cache is the fallback); limited there,
    the submission after it is still sent, with its retries, rather than failed at once."""
    answers = iter([_nginx_429(), _nginx_429(), httpx.Response(200, content=b"receipt")])
    client, waits = _client(lambda request: next(answers))
    with pytest.raises(TransportError, match="is limiting requests"):
        client.get_bytes("/v1/catalogue", tries=1)
    assert client.unreachable is None
    assert client.post_envelope("/v1/submissions", BODY) == b"receipt"
    assert waits == [0.5]
