"""Errors raised by the aggregator.

The tree (every one carries an HTTP status and a short stable ``code``; one exception handler
maps them to RFC 9457 problem+json with type ``urn:fedqi:problem:<code>``)::

    AggregatorError(message, status_code)      500 unless a subclass says otherwise
     +-- ConfigError                           bad settings, missing keys, uninitialised network
     |    +-- PortInUseError                   serve's host and port are held by another process
     +-- DatabaseNotReadyError    503          unreachable or unmigrated database
     +-- BadRequestError          400          malformed input (envelope, query parameters)
     +-- AuthenticationError      401          no or unknown credentials, unknown key, bad signature
     +-- ForbiddenError           403          credentials valid but not allowed (role, revoked key,
     |                                         key bound to another practice, wrong audience)
     +-- NotFoundError            404
     +-- ConflictError            409          replay with other bytes, seq not increasing, ...
     +-- PayloadTooLargeError     413
     +-- UnprocessableError       422          well-formed but breaks a rule (iat window, unknown
                                               catalogue/indicator, disclosure policy)
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """``fedqi-aggregator``'s exit codes: the one table (``--help``, docs/aggregator.md)."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    MISSING_EXTRA = 3
    PORT_IN_USE = 4
    LOG_FAILED = 8


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done",
    ExitCode.FAILED: "failed: configuration, keys, database, or a rule the request broke",
    ExitCode.BAD_INPUT: "bad argument or input (unknown option, malformed value or file, or naming something unknown)",
    ExitCode.MISSING_EXTRA: "the aggregator's packages are not installed (pip install 'fedqi[aggregator]')",
    ExitCode.PORT_IN_USE: "serve could not listen: another process holds its host and port (the line printed names them, in the system's words)",
    ExitCode.LOG_FAILED: "log verify found evidence that does not verify (each finding is listed)",
}


def exit_code_help() -> str:
    """The exit-code table as ``--help`` shows it (one line per code)."""
    return "Exit codes:\n\n" + "\n\n".join(f"{int(c)} {EXIT_CODE_MEANINGS[c]}" for c in ExitCode)


class AggregatorError(Exception):
    status_code: int = 500
    code: str = "internal"
    title: str = "Internal error"

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        *,
        code: str | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        """``extensions``: RFC 9457 extension members the problem carries beside ``type``,
        ``title``, ``status`` and ``detail``, for a client to read instead of the detail's
        prose (each is documented in docs/aggregator.md with its problem type)."""
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code
        self.extensions: dict[str, Any] = dict(extensions or {})


class ConfigError(AggregatorError):
    code = "config"
    title = "Configuration error"


class PortInUseError(ConfigError):
    """``serve`` cannot listen: another process holds its host and port. Exits with
    ``ExitCode.PORT_IN_USE``, which a caller can act on (the demo tries another port) whatever
    words the operating system used."""

    code = "port-in-use"
    title = "Address in use"


class DatabaseNotReadyError(AggregatorError):
    status_code = 503
    code = "database-not-ready"
    title = "Database not ready"


class BadRequestError(AggregatorError):
    status_code = 400
    code = "bad-request"
    title = "Bad request"


class AuthenticationError(AggregatorError):
    status_code = 401
    code = "unauthenticated"
    title = "Not authenticated"


class ForbiddenError(AggregatorError):
    status_code = 403
    code = "forbidden"
    title = "Forbidden"


class NotFoundError(AggregatorError):
    status_code = 404
    code = "not-found"
    title = "Not found"


class ConflictError(AggregatorError):
    status_code = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLargeError(AggregatorError):
    status_code = 413
    code = "body-too-large"
    title = "Request body too large"


class UnprocessableError(AggregatorError):
    status_code = 422
    code = "unprocessable"
    title = "Message breaks a rule"
