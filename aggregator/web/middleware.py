"""A cap on request bodies that also holds for chunked uploads without Content-Length: the
ASGI ``receive`` channel is wrapped and counts the bytes as they stream in."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLargeError
from .problems import MEDIA_TYPE, PROBLEM_TYPE


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.cap = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.cap:
                    await _reject(
                        send, f"size: Content-Length {declared} exceeds the cap of {self.cap} bytes"
                    )
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.cap:
                    raise PayloadTooLargeError(
                        f"size: body exceeds the cap of {self.cap} bytes (streamed)"
                    )
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except PayloadTooLargeError as exc:
            if started:
                raise
            await _reject(send, exc.message)


async def _reject(send: Send, detail: str) -> None:
    import json

    body = json.dumps(
        {
            "type": PROBLEM_TYPE + "body-too-large",
            "title": "Request body too large",
            "status": 413,
            "detail": detail,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# The dashboard loads its script and stylesheet from /dashboard/static and draws its charts as
# SVG without inline styles, so nothing inline is allowed. FastAPI's /docs and /redoc pages load
# Swagger UI and ReDoc from a CDN with an inline script: they get every header but the CSP.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_NO_CSP = ("/docs", "/redoc")


class SecurityHeadersMiddleware:
    """Adds the browser-hardening headers to every HTTP response: Content-Security-Policy (no
    inline script or style, no framing), X-Frame-Options, Referrer-Policy and
    X-Content-Type-Options. A header the route set itself is left as it is."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = list(SECURITY_HEADERS)
        if not str(scope.get("path", "")).startswith(_NO_CSP):
            extra.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeadMiddleware:
    """HEAD wherever GET works (RFC 9110 section 9.3.2; uptime monitors use it): a HEAD request
    is answered as the GET would be, with the same status and headers and no body. The routes
    declare GET only, so the OpenAPI schema is unchanged; a 405's Allow, which the routes fill
    from what they declare, gets HEAD here wherever it names GET."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = scope.get("method") == "HEAD"

        async def send_as_declared(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                message = {**message, "headers": _allow_head(message.get("headers", ()))}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"} if head else scope, receive, send_as_declared)


def _allow_head(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers with HEAD added to an Allow that names GET without it."""
    out = []
    for name, value in headers:
        if name.lower() == b"allow":
            methods = [m.strip() for m in value.split(b",") if m.strip()]
            if b"GET" in methods and b"HEAD" not in methods:
                methods.insert(methods.index(b"GET") + 1, b"HEAD")
                value = b", ".join(methods)
        out.append((name, value))
    return out
