"""`fedqi-aggregator log verify` re-verifies the whole log from the database (the step after a
restore from backup) and names what does not verify."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, update

from aggregator.cli import main as cli
from aggregator.db import models
from aggregator.errors import ExitCode
from protocol.submission import Period


def _verify(server, capsys) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    code = cli(["log", "verify", "--db", server.network.db, "--json"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def busy_log(server, agent_factory):  # type: ignore[no-untyped-def]
    a = agent_factory("A81001")
    b = agent_factory("A81002", group="PCN2")
    for month in (4, 5, 6):
        for agent in (a, b):
            r = server.post("/v1/submissions", agent.submission(period=Period.month(2026, month)))
            assert r.status_code == 201, r.text
    # a key event without an envelope of its own
    assert (
        server.network.cli(
            "key", "revoke", b.key.kid, "--key-dir", str(server.network.settings.key_dir)
        )
        == 0
    )
    return server


def test_log_verify_passes_on_an_intact_log(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out = _verify(busy_log, capsys)
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] is True
    assert report["size"] == 2 + 6 + 1  # two enrolments, six submissions, one revocation
    assert report["envelopes_checked"] == 8
    assert report["checkpoints_checked"] >= 1
    assert report["latest_checkpoint_size"] == report["size"]


def _edit(server, stmt) -> None:  # type: ignore[no-untyped-def]
    with server.network.database.session() as s:
        s.execute(stmt)


def test_log_verify_names_a_rewritten_leaf(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    with busy_log.network.database.read() as s:
        data = bytes(s.scalar(select(models.LogLeaf.leaf_data).where(models.LogLeaf.idx == 3)))
    forged = data.replace(b'"practice":"A8100', b'"practice":"B8100', 1)
    _edit(busy_log, update(models.LogLeaf).where(models.LogLeaf.idx == 3).values(leaf_data=forged))
    code, out = _verify(busy_log, capsys)
    assert code == ExitCode.LOG_FAILED and "leaf 3" in out and "hash" in out


def test_log_verify_names_a_rewritten_envelope(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    with busy_log.network.database.read() as s:
        env = s.scalars(select(models.Envelope).where(models.Envelope.leaf_index == 4)).one()
        sha, body = env.sha256, bytes(env.body)
    _edit(
        busy_log,
        update(models.Envelope).where(models.Envelope.sha256 == sha).values(body=body[:-2] + b" }"),
    )
    code, out = _verify(busy_log, capsys)
    assert code == ExitCode.LOG_FAILED and "leaf 4" in out and "envelope" in out


def test_log_verify_names_a_consistently_rewritten_history(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    """A DBA who rewrites a leaf AND its hash still cannot match the signed checkpoints."""
    from protocol import merkle

    with busy_log.network.database.read() as s:
        data = bytes(s.scalar(select(models.LogLeaf.leaf_data).where(models.LogLeaf.idx == 1)))
    forged = data.replace(b'"practice":"A8100', b'"practice":"B8100', 1)
    _edit(
        busy_log,
        update(models.LogLeaf)
        .where(models.LogLeaf.idx == 1)
        .values(leaf_data=forged, leaf_hash=merkle.leaf_hash(forged)),
    )
    code, out = _verify(busy_log, capsys)
    assert code == ExitCode.LOG_FAILED and "checkpoint" in out and "root" in out


def test_log_verify_names_a_corrupt_tree_node(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    _edit(
        busy_log,
        update(models.LogNode)
        .where(models.LogNode.level == 1, models.LogNode.idx == 0)
        .values(hash=b"\x00" * 32),
    )
    code, out = _verify(busy_log, capsys)
    assert code == ExitCode.LOG_FAILED and "log node (1, 0)" in out


def test_log_verify_names_a_dropped_leaf(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import delete

    _edit(busy_log, delete(models.LogLeaf).where(models.LogLeaf.idx == 8))
    code, out = _verify(busy_log, capsys)
    assert code == ExitCode.LOG_FAILED and ("log_state" in out or "missing" in out)


# --- evidence to the screen: each tamper is caught by the named check --------------------------------


def _findings(out: str) -> list[dict[str, str]]:
    return json.loads(out)["findings"]


def _a_cell(server, ods: str = "A81001", month: int = 4):  # type: ignore[no-untyped-def]
    import datetime as dt

    with server.network.database.read() as s:
        row = s.execute(
            select(models.Cell.submission_id, models.Cell.indicator, models.Cell.numerator)
            .join(models.Submission)
            .where(
                models.Submission.practice_ods == ods,
                models.Submission.period_start == dt.date(2026, month, 1),
                models.Cell.numerator.is_not(None),
            )
            .order_by(models.Cell.indicator)
        ).first()
    assert row is not None
    return row


def test_a_changed_cell_is_named_by_practice_period_and_indicator_and_shown_unverified(
    busy_log, capsys
) -> None:  # type: ignore[no-untyped-def]
    sid, indicator, numerator = _a_cell(busy_log)
    lead = busy_log.network.user("network_lead", group="PCN1")
    path = f"/v1/benchmarks/indicators/{indicator}?period=2026-04"

    def mine() -> dict:  # type: ignore[type-arg]
        r = busy_log.get(path, lead)
        assert r.status_code == 200, r.text
        return next(p for p in r.json()["practices"] if p["id"] == "A81001")

    before = mine()
    assert before["numerator"] == numerator and before["status"] != "unverified"
    _edit(
        busy_log,
        update(models.Cell)
        .where(models.Cell.submission_id == sid, models.Cell.indicator == indicator)
        .values(numerator=numerator + 16),
    )
    code, out = _verify(busy_log, capsys)
    assert code == ExitCode.LOG_FAILED, out
    cells = [f for f in _findings(out) if f["check"] == "cells"]
    assert len(cells) == 1, out
    f = cells[0]
    assert (f["practice"], f["period"], f["indicator"]) == (
        "A81001",
        "2026-04-01..2026-04-30",
        indicator,
    )
    assert f"stored {numerator + 16}" in f["detail"] and f"signed {numerator}" in f["detail"]
    # log verify marked the group for recomputation: the API no longer shows the forged value
    after = mine()
    assert after["status"] == "unverified", after
    assert after["numerator"] is None and after["rate"] is None
    assert "unverified" in after["note"]


def test_a_changed_cell_is_unverified_on_recompute_even_before_log_verify(busy_log) -> None:  # type: ignore[no-untyped-def]
    """The refresh checks what it reads against the signed payload itself: a counts value whose
    seal does not hold sends it to the cells, and a cells row whose verdict does not hold to the
    envelope."""
    from aggregator.benchmarks import service

    sid, indicator, numerator = _a_cell(busy_log, "A81002", 5)
    _edit(
        busy_log,
        update(models.Cell)
        .where(models.Cell.submission_id == sid, models.Cell.indicator == indicator)
        .values(numerator=numerator + 1),
    )
    _edit(
        busy_log,
        update(models.Submission)
        .where(models.Submission.submission_id == sid)
        .values(counts_verdict=b"\0" * 16),
    )
    with busy_log.network.database.session() as s:
        service.rebuild_all(s)
    lead = busy_log.network.user("network_lead", group="PCN2")
    r = busy_log.get(f"/v1/benchmarks/indicators/{indicator}?period=2026-05", lead)
    assert r.status_code == 200, r.text
    row = next(p for p in r.json()["practices"] if p["id"] == "A81002")
    assert row["status"] == "unverified" and row["numerator"] is None


def test_leaf_json_edited_with_its_hash_left_alone_fails_log_verify_and_the_ig_page(
    busy_log, capsys
) -> None:  # type: ignore[no-untyped-def]
    with busy_log.network.database.read() as s:
        sub = s.scalars(
            select(models.Submission).where(models.Submission.practice_ods == "A81001")
        ).first()
        idx = sub.leaf_index
        data = bytes(s.scalar(select(models.LogLeaf.leaf_data).where(models.LogLeaf.idx == idx)))
    forged = data.replace(b'"status":"accepted"', b'"status":"acceptex"', 1)
    assert forged != data
    _edit(
        busy_log, update(models.LogLeaf).where(models.LogLeaf.idx == idx).values(leaf_data=forged)
    )
    code, out = _verify(busy_log, capsys)
    assert code == ExitCode.LOG_FAILED
    assert {(f["check"], f["where"]) for f in _findings(out)} >= {("leaf-hash", f"leaf {idx}")}

    token = busy_log.network.user("ig_officer", practice="A81001")
    signin = busy_log.client.post("/dashboard/login", data={"token": token})
    assert signin.status_code == 303, signin.text
    r = busy_log.client.get("/dashboard/ig")
    assert r.status_code == 200, r.text
    html = r.text
    row = html[html.index(sub.submission_id) :]
    row = row[: row.index("</tr>")]
    assert "✗ FAILED" in row and "✗ leaf-hash" in row and "✗ inclusion" in row


@pytest.mark.parametrize("what", ["envelope", "leaf", "node", "cell"])
def test_each_tamper_is_caught_by_its_check(busy_log, capsys, what) -> None:  # type: ignore[no-untyped-def]
    with busy_log.network.database.read() as s:
        env = s.scalars(select(models.Envelope).where(models.Envelope.leaf_index == 4)).one()
        sha, body = env.sha256, bytes(env.body)
    if what == "envelope":
        _edit(
            busy_log,
            update(models.Envelope).where(models.Envelope.sha256 == sha).values(body=body + b" "),
        )
        expected = ("envelope-hash", "leaf 4")
    elif what == "leaf":
        with busy_log.network.database.read() as s:
            data = bytes(s.scalar(select(models.LogLeaf.leaf_data).where(models.LogLeaf.idx == 5)))
        _edit(
            busy_log,
            update(models.LogLeaf)
            .where(models.LogLeaf.idx == 5)
            .values(leaf_data=data.replace(b'"seq":', b'"seq": ', 1)),
        )
        expected = ("leaf-hash", "leaf 5")
    elif what == "node":
        _edit(
            busy_log,
            update(models.LogNode)
            .where(models.LogNode.level == 2, models.LogNode.idx == 0)
            .values(hash=b"\x01" * 32),
        )
        expected = ("tree-node", "log node (2, 0)")
    else:
        sid, indicator, _ = _a_cell(busy_log, "A81002", 6)
        _edit(
            busy_log,
            update(models.Cell)
            .where(models.Cell.submission_id == sid, models.Cell.indicator == indicator)
            .values(denominator_status="suppressed", denominator=None),
        )
        expected = (
            "cells",
            f"practice A81002, period 2026-06-01..2026-06-30, indicator {indicator}",
        )
    code, out = _verify(busy_log, capsys)
    assert code == ExitCode.LOG_FAILED
    assert expected in {(f["check"], f["where"]) for f in _findings(out)}, out
    # The payload audit's batched checks (one query each for a page's rows) find what the
    # checks run one submission at a time find, failures included.
    from aggregator.log import verify
    from aggregator.runtime import Runtime

    signer = Runtime.load(busy_log.network.settings).signer
    with busy_log.network.database.read() as s:
        subs = list(s.scalars(select(models.Submission).order_by(models.Submission.leaf_index)))
        cp = s.scalars(select(models.Checkpoint).order_by(models.Checkpoint.size.desc())).first()
        one_by_one = [verify.verify_submission(s, sub, cp, signer.key_name, signer.key.public)
                      for sub in subs]  # fmt: skip
    with busy_log.network.database.read() as s:
        subs = list(s.scalars(select(models.Submission).order_by(models.Submission.leaf_index)))
        batched = verify.verify_submissions(s, subs, cp, signer.key_name, signer.key.public)
    assert batched == one_by_one
    assert any(not c.ok for checks in batched for c in checks), what


def test_repaired_cells_are_shown_again_after_log_verify(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    sid, indicator, numerator = _a_cell(busy_log)
    lead = busy_log.network.user("network_lead", group="PCN1")
    path = f"/v1/benchmarks/indicators/{indicator}?period=2026-04"
    where = (models.Cell.submission_id == sid, models.Cell.indicator == indicator)
    _edit(busy_log, update(models.Cell).where(*where).values(numerator=numerator + 3))
    assert _verify(busy_log, capsys)[0] == ExitCode.LOG_FAILED
    row = next(p for p in busy_log.get(path, lead).json()["practices"] if p["id"] == "A81001")
    assert row["status"] == "unverified"
    _edit(busy_log, update(models.Cell).where(*where).values(numerator=numerator))
    assert _verify(busy_log, capsys)[0] == 0
    row = next(p for p in busy_log.get(path, lead).json()["practices"] if p["id"] == "A81001")
    assert row["status"] != "unverified" and row["numerator"] == numerator


# --- what the refresh itself checks: every stratum, and the signature ----------------------------------


def _signin(server, token: str):  # type: ignore[no-untyped-def]
    r = server.client.post("/dashboard/login", data={"token": token})
    assert r.status_code == 303, r.text
    return server.client


def test_a_forged_stratum_is_named_and_shown_nowhere(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    """A stratum edited in ``cells.strata`` (the whole-practice counts left alone) is named by
    log verify and, after it, neither the API, the FHIR MeasureReport nor the dashboard shows
    the practice's counts as fact."""
    sid, indicator, _ = _a_cell(busy_log)
    where = (models.Cell.submission_id == sid, models.Cell.indicator == indicator)
    with busy_log.network.database.read() as s:
        strata = json.loads(s.scalar(select(models.Cell.strata).where(*where)))
    band, sex = strata[0][0], strata[0][1]
    strata[0][2:6] = [12, "exact", 9, "exact"]  # denominator 12, numerator 9: not what was signed
    _edit(busy_log, update(models.Cell).where(*where).values(strata=json.dumps(strata)))

    code, out = _verify(busy_log, capsys)
    assert code == ExitCode.LOG_FAILED, out
    named = [f for f in _findings(out) if f["check"] == "cells"]
    assert {(f["practice"], f["indicator"]) for f in named} == {("A81001", indicator)}, out
    assert named and all(f"stratum {band}/{sex}" in f["detail"] for f in named), out

    lead = busy_log.network.user("network_lead", group="PCN1")
    r = busy_log.get(f"/v1/benchmarks/indicators/{indicator}?period=2026-04", lead)
    row = next(p for p in r.json()["practices"] if p["id"] == "A81001")
    assert row["status"] == "unverified" and row["numerator"] is None, row
    r = busy_log.get(
        f"/v1/benchmarks/practices/A81001/measure-report/{indicator}?period=2026-04", lead
    )
    assert r.status_code == 200, r.text
    group = r.json()["group"][0]
    assert "stratifier" not in group, group  # no stratum of an unverified row is served
    assert all(p.get("count") is None for p in group["population"]), group
    page = _signin(busy_log, lead).get(f"/dashboard/indicators/{indicator}?period=2026-04")
    assert page.status_code == 200, page.text
    assert "unverified" in page.text


