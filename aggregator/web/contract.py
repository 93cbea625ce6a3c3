"""What the OpenAPI schema says about inputs that FastAPI's signatures leave as plain strings:
path and query parameter patterns and enums (the same rules the endpoints check, so a request
the schema allows is one the endpoint's format checks accept), and the signed-envelope request
body of the agent endpoints. Applied to the generated schema by :func:`describe`."""

from __future__ import annotations

from typing import Any

from ..benchmarks.api import INDICATOR, ODS
from ..benchmarks.funnel import METHODS
from ..benchmarks.stats import PEER_DIMENSIONS
from ..submissions.service import SHA256

#: By parameter name (every endpoint uses each name in the same sense).
PARAMETERS: dict[str, dict[str, Any]] = {
    "sha256": {"type": "string", "pattern": SHA256.pattern},
    "ods": {"type": "string", "pattern": ODS.pattern},
    "practice": {"type": "string", "pattern": ODS.pattern},
    "indicator": {"type": "string", "pattern": INDICATOR.pattern},
    "format": {"type": "string", "enum": ["json", "csv"], "default": "json"},
    "method": {"type": "string", "enum": list(METHODS)},
    "peer": {"type": "string", "enum": list(PEER_DIMENSIONS)},
}

_B64 = "^[A-Za-z0-9+/]*={0,2}$"
#: A DSSE envelope (protocol/envelope.py): the body of enrol, rotate and submissions.
ENVELOPE_SCHEMA: dict[str, Any] = {
    "title": "Envelope",
    "description": (
        "A DSSE envelope signed by the practice's agent key (rotation: by the old and new "
        "keys). payload is the standard base64 of the RFC 8785 JSON message; the signatures "
        "are Ed25519 over DSSEv1 PAE(payloadType, payload). A body that is well-formed but not "
        "validly signed is refused with 400 or 401."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": ["payload", "payloadType", "signatures"],
    "properties": {
        "payload": {"type": "string", "pattern": _B64},
        "payloadType": {
            "type": "string",
            "pattern": r"^application/vnd\.fedqi\.[a-z]+\.v[0-9]+\+json$",
            "maxLength": 200,
        },
        "signatures": {
            "type": "array",
            "minItems": 1,
            "maxItems": 4,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["keyid", "sig"],
                "properties": {
                    "keyid": {"type": "string", "pattern": r"^[A-Za-z0-9_\-]{43}$"},
                    "sig": {"type": "string", "pattern": _B64, "maxLength": 200},
                },
            },
        },
    },
}
ENVELOPE_POSTS = ("/v1/submissions", "/v1/enrol", "/v1/keys/rotate")


def describe(spec: dict[str, Any]) -> None:
    """Add the parameter rules and the envelope body to the generated schema, in place."""
    spec.setdefault("components", {}).setdefault("schemas", {})["Envelope"] = ENVELOPE_SCHEMA
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            if not isinstance(op, dict):
                continue
            for param in op.get("parameters", []):
                rule = PARAMETERS.get(param.get("name"))
                if rule is None or param.get("in") not in ("path", "query"):
                    continue
                schema = dict(rule)
                if param["in"] == "query" and not param.get("required"):
                    schema.pop("default", None)
                    if "default" in param.get("schema", {}):
                        schema["default"] = param["schema"]["default"]
                param["schema"] = {**schema, "title": param.get("schema", {}).get("title", "")}
            names = {p.get("name") for p in op.get("parameters", [])}
            ok = op.get("responses", {}).get("200")
            if "format" in names and isinstance(ok, dict):  # format=csv answers text/csv
                ok.setdefault("content", {})["text/csv"] = {"schema": {"type": "string"}}
            if method == "post" and path in ENVELOPE_POSTS:
                op["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}
                    },
                }
