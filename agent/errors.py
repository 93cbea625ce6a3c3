"""Errors raised by the agent, and the exit codes of ``fedqi-agent``.

The tree (a name in brackets lives where it is raised)::

    AgentError                     a bug or an unexpected state: a traceback, not a message
     +-- AgentUserError            something the user can fix; printed as one line, no
         |                         traceback; exit 2 (BAD_INPUT) unless a subclass says more
         +-- ConfigError           a bad or unknown setting, no key, not enrolled (exit 3)
         |   +-- [CertificateError]       agent.outbound.transport: the aggregator's TLS
         |                                certificate does not verify (exit 3)
         +-- SourceError           the practice database or a source cannot be read, or
         |                         holds data the agent refuses (a malformed extract, a bad row);
         |                         names where (exit 4)
         +-- TransportError        the aggregator cannot be reached, or is not a fedqi
         |   |                     aggregator (exit 5)
         |   +-- [NotAnAggregatorError]   agent.outbound.transport (exit 5)
         |   +-- [RefusedError]           the aggregator refused a message, 4xx (exit 6)
         +-- UnverifiedAnswerError  something the aggregator sent does not verify: a key
         |                          answer, the catalogue, a protocol object (exit 7)
         +-- [LogIntegrityError]    agent.outbound.audit: signed evidence that the log was
                                    tampered with or split (exit 8)

``run`` exits 9 (:attr:`ExitCode.HELD`) when, with release auto, a month the disclosure guard
held waits for approval: nothing failed, but the months stopped going out.

Every exit code comes from :class:`ExitCode`, the one table; ``fedqi-agent --help`` prints it
(:func:`exit_code_help`) and docs/configuration.md shows it (a test checks that the three
list the same codes).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """``fedqi-agent``'s exit codes: the one table (docs/configuration.md, ``--help``)."""

    OK = 0
    BAD_INPUT = 2
    CONFIG = 3
    SOURCE = 4
    UNREACHABLE = 5
    REFUSED = 6
    UNVERIFIED = 7
    AUDIT_FAILED = 8
    HELD = 9


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done",
    ExitCode.BAD_INPUT: "bad argument or input (bad period, unknown indicator, unknown message id, ...)",
    ExitCode.CONFIG: "configuration (bad or unknown setting, missing key, not enrolled, an agent home or outbox that cannot be read, an aggregator certificate that does not verify against ca_bundle, an aggregator_url serving another log than the one enrolled in)",
    ExitCode.SOURCE: "a source cannot be read, or holds data the agent refuses: the practice "
    "database or an OMOP database, or a CSV extract or FHIR data being loaded (malformed CSV or JSON, a bad "
    "row or value); the message names where (file and line, or table and column)",
    ExitCode.UNREACHABLE: "the aggregator cannot be reached, or is not a fedqi aggregator",
    ExitCode.REFUSED: "the aggregator refused a message (4xx)",
    ExitCode.UNVERIFIED: "something the aggregator sent does not verify (catalogue, key answer)",
    ExitCode.AUDIT_FAILED: "audit failure: signed evidence that the log was tampered with or split",
    ExitCode.HELD: "run with release auto left a month the disclosure guard held waiting for "
    "approval: it and the months due after it were not sent (with release hold, held months "
    "are the chosen workflow: exit 0)",
}


def exit_code_help(meanings: Mapping[Any, str] | None = None) -> str:
    """An exit-code table as ``--help`` shows it (one line per code): ``fedqi-agent``'s, or
    the one given (``fedqi-demo``'s)."""
    table: Mapping[Any, str] = EXIT_CODE_MEANINGS if meanings is None else meanings
    lines = [f"{int(code)} {meaning}" for code, meaning in table.items()]
    return "Exit codes:\n\n" + "\n\n".join(lines)


def first_problem(exc: Exception) -> str:
    """A validation error in one line: where and what of its first problem, and how many more
    (pydantic's own text runs to several lines, each with a link to its docs)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        lines = str(exc).splitlines()
        return lines[-1].strip() if lines else type(exc).__name__
    found = errors()
    if not found:
        return type(exc).__name__
    loc = ".".join(str(p) for p in found[0]["loc"]) or "(whole file)"
    more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
    return f"{loc}: {found[0]['msg']}{more}"


class AgentError(Exception):
    pass


class AgentUserError(AgentError):
    exit_code: int = ExitCode.BAD_INPUT

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(AgentUserError):
    exit_code = ExitCode.CONFIG


class SourceError(AgentUserError):
    exit_code = ExitCode.SOURCE

    # The practice database's three failures, worded once for every path that opens it
    # (SQLAlchemy's in agent.engine.compute, the stored statement's in agent.engine.stored).
    @classmethod
    def cannot_open(cls, where: str, exc: BaseException) -> SourceError:
        return cls(f"source.url: cannot read the practice database {where} ({first_line(exc)})")

    @classmethod
    def missing_tables(cls, where: str, missing: list[str]) -> SourceError:
        return cls(
            f"source.url: the practice database {where} has no table {', '.join(missing)} "
            "(not a fedqi practice database; see docs/data-model.md)"
        )

    @classmethod
    def cannot_read(cls, exc: BaseException, where: str | None = None) -> SourceError:
        """``where``: the database's path, or its URL without the password, when known."""
        named = f" {where}" if where else ""
        return cls(f"the practice database{named} cannot be read: {first_line(exc)}")

    @classmethod
    def cannot_write(cls, exc: BaseException, where: str) -> SourceError:
        """A load's store (``where``: its path, or its URL without the password), which a load
        reads and writes: "cannot be read" was said of a directory that does not exist."""
        return cls(f"the practice database {where} cannot be loaded into: {first_line(exc)}")


def first_line(exc: BaseException) -> str:
    """An exception's first line (drivers' messages run to many), or its type if it has none."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


class TransportError(AgentUserError):
    exit_code = ExitCode.UNREACHABLE


class UnverifiedAnswerError(AgentUserError):
    exit_code = ExitCode.UNVERIFIED


def hide_password(url: str) -> str:
    """``url`` with any password in it replaced by ***, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
