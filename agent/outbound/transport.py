"""The agent's HTTP client for the aggregator (httpx).

TLS is always verified (the system trust store, or the configured CA bundle); there is no switch
to turn it off. A certificate that does not verify is a configuration error (exit 3, naming
``ca_bundle`` and the URL), raised at once: no retry, and not a :class:`TransportError`, so no
background resend starts for it. Timeouts are explicit. A failed POST is retried with exponential backoff, and a
retry only ever resends the identical stored bytes: the caller hands over the envelope bytes
from the outbox and this module never rebuilds a body. A 429 or 503 with ``Retry-After`` (the
aggregator sends one while its database is away) waits at least that long before the next try,
still capped at a minute. A 429 is retried whatever its body: the proxy in front of the
aggregator (deploy/aggregator/nginx.conf, ``limit_req``) answers its own HTML one, which is
rate limiting, not a sign that the URL is not an aggregator. The aggregator treats a resent
``submission_id`` with the same bytes idempotently, so a retry after a lost answer is safe.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from agent.errors import ConfigError, ExitCode, TransportError
from agent.home.settings import AgentSettings, TransportSettings, check_aggregator_url
from protocol import __version__

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: The longest single wait between tries; with ``transport.retries`` it bounds one request's
#: waits in all (4 retries: at most 4 minutes, 15 s when no Retry-After asks for more).
MAX_BACKOFF = 60.0
#: Every error a fedqi aggregator answers is RFC 9457 problem+json with a type of this prefix.
FEDQI_PROBLEM = "urn:fedqi:problem:"

#: Told before each wait: (what is being sent or fetched, what failed, tries failed so far,
#: tries in all, seconds to wait before the next).
RetryNotice = Callable[[str, str, int, int, float], None]


class CertificateError(ConfigError):
    """The aggregator's TLS certificate does not verify against ``ca_bundle`` (or the system
    trust store): a configuration problem (exit 3), which resending cannot mend."""


class NotAnAggregatorError(TransportError):
    """The URL answers HTTP, but not as a fedqi aggregator does: the configuration is wrong."""


class RefusedError(TransportError):
    """The aggregator answered 4xx: the message itself is wrong; resending cannot help."""

    exit_code = ExitCode.REFUSED

    def __init__(self, message: str, status: int, problem: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.problem = dict(problem or {})


#: What a practice does next after the refusal of a message signed with a revoked key; stored
#: in the refused message's outbox note, where ``run`` finds it (agent.outbound.submitter).
KEY_REVOKED_NEXT_STEP = (
    ". The network revoked this agent's key: nothing signed with it is accepted again. Enrol "
    "again in a new agent home, keeping this one as a previous home (docs/operations.md "
    "section 6)"
)
#: What a practice does next after a refusal that its own set-up, not the message, caused.
_NEXT_STEP = {f"{FEDQI_PROBLEM}key-revoked": KEY_REVOKED_NEXT_STEP}


class AggregatorClient:
    def __init__(
        self,
        base_url: str,
        options: TransportSettings | None = None,
        *,
        ca_bundle: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: RetryNotice | None = None,
    ) -> None:
        try:
            check_aggregator_url(base_url)
        except ValueError as exc:
            raise TransportError(str(exc)) from None
        self.base_url = base_url.rstrip("/")
        self.options = options or TransportSettings()
        self._sleep = sleep
        self._on_retry = on_retry
        #: Set once every try of a request failed: later requests of this client fail at once
        #: rather than waiting through the backoff again (the outbox keeps what was not sent).
        self.unreachable: str | None = None
        #: Set once the aggregator answered as the one this agent enrolled with (its checkpoint
        #: under the pinned log origin and key: agent.outbound.audit.check_enrolled_aggregator),
        #: which every command checks before it posts anything signed; not asked again.
        self.enrolled_here = False
        self.ca_bundle = ca_bundle
        verify: ssl.SSLContext | bool = True
        if ca_bundle:
            try:
                verify = ssl.create_default_context(cafile=ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ConfigError(
                    f"ca_bundle {ca_bundle}: cannot load it as a PEM file of CA certificates "
                    f"({why}); fix ca_bundle in agent.toml or FEDQI_AGENT_CA_BUNDLE"
                ) from None
        o = self.options
        self._client = httpx.Client(
            base_url=self.base_url,
            verify=verify,
            timeout=httpx.Timeout(o.read_timeout, connect=o.connect_timeout),
            transport=transport,
            headers={"user-agent": f"fedqi-agent/{__version__}"},
            follow_redirects=False,
        )

    @classmethod
    def from_settings(
        cls,
        settings: AgentSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        on_retry: RetryNotice | None = None,
    ) -> AggregatorClient:
        settings.require("aggregator_url")
        assert settings.aggregator_url is not None
        return cls(
            settings.aggregator_url,
            settings.transport,
            ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
            transport=transport,
            on_retry=on_retry,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AggregatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, *, about: str = "", tries: int | None = None, **kwargs: Any
    ) -> httpx.Response:
        if self.unreachable is not None:
            raise TransportError(f"{self.unreachable} (so {method} {path} was not tried)")
        tries = self.options.retries + 1 if tries is None else tries
        last = ""
        asked = 0.0  # the wait the server asked for (Retry-After), if longer than ours
        limited = False  # the last try was answered 429: requests are being limited
        waited = 0.0
        for attempt in range(tries):
            if attempt:
                wait = min(max(self.options.backoff * 2 ** (attempt - 1), asked), MAX_BACKOFF)
                asked = 0.0
                if self._on_retry is not None:
                    self._on_retry(about or f"{method} {path}", last, attempt, tries, wait)
                self._sleep(wait)
                waited += wait
            limited = False
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                bad_cert = _certificate_failure(exc)
                if bad_cert is not None:
                    raise self._certificate_error(bad_cert) from None
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if response.status_code == 429:
                # The aggregator, or a proxy in front of it (nginx's limit_req answers an HTML
                # 429), is limiting requests: wait as asked and try again, whatever the body.
                limited = True
                last = f"HTTP 429 {_detail(response) or 'Too Many Requests'}"
                asked = retry_after(response.headers.get("retry-after"))
                continue
            if response.status_code >= 400 and not _is_fedqi_problem(response):
                if response.status_code in (502, 503, 504):
                    # A proxy in front of a stopped aggregator answers these: worth a retry.
                    last = f"HTTP {response.status_code} {response.reason_phrase}"
                    asked = retry_after(response.headers.get("retry-after"))
                    continue
                raise NotAnAggregatorError(
                    f"{self.base_url} is not a fedqi aggregator: {method} {path} was answered "
                    f"HTTP {response.status_code} {response.reason_phrase} "
                    f"({_content_type(response)}), where a fedqi aggregator answers errors as "
                    f"application/problem+json of type {FEDQI_PROBLEM}...; check aggregator_url "
                    "in agent.toml"
                )
            if response.status_code in RETRY_STATUSES:
                last = f"HTTP {response.status_code} {_detail(response)}"
                asked = retry_after(response.headers.get("retry-after"))
                continue
            if response.status_code >= 400:
                problem = _problem(response)
                raise RefusedError(
                    f"the aggregator refused {method} {path}: HTTP {response.status_code} "
                    f"{_detail(response)}{_NEXT_STEP.get(str(problem.get('type', '')), '')}",
                    response.status_code,
                    problem,
                )
            if response.status_code >= 300:
                raise TransportError(
                    f"{method} {self.base_url}{path}: unexpected HTTP {response.status_code} "
                    "(redirects are not followed)"
                )
            return response
        if limited:
            message = (
                f"the aggregator at {self.base_url} (or a proxy in front of it) is limiting "
                f"requests: {method} {path} was answered {last} "
                f"{'on its one try' if tries == 1 else f'on the last of {tries} tries'} "
                f"(waited {waited:g} s in all); try again later"
            )
            if tries < self.options.retries + 1:
                # A single try asked for by a caller with a fallback (the cached catalogue):
                # the aggregator answers, so the requests after it still get their retries.
                raise TransportError(message)
            self.unreachable = message
        else:
            self.unreachable = (
                f"aggregator unreachable at {self.base_url} ({method} {path}, {_tries(tries)}): "
                f"{last}"
            )
        raise TransportError(self.unreachable)

    def _certificate_error(self, exc: ssl.SSLCertVerificationError) -> CertificateError:
        why = f"certificate verify failed: {exc.verify_message or exc.reason or exc}"
        against = (
            f"ca_bundle {self.ca_bundle}"
            if self.ca_bundle
            else "the system trust store (no ca_bundle set)"
        )
        return CertificateError(
            f"the TLS certificate of {self.base_url} does not verify against {against}: {why}; "
            "set ca_bundle in agent.toml to the CA that signed the aggregator's certificate, or "
            "check aggregator_url (resending cannot help until it verifies)"
        )

    def post_envelope(self, path: str, envelope: bytes, *, about: str = "") -> bytes:
        """POST stored envelope bytes; every retry sends these same bytes. ``about`` names the
        message for retry notices."""
        body = bytes(envelope)
        response = self._request(
            "POST", path, about=about, content=body, headers={"content-type": "application/json"}
        )
        return response.content

    def get_bytes(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        tries: int | None = None,
    ) -> bytes:
        """GET ``path``; ``tries`` overrides the configured retries (1: a single try, for a
        request with a fallback, such as the catalogue with a verified cache)."""
        return self._request(
            "GET", path, params=dict(params or {}), headers=_auth(token), tries=tries
        ).content

    def get_json(
        self, path: str, params: Mapping[str, Any] | None = None, *, token: str | None = None
    ) -> Any:
        response = self._request("GET", path, params=dict(params or {}), headers=_auth(token))
        try:
            return response.json()
        except ValueError:
            raise TransportError(f"GET {path}: the aggregator's answer is not JSON") from None


def _certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error an httpx error was raised from, if it was."""
    seen: BaseException | None = exc
    for _ in range(10):  # httpx wraps httpcore's error, which wraps ssl's
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _auth(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP-date, RFC 9110
    10.2.3); 0 when absent or unreadable. The caller caps it."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        return 0.0
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _is_fedqi_problem(response: httpx.Response) -> bool:
    return str(_problem(response).get("type", "")).startswith(FEDQI_PROBLEM)


def _content_type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "no content type")).split(";")[0].strip()


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _detail(response: httpx.Response) -> str:
    problem = _problem(response)
    if problem:
        parts = [str(problem[k]) for k in ("title", "detail") if problem.get(k)]
        if parts:
            return ": ".join(parts)
    return response.reason_phrase or ""


def _tries(n: int) -> str:
    return "1 try" if n == 1 else f"{n} tries"
