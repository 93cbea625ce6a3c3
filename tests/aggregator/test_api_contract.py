"""The API contract: unsupported methods answer 405 problem+json with Allow, and the OpenAPI
schema declares every problem response with its schema."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/submissions", "POST"),
        ("PUT", "/v1/enrol", "POST"),
        ("POST", "/readyz", "GET"),
    ],
)
def test_an_unsupported_method_answers_405_with_allow(server, method, path, allowed) -> None:  # type: ignore[no-untyped-def]
    r = server.client.request(method, path)
    assert r.status_code == 405, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert allowed in [m.strip() for m in r.headers["allow"].split(",")]
    assert r.json()["type"] == "urn:fedqi:problem:method-not-allowed"


def test_openapi_declares_every_problem_response(server) -> None:  # type: ignore[no-untyped-def]
    spec = server.client.get("/openapi.json").json()
    post = spec["paths"]["/v1/submissions"]["post"]["responses"]
    for code in ("400", "401", "403", "404", "405", "409", "413", "422", "503"):
        assert code in post, code
        assert "application/problem+json" in post[code]["content"], code
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    # the extension members, each optional (docs/aggregator.md, "HTTP API")
    members = {"current_submission_id", "superseded_by", "envelope_sha256"}
    members |= {"kid", "last_seq", "active_kid"}
    assert members <= set(problem["properties"]) - set(problem["required"])
    assert "Retry-After" in post["503"]["headers"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert {"400", "401", "403", "405", "503"} <= set(op["responses"]), (method, path)
