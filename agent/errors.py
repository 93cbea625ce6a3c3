"""Errors raised by the agent.

AgentError
 +-- AgentUserError   something the user can fix (config, input, arguments); carries an
                      exit code and is printed as one line without a traceback
      +-- ConfigError
      +-- SourceError  a source (database, CSV, FHIR, OMOP) cannot be read; names where
      +-- TransportError  the aggregator could not be reached or refused a message
"""

from __future__ import annotations


class AgentError(Exception):
    pass


class AgentUserError(AgentError):
    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(AgentUserError):
    exit_code = 3


class SourceError(AgentUserError):
    exit_code = 4


class TransportError(AgentUserError):
    exit_code = 5
