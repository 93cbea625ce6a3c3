"""Property-based API contract testing: schemathesis generates requests from the aggregator's own
OpenAPI schema (valid and invalid ones) for every operation, sends them to a real server on
loopback as each role (and with no token), and runs all of its checks on every response
(status codes, content types, headers and bodies as documented, auth not ignored, invalid
data refused, valid data accepted, ...). Bounded: a few examples per operation and mode."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from protocol.submission import Period

EXAMPLES = int(os.environ.get("FEDQI_SCHEMATHESIS_EXAMPLES", "8"))
ROLES = ["admin", "network_lead", "practice", "ig_officer", None]


def _tokens(server, agent_factory) -> dict[str | None, str | None]:  # type: ignore[no-untyped-def]
    """A network with two practices that have submitted, and a user of every role."""
    net = server.network
    for ods, group in (("A81001", "PCN1"), ("B82002", "PCN1")):
        agent = agent_factory(ods, group)
        for month in (8, 9):
            body = agent.submission(period=Period.month(2026, month))
            assert server.post("/v1/submissions", body).status_code == 201
    return {
        "admin": net.user("admin"),
        "network_lead": net.user("network_lead", group="PCN1"),
        "practice": net.user("practice", practice="A81001"),
        "ig_officer": net.user("ig_officer", practice="A81001"),
        None: None,
    }


#: Where a request the schema allows may still be refused with 400, and why no static schema can
#: say more: a signed envelope's signature, canonical form and message can't be stated in JSON
#: Schema; a proof's or entry range's bounds depend on the log's size at the time; ``peer``
#: other than network needs ``group`` too when the viewer has no practice of their own (admin),
#: a dependency between parameters OpenAPI cannot state.
DYNAMIC_400 = (
    "/v1/benchmarks/overview",
    "/v1/benchmarks/indicators/{indicator}",
    "/v1/benchmarks/trends/{indicator}",
    "/v1/submissions",
    "/v1/enrol",
    "/v1/keys/rotate",
    "/v1/log/proof/inclusion",
    "/v1/log/proof/consistency",
    "/v1/log/entries",
)


def _config(token: str | None) -> schemathesis.config.SchemathesisConfig:
    """The role's token as the schema's HTTPBearer credentials (so schemathesis knows it is
    auth, and leaves it out when it tests that auth is not ignored)."""
    accept = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
    auth = {"auth": {"openapi": {"HTTPBearer": {"bearer": token}}}} if token else {}
    return schemathesis.config.SchemathesisConfig.from_dict(
        {
            **auth,
            "operations": [
                {
                    "include-path": path,
                    "checks": {"positive_data_acceptance": {"expected-statuses": accept}},
                }
                for path in DYNAMIC_400
            ],
        }
    )


def _describe(exc: BaseException) -> str:
    parts = [str(exc)]
    for sub in getattr(exc, "exceptions", ()):
        parts.append(f"{getattr(sub, 'title', type(sub).__name__)}: {sub}")
    parts.extend(getattr(exc, "__notes__", ()))
    return "\n".join(parts)


@pytest.mark.parametrize("role", ROLES, ids=[r or "anonymous" for r in ROLES])
def test_every_operation_meets_its_contract(server, agent_factory, role) -> None:  # type: ignore[no-untyped-def]
    token = _tokens(server, agent_factory)[role]
    raw = server.client.get("/openapi.json")
    assert raw.status_code == 200
    schema = schemathesis.openapi.from_dict(raw.json(), config=_config(token))
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def check(case) -> None:  # type: ignore[no-untyped-def]
                case.call_and_validate(base_url=server.url)

            try:
                check()
            except Unsatisfiable:
                # nothing in this operation can be made invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # collect every failure, report all
                failures.append(f"{operation.label} [{mode.value}]: {_describe(exc)}")
    assert operations >= 20  # the schema really was read
    assert failures == [], "\n\n".join(failures)
