"""Browser-hardening headers on every kind of response the aggregator gives (the dashboard's
behaviour under the policy is tested in Chromium: tests/browser)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from aggregator.web.middleware import CONTENT_SECURITY_POLICY, SecurityHeadersMiddleware


def _run(path: str, route_headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    sent: list[dict] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": route_headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": b""}

    async def send(message):  # type: ignore[no-untyped-def]
        sent.append(message)

    middleware = SecurityHeadersMiddleware(app)
    # In a thread of its own: Playwright's sync API (tests/browser) leaves an event loop running
    # in the main thread, where asyncio.run refuses to start.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, middleware({"type": "http", "path": path}, receive, send)).result()
    return dict(sent[0]["headers"])


def test_every_response_gets_the_hardening_headers() -> None:
    headers = _run("/dashboard/overview", [(b"content-type", b"text/html")])
    assert headers[b"content-security-policy"] == CONTENT_SECURITY_POLICY.encode()
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"referrer-policy"] == b"no-referrer"
    assert b"'unsafe-inline'" not in headers[b"content-security-policy"]


def test_api_docs_keep_their_cdn_but_get_the_other_headers() -> None:
    headers = _run("/docs", [])
    assert b"content-security-policy" not in headers
    assert headers[b"x-frame-options"] == b"DENY"


def test_a_header_the_route_set_is_left_alone() -> None:
    headers = _run("/v1/x", [(b"referrer-policy", b"same-origin")])
    assert headers[b"referrer-policy"] == b"same-origin"
