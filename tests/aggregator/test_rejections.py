"""The rejection suite: every case has its status, its problem type, and proof that nothing
was stored (row counts and log size unchanged). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time

import pytest
import rfc8785

from protocol.envelope import Envelope, EnvelopeSignature, pae, sign_envelope
from protocol.keys import SigningKey
from protocol.submission import Cell, Count, Period, Stratum

PROBLEM = "urn:fedqi:problem:"


@pytest.fixture
def enrolled(server, agent_factory):
    return server, agent_factory("A81001")


def assert_problem(r, status: int, code: str, *words: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == PROBLEM + code, body
    assert body["status"] == status
    for w in words:
        assert w in body["detail"], body
    return body


def rejected(server, body: bytes, status: int, code: str, *words: str) -> dict:
    before = server.network.counts()
    problem = assert_problem(server.post("/v1/submissions", body), status, code, *words)
    assert server.network.counts() == before, "a rejected submission changed the database"
    return problem


def test_forged_signature(enrolled):
    server, agent = enrolled
    env = Envelope.from_bytes(agent.submission())
    forger = SigningKey.generate()
    sig = base64.b64encode(forger.sign(pae(env.payloadType, env.payload_bytes()))).decode()
    forged = env.model_copy(
        update={"signatures": (EnvelopeSignature(keyid=agent.key.kid, sig=sig),)}
    )
    rejected(server, forged.to_bytes(), 401, "signature", "does not verify", agent.key.kid)


def test_unknown_key(enrolled):
    server, agent = enrolled
    body = agent.sign(agent.submission_model().to_bytes(), key=SigningKey.generate())
    rejected(server, body, 401, "unknown-key", "not enrolled")


def test_wrong_key_for_the_practice(enrolled, agent_factory):
    server, agent = enrolled
    other = agent_factory("B82002")
    # B's key signs a submission that claims to be from A.
    sub = other.submission_model(practice="A81001")
    rejected(server, other.sign(sub.to_bytes()), 403, "practice-binding", "B82002", "A81001")


def test_payload_kid_must_be_the_signing_key(enrolled, agent_factory):
    server, agent = enrolled
    other = agent_factory("B82002")
    sub = agent.submission_model(kid=other.key.kid)
    rejected(server, agent.sign(sub.to_bytes()), 403, "key-binding")


def test_revoked_key(enrolled):
    server, agent = enrolled
    assert (
        server.post("/v1/submissions", agent.submission(period=Period.month(2026, 8))).status_code
        == 201
    )
    assert (
        server.network.cli(
            "key", "revoke", agent.key.kid, "--key-dir", str(server.network.settings.key_dir)
        )
        == 0
    )
    rejected(server, agent.submission(), 403, "key-revoked", agent.key.kid)


def test_replayed_submission_returns_the_stored_receipt(enrolled):
    server, agent = enrolled
    body = agent.submission()
    first = server.post("/v1/submissions", body)
    assert first.status_code == 201
    before = server.network.counts()
    again = server.post("/v1/submissions", body)
    assert again.status_code == 200
    assert again.content == first.content
    assert server.network.counts() == before


def test_reused_id_with_other_bytes(enrolled):
    """409 submission-id-reused carries the stored envelope's sha256 as ``envelope_sha256``,
    whether the write finds the reuse (a fresh seq) or verification does (a used seq)."""
    server, agent = enrolled
    sub = agent.submission_model()
    body = agent.sign(sub.to_bytes())
    assert server.post("/v1/submissions", body).status_code == 201
    stored = hashlib.sha256(body).hexdigest()
    other = agent.submission(submission_id=sub.submission_id, seed=7)
    problem = rejected(server, other, 409, "submission-id-reused", sub.submission_id)
    assert problem["envelope_sha256"] == stored, problem
    assert set(problem) == {"type", "title", "status", "detail", "envelope_sha256"}
    old_seq = agent.submission(submission_id=sub.submission_id, seed=8, seq=sub.seq)
    problem = rejected(server, old_seq, 409, "submission-id-reused", sub.submission_id)
    assert problem["envelope_sha256"] == stored, problem


def test_an_id_reused_from_another_practice_names_no_envelope(enrolled, agent_factory):
    """Another practice's envelope is not the submitter's to act on, nor its hash to learn: the
    refusal has no ``envelope_sha256`` member and its detail names no hash."""
    server, agent = enrolled
    sub = agent.submission_model()
    assert server.post("/v1/submissions", agent.sign(sub.to_bytes())).status_code == 201
    other = agent_factory("B82002")
    own = other.submission(period=Period.month(2026, 8))
    assert server.post("/v1/submissions", own).status_code == 201  # B's seq 1
    for seq in (None, 1):  # found by the write; found by verification (seq not increasing)
        body = other.submission(submission_id=sub.submission_id, seq=seq)
        problem = rejected(server, body, 409, "submission-id-reused", sub.submission_id)
        assert "envelope_sha256" not in problem, problem
        assert "sha256" not in problem["detail"], problem


def test_a_second_plain_submission_names_the_current_one_as_a_member(enrolled):
    """409 period-already-submitted carries the id of the period's current submission as the
    extension member ``current_submission_id`` (a client need not read it out of the detail):
    after a correction, the correction's id, not the first submission's."""
    server, agent = enrolled
    first = agent.submission_model()
    assert server.post("/v1/submissions", agent.sign(first.to_bytes())).status_code == 201
    problem = rejected(server, agent.submission(seed=2), 409, "period-already-submitted")
    assert problem["current_submission_id"] == first.submission_id, problem
    fix = agent.submission_model(seed=3, supersedes=first.submission_id, reason="late_data")
    assert server.post("/v1/submissions", agent.sign(fix.to_bytes())).status_code == 201
    problem = rejected(server, agent.submission(seed=4), 409, "period-already-submitted")
    assert problem["current_submission_id"] == fix.submission_id, problem
    assert set(problem) == {"type", "title", "status", "detail", "current_submission_id"}
    reused = agent.submission(submission_id=fix.submission_id, seed=5)
    assert "current_submission_id" not in rejected(server, reused, 409, "submission-id-reused")


def test_lower_seq(enrolled):
    server, agent = enrolled
    assert (
        server.post(
            "/v1/submissions", agent.submission(seq=10, period=Period.month(2026, 8))
        ).status_code
        == 201
    )
    for seq in (10, 3):
        problem = rejected(
            server, agent.submission(seq=seq), 409, "seq-not-increasing", f"seq {seq}"
        )
        assert (problem["kid"], problem["last_seq"]) == (agent.key.kid, 10), problem
        assert set(problem) == {"type", "title", "status", "detail", "kid", "last_seq"}


def test_a_stale_correction_names_what_superseded_it_and_the_current_one(enrolled):
    """409 already-superseded names the submission that superseded the one corrected
    (``superseded_by``) and the period's current submission (``current_submission_id``):
    after a second correction they differ."""
    server, agent = enrolled
    first = agent.submission_model(seed=1)
    assert server.post("/v1/submissions", agent.sign(first.to_bytes())).status_code == 201
    fix = agent.submission_model(seed=2, supersedes=first.submission_id, reason="late_data")
    assert server.post("/v1/submissions", agent.sign(fix.to_bytes())).status_code == 201
    stale = dict(supersedes=first.submission_id, reason="late_data")
    problem = rejected(server, agent.submission(seed=3, **stale), 409, "already-superseded")
    assert problem["superseded_by"] == fix.submission_id, problem
    assert problem["current_submission_id"] == fix.submission_id, problem
    fix2 = agent.submission_model(seed=4, supersedes=fix.submission_id, reason="data_correction")
    assert server.post("/v1/submissions", agent.sign(fix2.to_bytes())).status_code == 201
    problem = rejected(
        server, agent.submission(seed=5, **stale), 409, "already-superseded", fix.submission_id
    )
    assert problem["superseded_by"] == fix.submission_id, problem
    assert problem["current_submission_id"] == fix2.submission_id, problem
    members = {"type", "title", "status", "detail", "superseded_by", "current_submission_id"}
    assert set(problem) == members


def test_non_canonical_payload(enrolled):
    server, agent = enrolled
    value = json.loads(agent.submission_model().to_bytes())
    pretty = json.dumps(value, indent=1).encode()  # valid JSON, validly signed, not RFC 8785
    rejected(server, agent.sign(pretty), 400, "canonical-form", "canonical")


def test_envelope_must_be_canonical(enrolled):
    server, agent = enrolled
    body = json.dumps(json.loads(agent.submission()), indent=2).encode()
    rejected(server, body, 400, "envelope-format")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_body(enrolled, chunked):
    server, _ = enrolled
    body = b'{"payload":"' + b"A" * (300 * 1024) + b'"}'
    before = server.network.counts()
    if chunked:
        r = server.client.post(
            "/v1/submissions", content=(body[i : i + 8192] for i in range(0, len(body), 8192))
        )
        assert "content-length" not in r.request.headers
    else:
        r = server.post("/v1/submissions", body)
    assert_problem(r, 413, "body-too-large")
    assert server.network.counts() == before


def test_wrong_payload_type(enrolled):
    server, agent = enrolled
    body = sign_envelope("rotate", agent.submission_model().to_bytes(), [agent.key]).to_bytes()
    rejected(server, body, 400, "payload-type", "not a submission")


def test_unknown_indicator(enrolled):
    server, agent = enrolled
    cells = (
        Cell(
            indicator="ZZ_NOT_IN_CATALOGUE",
            stratum=Stratum(),
            denominator=Count(value=40, status="exact"),
            numerator=Count(value=20, status="exact"),
            exclusions=Count(value=0, status="zero"),
        ),
    )
    rejected(server, agent.submission(cells=cells), 422, "unknown-indicator", "ZZ_NOT_IN_CATALOGUE")


def test_unknown_stratum(enrolled):
    server, agent = enrolled
    cells = (
        Cell(
            indicator="HYP_REG",
            stratum=Stratum(),
            denominator=Count(value=40, status="exact"),
            numerator=Count(value=20, status="exact"),
            exclusions=Count(value=0, status="zero"),
        ),
        Cell(
            indicator="HYP_REG",
            stratum=Stratum(age_band="18-25", sex="F"),
            denominator=Count(value=40, status="rounded"),
            numerator=Count(value=20, status="rounded"),
            exclusions=Count(value=0, status="zero"),
        ),
    )
    rejected(server, agent.submission(cells=cells), 422, "unknown-stratum", "18-25")


def test_numerator_above_denominator_exact(enrolled):
    server, agent = enrolled
    value = json.loads(agent.submission_model().to_bytes())
    total = next(c for c in value["cells"] if c["stratum"] == {"age_band": "all", "sex": "all"})
    total["numerator"] = {"status": "exact", "value": total["denominator"]["value"] + 1}
    rejected(server, agent.sign(rfc8785.dumps(value)), 422, "schema", "numerator", "> denominator")


def test_numerator_above_denominator_rounded(enrolled):
    server, agent = enrolled
    cells = (
        Cell(
            indicator="HYP_REG",
            stratum=Stratum(),
            denominator=Count(value=40, status="exact"),
            numerator=Count(value=20, status="exact"),
            exclusions=Count(value=0, status="zero"),
        ),
        Cell(
            indicator="HYP_REG",
            stratum=Stratum(age_band="40-59", sex="F"),
            denominator=Count(value=10, status="rounded"),
            numerator=Count(value=15, status="rounded"),
            exclusions=Count(value=0, status="zero"),
        ),
    )
    rejected(
        server,
        agent.submission(cells=cells),
        422,
        "numerator-exceeds-denominator",
        "numerator 15 > denominator 10",
    )


def test_cells_breaking_the_disclosure_policy(enrolled):
    server, agent = enrolled
    cells = (
        Cell(
            indicator="HYP_REG",
            stratum=Stratum(),
            denominator=Count(value=40, status="exact"),
            numerator=Count(value=20, status="exact"),
            exclusions=Count(value=0, status="zero"),
        ),
        Cell(
            indicator="HYP_REG",
            stratum=Stratum(age_band="40-59", sex="F"),
            denominator=Count(value=3, status="exact"),
            numerator=Count(value=2, status="exact"),
            exclusions=Count(value=0, status="zero"),
        ),
    )
    rejected(server, agent.submission(cells=cells), 422, "disclosure", "HYP_REG")


def test_a_stratum_exclusions_count_sent_under_a_totals_only_policy(enrolled):
    """The shipped catalogue releases exclusions as a whole-practice total only: its form (every
    stratum's exclusions suppressed, zeros included) is what the agent sends; a stratum's
    exclusions sent as a zero (the by-stratum layout) is refused, naming the count."""
    import dataclasses

    from agg_helpers import default_catalogue, make_cells

    server, agent = enrolled
    catalogue = default_catalogue()
    assert catalogue.disclosure.exclusions_by_stratum is False
    cells = make_cells(catalogue, ["HYP_REG"])
    strata = [c for c in cells if not c.stratum.is_total]
    assert strata and all(c.exclusions.status == "suppressed" for c in strata)
    i = cells.index(strata[0])
    zero = dataclasses.replace(cells[i], exclusions=Count(value=0, status="zero"))
    bad = (*cells[:i], zero, *cells[i + 1 :])
    where = f"HYP_REG {zero.stratum.age_band}/{zero.stratum.sex} exclusions"
    rejected(server, agent.submission(cells=bad), 422, "disclosure", where, "total only")


def test_wrong_audience(enrolled):
    server, agent = enrolled
    rejected(server, agent.submission(aud="fedqi-staging"), 403, "wrong-audience", "fedqi-staging")


@pytest.mark.parametrize("offset,words", [(-8 * 86400, "old"), (600, "future")])
def test_iat_outside_the_window(enrolled, offset, words):
    server, agent = enrolled
    rejected(server, agent.submission(iat=int(time.time()) + offset), 422, "iat-window", words)


def _set_server_clock(server, when: dt.datetime) -> int:
    server.network.clock.held = when.timestamp()
    return int(server.network.clock())


@pytest.mark.parametrize("period", [Period.month(2026, 12), Period.month(2027, 1)])
def test_a_period_that_has_not_ended(enrolled, period):
    server, agent = enrolled
    now = _set_server_clock(server, dt.datetime(2026, 12, 15, 12, tzinfo=dt.UTC))
    rejected(server, agent.submission(period=period, iat=now), 422, "period-not-ended",
             f"period {period.label} has not ended", "14 h", "300 s")  # fmt: skip


def test_a_period_ends_when_its_last_day_is_over_in_the_earliest_time_zone(enrolled):
    """November 2026 ends at 2026-12-01 00:00 UTC+14, i.e. 2026-11-30 10:00 UTC; with the
    300 s iat allowance the aggregator accepts it from 09:55 UTC."""
    server, agent = enrolled
    november = Period.month(2026, 11)
    now = _set_server_clock(server, dt.datetime(2026, 11, 30, 9, 54, 59, tzinfo=dt.UTC))
    rejected(server, agent.submission(period=november, iat=now), 422, "period-not-ended",
             "2026-11-30")  # fmt: skip
    now = _set_server_clock(server, dt.datetime(2026, 11, 30, 9, 55, 0, tzinfo=dt.UTC))
    r = server.post("/v1/submissions", agent.submission(period=november, iat=now))
    assert r.status_code == 201, r.text


NOT_A_MONTH = {
    "half-month": Period(start=dt.date(2026, 3, 1), end=dt.date(2026, 3, 15)),
    "shifted-a-day": Period(start=dt.date(2026, 3, 2), end=dt.date(2026, 4, 1)),
    "two-months": Period(start=dt.date(2026, 3, 1), end=dt.date(2026, 4, 30)),
    "a-day-short": Period(start=dt.date(2026, 3, 1), end=dt.date(2026, 3, 30)),
    "february-29-of-a-common-year": Period(start=dt.date(2026, 2, 1), end=dt.date(2026, 3, 1)),
}


@pytest.mark.parametrize("period", NOT_A_MONTH.values(), ids=NOT_A_MONTH.keys())
def test_a_period_that_is_not_one_calendar_month(enrolled, period):
    """Benchmarks group by period: any other period is a group of its own, and overlapping
    periods from one practice could be differenced (docs/aggregator.md, check 9)."""
    server, agent = enrolled
    rejected(server, agent.submission(period=period), 422, "period-not-calendar-month",
             f"period {period.start.isoformat()} to {period.end.isoformat()} "
             "is not one calendar month",
             "first to the last day of one month")  # fmt: skip


def test_a_correction_to_a_period_that_is_not_one_calendar_month(enrolled):
    server, agent = enrolled
    march = agent.submission_model(period=Period.month(2026, 3))
    assert server.post("/v1/submissions", agent.sign(march.to_bytes())).status_code == 201
    correction = agent.submission(
        period=NOT_A_MONTH["a-day-short"], supersedes=march.submission_id, reason="late_data"
    )
    rejected(server, correction, 422, "period-not-calendar-month",
             "2026-03-01 to 2026-03-30", "e.g. 2026-03-01 to 2026-03-31")  # fmt: skip


@pytest.mark.parametrize(
    "period",
    [Period.month(2026, 3), Period.month(2024, 2), Period.month(2025, 12)],
    ids=["march", "february-of-a-leap-year", "december"],
)
def test_a_calendar_month_is_accepted(enrolled, period):
    server, agent = enrolled
    r = server.post("/v1/submissions", agent.submission(period=period))
    assert r.status_code == 201, r.text


def test_unknown_catalogue_version(enrolled):
    server, agent = enrolled
    rejected(server, agent.submission(catalogue_sha256="0" * 64), 422, "catalogue-mismatch")


def test_expired_enrolment_token(server):
    from agg_helpers import SimAgent, default_catalogue

    server.network.add_practice("C83003")
    token = server.network.token("C83003")
    agent = SimAgent(ods="C83003", catalogue=default_catalogue())
    server.network.clock.offset = 73 * 3600
    before = server.network.counts()
    body = agent.enrol(token, iat=int(server.network.clock()))
    assert_problem(server.post("/v1/enrol", body), 401, "enrol-token-expired")
    assert server.network.counts() == before


def test_reused_enrolment_token(server):
    from agg_helpers import SimAgent, default_catalogue

    server.network.add_practice("C83003")
    token = server.network.token("C83003")
    first = SimAgent(ods="C83003", catalogue=default_catalogue())
    assert server.post("/v1/enrol", first.enrol(token)).status_code == 201
    second = SimAgent(ods="C83003", catalogue=default_catalogue())
    before = server.network.counts()
    assert_problem(server.post("/v1/enrol", second.enrol(token)), 401, "enrol-token-used")
    assert server.network.counts() == before


def test_enrol_token_for_another_practice(server):
    from agg_helpers import SimAgent, default_catalogue

    server.network.add_practice("C83003")
    server.network.add_practice("D84004")
    token = server.network.token("C83003")
    agent = SimAgent(ods="D84004", catalogue=default_catalogue())
    before = server.network.counts()
    assert_problem(server.post("/v1/enrol", agent.enrol(token)), 403, "practice-binding")
    assert server.network.counts() == before


def test_enrol_signed_by_another_key(server):
    from agg_helpers import SimAgent, default_catalogue

    server.network.add_practice("C83003")
    agent = SimAgent(ods="C83003", catalogue=default_catalogue())
    body = agent.enrol(server.network.token("C83003"))
    env = Envelope.from_bytes(body)
    # Proof of possession: signed by some other key than the one being enrolled.
    other = sign_envelope("enrol", env.payload_bytes(), [SigningKey.generate()]).to_bytes()
    before = server.network.counts()
    assert_problem(server.post("/v1/enrol", other), 401, "signature")
    assert server.network.counts() == before


def test_practice_user_cannot_read_a_peers_envelope(enrolled, agent_factory):
    server, agent = enrolled
    peer = agent_factory("B82002")
    body = peer.submission()
    assert server.post("/v1/submissions", body).status_code == 201
    import hashlib

    sha = hashlib.sha256(body).hexdigest()
    # each refusal is worded for its role ("an IG officer", never "a ig_officer")
    for role, who in (("practice", "a practice user"), ("ig_officer", "an IG officer")):
        token = server.network.user(role, practice="A81001")
        r = server.get(f"/v1/envelopes/{sha}", token)
        assert_problem(r, 403, "envelope-forbidden", f"{who} may read only")
    # the network lead of the group may see practices identified, but not raw envelopes (and
    # has no practice of their own to read)
    lead = server.network.user("network_lead", group="PCN1")
    refusal = assert_problem(
        server.get(f"/v1/envelopes/{sha}", lead), 403, "envelope-forbidden",
        "a network lead may not read raw envelopes", "the practice and its IG officer",
    )  # fmt: skip
    assert "own practice" not in refusal["detail"]
    own = server.network.user("ig_officer", practice="B82002")
    r = server.get(f"/v1/envelopes/{sha}", own)
    assert r.status_code == 200 and r.content == body
    admin = server.network.user("admin")
    audit = server.get("/v1/audit/access", admin).json()
    assert [a["granted"] for a in audit] == [True, False, False, False]
    assert {a["envelope_sha256"] for a in audit} == {sha}
    # filtered as the dashboard's page is; a filter or parameter not understood is a 400
    refused = server.get("/v1/audit/access?granted=no", admin).json()
    assert [a["granted"] for a in refused] == [False, False, False]
    assert [a["role"] for a in server.get("/v1/audit/access?role=network_lead", admin).json()] == [
        "network_lead"
    ]
    assert server.get("/v1/audit/access?start=2000-01-01&end=2000-01-02", admin).json() == []
    assert_problem(server.get("/v1/audit/access?granted=maybe", admin), 400, "bad-request")
    assert_problem(server.get("/v1/audit/access?format=csv", admin), 400, "bad-request")
    assert_problem(server.get("/v1/audit/access?start=yesterday", admin), 400, "bad-request")


def test_requests_without_a_token_are_refused(enrolled):
    server, _ = enrolled
    assert_problem(server.get("/v1/log/entries?start=0&end=1"), 401, "bad-token")
    assert_problem(server.get("/v1/log/entries?start=0&end=1", "fqa_nonsense"), 401, "bad-token")