def test_a_replaced_envelope_with_matching_cells_is_unverified(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    """Someone with the database rewrites a submission's envelope (a new payload, so the old
    signature no longer verifies), points the submission at it and makes the cells agree: the
    hashes all match, and still the refresh shows the practice as unverified, and log verify
    names the submission."""
    import base64
    import hashlib

    from aggregator.benchmarks import service
    from protocol.envelope import Envelope as ProtocolEnvelope
    from protocol.submission import Cell as ProtocolCell
    from protocol.submission import Count
    from protocol.submission import Submission as ProtocolSubmission

    sid, indicator, numerator = _a_cell(busy_log, "A81001", 5)
    with busy_log.network.database.read() as s:
        sub = s.get(models.Submission, sid)
        env = s.get(models.Envelope, sub.envelope_sha256)
        old_body, received, receipt = bytes(env.body), env.received_at, bytes(env.receipt)
    old = ProtocolEnvelope.from_bytes(old_body)
    signed = ProtocolSubmission.from_bytes(old.payload_bytes())
    forged_value = numerator + 5
    cells = tuple(
        ProtocolCell(
            indicator=c.indicator, stratum=c.stratum, denominator=c.denominator,
            numerator=Count(status="exact", value=forged_value), exclusions=c.exclusions,
        )
        if c.indicator == indicator and (c.stratum.age_band, c.stratum.sex) == ("all", "all")
        else c
        for c in signed.cells
    )  # fmt: skip
    payload = signed.model_copy(update={"cells": cells}).to_bytes()
    body = old.model_copy(update={"payload": base64.b64encode(payload).decode()}).to_bytes()
    sha = hashlib.sha256(body).hexdigest()
    with busy_log.network.database.session() as s:
        s.add(
            models.Envelope(
                sha256=sha, kind="submission", practice_ods="A81001", body=body,
                received_at=received, receipt=receipt, leaf_index=10_000,
            )
        )  # fmt: skip
        s.flush()
        s.execute(
            update(models.Submission)
            .where(models.Submission.submission_id == sid)
            .values(envelope_sha256=sha)
        )
        s.execute(
            update(models.Cell)
            .where(models.Cell.submission_id == sid, models.Cell.indicator == indicator)
            .values(numerator=forged_value)
        )
        service.rebuild_all(s)

    lead = busy_log.network.user("network_lead", group="PCN1")
    r = busy_log.get(f"/v1/benchmarks/indicators/{indicator}?period=2026-05", lead)
    row = next(p for p in r.json()["practices"] if p["id"] == "A81001")
    assert row["status"] == "unverified" and row["numerator"] is None, row

    code, out = _verify(busy_log, capsys)
    assert code == ExitCode.LOG_FAILED, out
    assert any(
        f["check"] == "leaf-submission" and f["period"] == "2026-05-01..2026-05-31"
        for f in _findings(out)
    ), out


def test_a_period_where_every_value_is_unverified_has_no_network_rate(busy_log, capsys) -> None:  # type: ignore[no-untyped-def]
    """The network trend does not show 0 of 0 ("no eligible patients") for a period whose
    practices are all unverified: nothing was pooled, and it says so."""
    import datetime as dt

    sid, indicator, numerator = _a_cell(busy_log, "A81001", 4)
    with busy_log.network.database.read() as s:
        other = s.scalar(
            select(models.Cell.submission_id)
            .join(models.Submission)
            .where(
                models.Submission.practice_ods == "A81002",
                models.Submission.period_start == dt.date(2026, 4, 1),
                models.Cell.indicator == indicator,
            )
        )
    for submission in (sid, other):
        _edit(
            busy_log,
            update(models.Cell)
            .where(models.Cell.submission_id == submission, models.Cell.indicator == indicator)
            .values(numerator=(numerator or 0) + 2, numerator_status="exact"),
        )
    assert _verify(busy_log, capsys)[0] == ExitCode.LOG_FAILED
    admin = busy_log.network.user("admin")
    r = busy_log.get(f"/v1/benchmarks/trends/{indicator}", admin)
    assert r.status_code == 200, r.text
    april = next(p for p in r.json()["network"] if p["period"]["start"] == "2026-04-01")
    assert april["status"] == "suppressed" and april["rate"] is None, april
    may = next(p for p in r.json()["network"] if p["period"]["start"] == "2026-05-01")
    assert may["status"] != "suppressed" and may["rate"] is not None, may


def test_the_payload_audit_pages_through_every_submission(busy_log, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Every accepted submission can be reached: the page says how many there are and which it
    shows, and links to older and newer pages (a page of 2 here; 200 in use)."""
    from aggregator.web import dashboard

    monkeypatch.setattr(dashboard, "IG_PAGE", 2)
    token = busy_log.network.user("admin")
    assert busy_log.client.post("/dashboard/login", data={"token": token}).status_code == 303
    with busy_log.network.database.read() as s:
        ids = [
            sub.submission_id
            for sub in s.scalars(
                select(models.Submission).order_by(models.Submission.leaf_index.desc())
            )
        ]
    assert len(ids) == 6
    seen = []
    for page, text in ((1, "Submissions 1–2 of 6"), (2, "Submissions 3–4 of 6"), (3, "5–6 of 6")):
        html = busy_log.client.get("/dashboard/ig", params={"page": str(page)}).text
        assert text in html and f"page {page} of 3" in html, html[:2000]
        assert ("older</a>" in html) == (page < 3) and ("newer</a>" in html) == (page > 1)
        seen += [i for i in ids if i in html]
    assert seen == ids  # each once, newest first
    assert '<th scope="col">Practice</th>' in html and "<td>A81002</td>" in html  # who sent it
    assert busy_log.client.get("/dashboard/ig/proof/99999").status_code == 404  # no such leaf
    past = busy_log.client.get("/dashboard/ig", params={"page": "9"})
    assert past.status_code == 200 and "5–6 of 6" in past.text  # past the end: the last page
    bad = busy_log.client.get("/dashboard/ig", params={"page": "x"})
    assert bad.status_code == 400 and "a page number from 1" in bad.text
    assert "<html" in bad.text.lower()  # the dashboard's own error page, not JSON


def test_envelope_and_proof_links_answer_as_dashboard_pages(busy_log) -> None:  # type: ignore[no-untyped-def]
    """Signed out, a payload-audit link sends the visitor to sign in; refused or unknown, it
    is the dashboard's error page, not a JSON problem."""
    import httpx

    with busy_log.network.database.read() as s:
        other = s.scalars(
            select(models.Submission).where(models.Submission.practice_ods == "A81002")
        ).first()
        sha, leaf = other.envelope_sha256, other.leaf_index
    with httpx.Client(base_url=busy_log.url, timeout=30) as anon:
        r = anon.get(f"/dashboard/ig/envelopes/{sha}")
        assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login?next=")
    token = busy_log.network.user("ig_officer", practice="A81001")
    assert busy_log.client.post("/dashboard/login", data={"token": token}).status_code == 303
    for path in (f"/dashboard/ig/envelopes/{sha}", f"/dashboard/ig/proof/{leaf}"):
        r = busy_log.client.get(path)  # another practice's
        assert r.status_code == 403 and r.headers["content-type"].startswith("text/html"), path
    assert "not one of your practice" in busy_log.client.get(path).text
    # a network lead, who has no practice, is not told of "your practice" (a new-user run)
    lead = busy_log.network.user("network_lead", group="PCN2")
    assert busy_log.client.post("/dashboard/login", data={"token": lead}).status_code == 303
    r = busy_log.client.get(f"/dashboard/ig/proof/{leaf}")
    assert r.status_code == 403 and "your practice" not in r.text, r.text


def test_a_database_carrying_another_log_key_fails_against_the_networks_key(
    busy_log, capsys
) -> None:  # type: ignore[no-untyped-def]
    """Someone who can write the database can store a log key of their own and re-sign every
    checkpoint with it; checked against the database's key alone, that log verifies. ``log
    verify`` checks the checkpoints against the network's key held apart: the key directory's
    log key, or the public key given with --log-public-key (as init printed it)."""
    from aggregator.keyfiles import load_log_key
    from protocol.checkpoint import Checkpoint, sign_checkpoint
    from protocol.keys import SigningKey, b64url_encode

    net = busy_log.network
    true_key = load_log_key(net.settings.key_dir).public.public_bytes()
    impostor = SigningKey.generate()
    with net.database.session() as s:
        network = s.scalars(select(models.Network)).one()
        network.log_public_key = impostor.public.public_bytes()
        for cp in s.scalars(select(models.Checkpoint)):
            body = Checkpoint(origin=network.origin, size=cp.size, root=bytes(cp.root))
            cp.note = sign_checkpoint(body, network.log_key_name, impostor)

    def verify(*extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
        capsys.readouterr()
        code = cli(["log", "verify", "--db", net.db, "--json", *extra])
        out = capsys.readouterr().out
        return code, json.loads(out) if out.strip() else {}

    # the database's own key alone: the re-signed log verifies, and the report says what it used
    code, report = verify("--key-dir", str(net.settings.key_dir / "nowhere"))
    assert (
        code == ExitCode.FAILED
    )  # an explicit --key-dir without the log key: a configuration error
    code, report = verify()
    assert "key stored in the database itself" in report["checkpoints_checked_against"]
    for extra in (
        ["--key-dir", str(net.settings.key_dir)],
        ["--log-public-key", b64url_encode(true_key)],
    ):
        code, report = verify(*extra)
        assert code == ExitCode.LOG_FAILED, (extra, report)
        checks = {f["check"] for f in report["findings"]}
        assert "log-key" in checks and "checkpoint-signature" in checks, (extra, checks)
    capsys.readouterr()
    assert (
        cli(["log", "verify", "--db", net.db, "--log-public-key", "not-a-key!"])
        == ExitCode.BAD_INPUT
    )
    # the option named once: "error: --log-public-key is not canonical unpadded base64url"
    assert capsys.readouterr().err.count("--log-public-key") == 1


HUGE = ("99999999999999999999", "9223372036854775808", "9007199254740992")


def test_a_log_number_past_the_databases_integers_is_a_400_not_a_500(server) -> None:  # type: ignore[no-untyped-def]
    """A tree size or leaf index beyond 2**53 - 1 (here past SQLite's and PostgreSQL's BIGINT
    too) is refused as bad input: a 400 problem for the API, as the proof endpoints give, and
    the dashboard's HTML error page for the dashboard, never an overflow in the database."""
    for n in HUGE:
        r = server.get(f"/v1/log/checkpoint/{n}")
        assert r.status_code == 400, (n, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "less than 9007199254740992" in r.json()["detail"], r.text
    assert server.get("/v1/log/checkpoint/-1").status_code == 400
    token = server.network.user("admin")
    assert server.client.post("/dashboard/login", data={"token": token}).status_code == 303
    for n in (*HUGE, "-1", "abc"):
        r = server.client.get(f"/dashboard/ig/proof/{n}")
        assert r.status_code == 400, (n, r.status_code, r.text)
        assert r.headers["content-type"].startswith("text/html"), (n, r.headers)
        assert "Sorry: that cannot be shown" in r.text and "Sign out" in r.text, r.text


def test_a_period_that_is_not_a_month_stored_before_the_aggregator_refused_it_still_verifies(
    server, agent_factory, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """History is read as it was signed: a submission for half a month, stored by an
    aggregator from before the calendar-month check, still parses, verifies and shows on the IG
    page, and its identical retry still gets its receipt; a new one like it is refused."""
    import datetime as dt

    from aggregator.benchmarks import service as benchmarks
    from aggregator.submissions import checks

    agent = agent_factory("A81001")
    half = Period(start=dt.date(2026, 3, 1), end=dt.date(2026, 3, 15))
    sub = agent.submission_model(period=half)
    body = agent.sign(sub.to_bytes())
    with monkeypatch.context() as before_the_check:
        before_the_check.setattr(checks, "check_period_is_month", lambda period: None)
        stored = server.post("/v1/submissions", body)
    assert stored.status_code == 201, stored.text

    retry = server.post("/v1/submissions", body)
    assert retry.status_code == 200 and retry.content == stored.content
    code, out = _verify(server, capsys)
    assert code == 0, out
    assert json.loads(out)["ok"] is True
    with server.network.database.session() as s:
        benchmarks.rebuild_all(s)

    token = server.network.user("ig_officer", practice="A81001")
    assert server.client.post("/dashboard/login", data={"token": token}).status_code == 303
    r = server.client.get("/dashboard/ig")
    assert r.status_code == 200 and sub.submission_id in r.text

    again = server.post("/v1/submissions", agent.submission(period=half))
    assert again.status_code == 422 and "period-not-calendar-month" in again.json()["type"]
