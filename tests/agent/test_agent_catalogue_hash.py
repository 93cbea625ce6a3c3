"""A catalogue whose codes do not match a codelist's codes_sha256 is refused by the agent, naming
the codelist, whether it arrives signed from the network or as a local file; nothing is
computed from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import AgentUserError, ConfigError
from agent.home.catalogue_cache import read_catalogue_file, verify_catalogue
from agent.home.keystore import PinnedKey, Trust
from agent.library import load_default_catalogue
from protocol.canonical import canonical_json
from protocol.envelope import sign_envelope
from protocol.keys import SigningKey


def _tampered() -> dict:
    """The default catalogue with one code of `hyp` replaced, its hash left as it was."""
    data = load_default_catalogue().model_dump(mode="json", exclude_none=True)
    hyp = next(cl for cl in data["codelists"] if cl["id"] == "hyp")
    assert hyp["codes"][0]["code"] != "999999999"
    hyp["codes"][0]["code"] = "999999999"
    return data


def test_signed_catalogue_with_a_changed_code_is_refused_naming_the_codelist() -> None:
    key = SigningKey.generate()
    trust = Trust(
        aud="net-a",
        practice="A81001",
        aggregator_url="https://example.invalid",
        log_origin="example.invalid/log",
        log_key=PinnedKey(name="log", jwk=SigningKey.generate().public.jwk()),
        catalogue_key=PinnedKey(name="catalogue", jwk=key.public.jwk()),
    )
    good = load_default_catalogue()
    signed_good = sign_envelope("catalogue", good.to_bytes(), [key]).to_bytes()
    assert verify_catalogue(signed_good, trust, where="test") == good

    # A network key signing a catalogue whose codes no longer match its own hash.
    payload = canonical_json(_tampered())
    signed_bad = sign_envelope("catalogue", payload, [key]).to_bytes()
    with pytest.raises(AgentUserError, match=r"codelist hyp: its 117 codes hash to") as info:
        verify_catalogue(signed_bad, trust, where="the aggregator's /v1/catalogue")
    assert "nothing is computed from it" in str(info.value)
    assert info.value.exit_code == 7


def test_local_catalogue_file_with_a_changed_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(_tampered()), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"codelist hyp: its 117 codes hash to"):
        read_catalogue_file(path)
