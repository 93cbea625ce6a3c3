"""The audit commands say exactly what happened: `audit verify`'s exit codes (8 only for evidence
against the log), `audit show --raw` byte for byte, `trust show` and the key endpoints in init's encoding, corrections in
`audit list`. Real aggregators and a plain HTTP server on loopback."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from e2e_helpers import Agent, AggregatorServer

from agent.library import load_default_catalogue
from agent.outbound.outbox import Outbox
from agent.outbound.release import payload_of
from protocol.disclosure import suppression_threshold
from protocol.envelope import Envelope
from protocol.keys import b64url_decode
from protocol.submission import Receipt


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def plain_http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _not_a_tamper_verdict(code: int, out: str, err: str, expected: int) -> str:
    assert code == expected, (code, out, err)
    assert "AUDIT FAILED" not in out + err and "forked" not in out + err
    assert "Traceback" not in err, err
    # one line of error, after one line per failed try told as it happened (if any)
    *tries, error = err.strip().splitlines()
    for line in tries:
        assert re.fullmatch(r"GET /v1/\S+: try \d+ of \d+ failed \(.+\); next in [\d.]+ s", line), (
            err
        )
    return error


def test_audit_verify_exit_codes_name_what_happened(
    aggregator_factory: Callable[..., AggregatorServer],
    agent_factory: Callable[..., Agent],
    plain_http_server: str,
    tmp_path: Path,
) -> None:
    aggregator = aggregator_factory()
    agent = agent_factory(aggregator)
    agent.ok("submit", "--period", "2026-01")
    code, out, err = agent("audit", "verify")
    assert code == 0 and "consistent with the log" in out, err

    # 3: a refused credential (an IG token the aggregator does not know).
    token_file = tmp_path / "ig.token"
    token_file.write_text("not-a-real-token\n")
    token_file.chmod(0o600)
    code, out, err = agent("audit", "verify", env={"FEDQI_AGENT_AUDIT_TOKEN_FILE": str(token_file)})
    err = _not_a_tamper_verdict(code, out, err, 3)
    assert "refused the audit token" in err and str(token_file) in err and "HTTP 401" in err

    # 3: another fedqi aggregator (same network name, its own log key): not this log's checkpoint.
    other = aggregator_factory("other")
    agent_factory(other, name="other-agent")  # its log is not empty: it has a checkpoint
    code, out, err = agent("audit", "verify", env={"FEDQI_AGENT_AGGREGATOR_URL": other.url})
    err = _not_a_tamper_verdict(code, out, err, 3)
    assert f"{other.url} does not sign its checkpoint with the pinned log key" in err

    # 5: something that answers HTTP but is not an aggregator.
    code, out, err = agent("audit", "verify", env={"FEDQI_AGENT_AGGREGATOR_URL": plain_http_server})
    err = _not_a_tamper_verdict(code, out, err, 5)
    assert f"{plain_http_server} is not a fedqi aggregator" in err and "nothing was verified" in err

    # 5: the aggregator is down.
    aggregator.kill()
    code, out, err = agent("audit", "verify")
    err = _not_a_tamper_verdict(code, out, err, 5)
    assert "unreachable" in err and "nothing was verified" in err


def test_audit_verify_help_lists_every_exit_code() -> None:
    from typer.testing import CliRunner

    from agent.cli import _load_commands, app

    _load_commands()
    text = " ".join(CliRunner().invoke(app, ["audit", "verify", "--help"]).output.split())
    for code in ("0 every receipt", "2 nothing to verify", "3 configuration", "5 the audit could"):
        assert code in text, text
    assert "8 AUDIT FAILED: evidence" in text


def test_audit_show_raw_is_exactly_the_signed_bytes(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator)
    agent.ok("submit", "--period", "2026-01")
    with Outbox.open(agent.home) as outbox:
        (m,) = outbox.messages(kind="submission")
    assert m.receipt is not None
    receipt = Receipt.from_bytes(Envelope.from_bytes(m.receipt).payload_bytes())
    # Through a real process, so stdout is bytes as a pipe sees them.
    proc = agent.subprocess("audit", "show", str(m.id), "--raw")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == m.envelope and not out.endswith(b"\n")
    assert hashlib.sha256(out).hexdigest() == m.sha256 == receipt.envelope_sha256


def test_trust_show_and_the_key_endpoints_give_keys_as_init_printed_them(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """What an IG officer compares with the key published out of band: `trust show`, trust.json
    and the key endpoints' public_key_base64url all give init's base64url; public_key stays
    the same bytes in standard base64 for the clients that read it."""
    agent = agent_factory(aggregator)
    printed = aggregator.init_info
    stored = json.loads((agent.home / "trust.json").read_text())
    shown = agent.json("trust", "show")
    log, catalogue = shown["keys"]  # type: ignore[index]
    assert log["public_key"] == printed["log_key"]["public_key"] == stored["log_key"]["jwk"]["x"]
    assert log["kid"] == printed["log_key"]["kid"]
    assert catalogue["public_key"] == printed["catalogue_key"]["public_key"]
    assert catalogue["public_key"] == stored["catalogue_key"]["jwk"]["x"]
    assert catalogue["kid"] == printed["catalogue_key"]["kid"]
    text = agent.ok("trust", "show")
    assert printed["log_key"]["public_key"] in text and printed["log_key"]["kid"] in text
    for endpoint, role in (("/v1/log/key", "log_key"), ("/v1/catalogue/key", "catalogue_key")):
        served = httpx.get(aggregator.url + endpoint, timeout=10).json()
        assert served["public_key_base64url"] == printed[role]["public_key"], endpoint
        assert served["kid"] == printed[role]["kid"] and served["jwk"] == stored[role]["jwk"]
        raw = base64.b64decode(served["public_key"], validate=True)
        assert raw == b64url_decode(printed[role]["public_key"], what=endpoint), endpoint


def test_audit_list_marks_a_correction_with_the_submission_it_replaces(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator)
    agent.ok("submit", "--period", "2026-01")
    agent.ok("submit", "--period", "2026-01", "--correction", "late_data")
    with Outbox.open(agent.home) as outbox:
        first, second = outbox.messages(kind="submission")
    listing = {m["id"]: m for m in agent.json("audit", "list")}  # type: ignore[union-attr]
    assert listing[second.id]["corrects_message"] == first.id
    assert listing[second.id]["supersedes"] == first.submission_id
    assert listing[second.id]["correction_reason"] == "late_data"
    assert listing[first.id]["corrects_message"] is None
    rows = [line for line in agent.ok("audit", "list").splitlines() if "late_data" in line]
    assert len(rows) == 1 and f"#{first.id} (late_data)" in rows[0]


def test_pending_and_audit_show_open_with_a_summary_and_take_filters(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator, release="hold")
    agent.ok("submit", "--period", "2026-01")
    with Outbox.open(agent.home) as outbox:
        (m,) = outbox.messages(kind="submission")
    envelope = m.envelope.decode()

    for command in (("pending",), ("audit", "show", str(m.id))):
        summary = agent.ok(*command)
        full = agent.ok(*command, "--all")
        assert len(summary.splitlines()) <= 50 < len(full.splitlines()), command
        assert "--all shows every cell" in summary and "DM_REG" in summary
        assert "aged 60-79, female" not in summary and "aged 60-79, female" in full
        one = agent.ok(*command, "--indicator", "DM_REG", "--stratum", "60-79/F")
        cells = [line for line in one.splitlines() if ": denominator " in line]
        assert len(cells) == 1 and "DM_REG aged 60-79, female" in cells[0], one
        code, out, err = agent(*command, "--indicator", "NOPE_1")
        assert code == 2 and "--indicator 'NOPE_1': no such indicator" in err, err
        assert out == "" and len(err.strip().splitlines()) == 1, out  # nothing printed first
        code, out, err = agent(*command, "--stratum", "nope")
        assert code == 2 and "--stratum 'nope'" in err, err
        assert out == "", out

    show = agent.ok("audit", "show", str(m.id))
    assert envelope not in show and envelope in agent.ok("audit", "show", str(m.id), "--all")


def test_pending_and_audit_show_word_counts_under_the_policy_they_were_released_under(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """The payload and its policy say a suppressed stratified count is 1 to the threshold or
    protects another count, and how far a rounded count was rounded; never only the latter."""
    agent = agent_factory(aggregator, release="hold")
    agent.ok("submit", "--period", "2026-01")
    with Outbox.open(agent.home) as outbox:
        (m,) = outbox.messages(kind="submission")
    sub = payload_of(m)
    policy = load_default_catalogue().disclosure
    t, k = suppression_threshold(policy.stratified), policy.stratified.round_to
    # not a small population's (its whole-practice denominator withheld): those numerators are
    # worded by the small-population rule (agent/outbound/release.py)
    released = {
        c.indicator
        for c in sub.cells
        if c.stratum.is_total and c.denominator.status != "suppressed"
    }
    cell = next(
        c
        for c in sub.cells
        if not c.stratum.is_total and c.numerator.status == "suppressed" and c.indicator in released
    )
    rounded = next(c for c in sub.cells if c.denominator.status == "rounded")
    for command in (("pending",), ("audit", "show", str(m.id))):
        stratum = f"{cell.stratum.age_band}/{cell.stratum.sex}"
        out = agent.ok(*command, "--indicator", cell.indicator, "--stratum", stratum)
        (line,) = [x for x in out.splitlines() if ": denominator " in x]
        assert f"numerator suppressed (1-{t} or withheld to protect another count)" in line
        stratum = f"{rounded.stratum.age_band}/{rounded.stratum.sex}"
        out = agent.ok(*command, "--indicator", rounded.indicator, "--stratum", stratum)
        (line,) = [x for x in out.splitlines() if ": denominator " in x]
        assert f"denominator about {rounded.denominator.value} (rounded to {k})" in line, line
    (held,) = agent.json("pending")  # type: ignore[misc]
    assert not any("(rounded)" in w for w in held["plain_words"])


def test_audit_verify_with_no_receipt_yet_exits_2_not_8(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    import shutil

    agent = agent_factory(aggregator)
    # The same enrolment without its outbox: an agent home that has sent nothing it can check.
    bare = tmp_path / "bare"
    shutil.copytree(agent.home, bare)
    (bare / "outbox.sqlite").unlink()
    code, out, err = Agent(bare, {**agent.env, "FEDQI_AGENT_HOME": str(bare)})("audit", "verify")
    err = _not_a_tamper_verdict(code, out, err, 2)
    assert "nothing to verify yet" in err


def _token_file(aggregator: AggregatorServer, tmp_path: Path, name: str, *user: str) -> Path:
    added = json.loads(aggregator.cli("user", "add", name, *user, "--db", aggregator.db, "--json"))
    path = tmp_path / f"{name.replace(' ', '-')}.token"
    path.write_text(added["token"] + "\n")
    path.chmod(0o600)
    return path


def test_audit_verify_with_another_practices_token_is_configuration_not_tampering(
    aggregator_factory: Callable[..., AggregatorServer],
    agent_factory: Callable[..., Agent],
    tmp_path: Path,
) -> None:
    """A valid token that may not read this practice's data gets only leaf hashes and no
    envelopes: that is no evidence against the log. audit verify names the token's owner and
    exits 3 before verifying anything, never FAIL or AUDIT FAILED (exit 8)."""
    aggregator = aggregator_factory(practices=("A12345", "B81001"))
    agent = agent_factory(aggregator)
    for period in ("2026-01", "2026-02"):
        agent.ok("submit", "--period", period)
    others = {
        "practice B81001's IG officer": (
            ("--role", "ig_officer", "--practice", "B81001"),
            "(role ig_officer, practice B81001)",
        ),
        "PCN1 lead": (
            ("--role", "network_lead", "--group", "PCN1"),
            "(role network_lead, group PCN1)",
        ),
    }
    for name, (user, owner) in others.items():
        token_file = _token_file(aggregator, tmp_path, name, *user)
        env = {"FEDQI_AGENT_AUDIT_TOKEN_FILE": str(token_file)}
        code, out, err = agent("audit", "verify", env=env)
        err = _not_a_tamper_verdict(code, out, err, 3)
        assert out == "" and "FAIL" not in err, (out, err)
        assert f"the audit token in {token_file} is not for practice A12345" in err, err
        assert f"belongs to {name!r} {owner}, who may not read" in err, err
        assert "nothing was verified" in err

    # The practice's own IG officer's token still verifies everything.
    own = _token_file(
        aggregator, tmp_path, "IG officer", "--role", "ig_officer", "--practice", "A12345"
    )
    code, out, err = agent("audit", "verify", env={"FEDQI_AGENT_AUDIT_TOKEN_FILE": str(own)})
    assert code == 0 and "stored envelope bytes" in out, err

    # An admin's token sees no leaf data of a practice that is not "named": only the hashes,
    # which is said as such (exit 3), not taken for a log that lost its data (exit 8).
    agent.ok("submit", "--period", "2026-03", env={"FEDQI_AGENT_VISIBILITY": "pseudonymised"})
    admin = _token_file(aggregator, tmp_path, "Admin", "--role", "admin")
    code, out, err = agent("audit", "verify", env={"FEDQI_AGENT_AUDIT_TOKEN_FILE": str(admin)})
    err = _not_a_tamper_verdict(code, out, err, 3)
    assert "serves the audit token only this leaf's hash, not its data" in err, err
