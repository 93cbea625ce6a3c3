"""Enrol, rotate, revoke; receipts and proofs verify; corrections; roles. Over a real uvicorn
server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json
import threading

import pytest
from agg_helpers import SimAgent, default_catalogue
from sqlalchemy import select, update
from verify import log_key, verify_receipt

from aggregator.db import models
from aggregator.db.cells import protocol_cells
from protocol.checkpoint import verify_checkpoint
from protocol.envelope import Envelope, verify_envelope
from protocol.keys import SigningKey
from protocol.merkle import MemoryTree, verify_consistency, verify_inclusion
from protocol.submission import Period, Receipt


def test_enrol_binds_the_key_and_logs_a_key_event(server):
    server.network.add_practice("A81001")
    agent = SimAgent(ods="A81001", catalogue=default_catalogue())
    body = agent.enrol(server.network.token("A81001"))
    r = server.post("/v1/enrol", body)
    assert r.status_code == 201
    receipt = verify_receipt(server.client, r.content, body)
    assert receipt.message_type == "enrol" and receipt.leaf_index == 0
    # an identical retry (the response was lost) gets the same receipt, nothing new stored
    before = server.network.counts()
    again = server.post("/v1/enrol", body)
    assert again.status_code == 200 and again.content == r.content
    assert server.network.counts() == before
    admin = server.network.user("admin")
    leaf = server.get("/v1/log/entries?start=0&end=1", admin).json()[0]["leaf"]
    assert (
        leaf["type"] == "key_event"
        and leaf["status"] == "enrolled"
        and leaf["kid"] == agent.key.kid
    )
    assert leaf["envelope_sha256"] == hashlib.sha256(body).hexdigest()


def test_enrol_never_replaces_an_active_key(server, agent_factory):
    agent = agent_factory("A81001")
    intruder = SimAgent(ods="A81001", catalogue=default_catalogue())
    r = server.post("/v1/enrol", intruder.enrol(server.network.token("A81001")))
    assert r.status_code == 409 and r.json()["type"].endswith("practice-has-key")
    # the key to rotate or have revoked, as a member (the token was issued for this practice)
    assert r.json()["active_kid"] == agent.key.kid, r.json()
    assert server.post("/v1/submissions", agent.submission()).status_code == 201
    assert server.post("/v1/submissions", intruder.submission()).status_code == 401


def test_rotate_retires_the_old_key(server, agent_factory):
    agent = agent_factory("A81001")
    assert (
        server.post("/v1/submissions", agent.submission(period=Period.month(2026, 7))).status_code
        == 201
    )
    new_key = SigningKey.generate()
    body = agent.rotate(new_key)
    r = server.post("/v1/keys/rotate", body)
    assert r.status_code == 201, r.text
    receipt = verify_receipt(server.client, r.content, body)
    assert receipt.message_type == "rotate"
    assert server.post("/v1/keys/rotate", body).content == r.content  # idempotent
    old = agent.submission(period=Period.month(2026, 8))
    r = server.post("/v1/submissions", old)
    assert r.status_code == 403 and r.json()["type"].endswith("key-retired")
    agent.key = new_key
    assert (
        server.post("/v1/submissions", agent.submission(period=Period.month(2026, 8))).status_code
        == 201
    )


def test_rotate_needs_both_signatures(server, agent_factory):
    agent = agent_factory("A81001")
    new_key = SigningKey.generate()
    env = Envelope.from_bytes(agent.rotate(new_key))
    from protocol.envelope import sign_envelope

    only_new = sign_envelope("rotate", env.payload_bytes(), [new_key]).to_bytes()
    before = server.network.counts()
    assert server.post("/v1/keys/rotate", only_new).status_code == 400
    impostor = sign_envelope(
        "rotate", env.payload_bytes(), [SigningKey.generate(), new_key]
    ).to_bytes()
    assert server.post("/v1/keys/rotate", impostor).status_code == 401
    assert server.network.counts() == before


def test_a_rotation_with_a_used_seq_names_the_key_and_its_last_seq(server, agent_factory):
    """409 seq-not-increasing on /v1/keys/rotate carries the same members as a submission's:
    the old key's ``kid`` and its ``last_seq``; nothing is stored."""
    agent = agent_factory("A81001")
    assert server.post("/v1/submissions", agent.submission(seq=5)).status_code == 201
    agent.seq = 2  # the rotation is signed with seq 3
    before = server.network.counts()
    r = server.post("/v1/keys/rotate", agent.rotate(SigningKey.generate()))
    assert r.status_code == 409 and r.json()["type"].endswith("seq-not-increasing"), r.text
    problem = r.json()
    assert "seq 3 is not above the last accepted seq 5" in problem["detail"]
    assert (problem["kid"], problem["last_seq"]) == (agent.key.kid, 5), problem
    assert server.network.counts() == before


def test_revoked_key_history_stays_verifiable(server, agent_factory):
    agent = agent_factory("A81001")
    body = agent.submission()
    r = server.post("/v1/submissions", body)
    receipt = verify_receipt(server.client, r.content, body)
    net = server.network
    assert (
        net.cli(
            "key",
            "revoke",
            agent.key.kid,
            "--compromised-since",
            "2026-01-01",
            "--key-dir",
            str(net.settings.key_dir),
        )
        == 0
    )
    assert (
        net.cli("key", "revoke", agent.key.kid, "--key-dir", str(net.settings.key_dir)) != 0
    )  # already revoked
    name, key = log_key(server.client)
    cp = verify_checkpoint(server.get("/v1/log/checkpoint").text, name, key)
    assert cp.size == receipt.tree_size + 1  # the revocation is a leaf too
    proof = server.get(f"/v1/log/proof/inclusion?index={receipt.leaf_index}&size={cp.size}").json()
    verify_inclusion(
        receipt.leaf_index,
        cp.size,
        bytes.fromhex(receipt.leaf_hash),
        [bytes.fromhex(h) for h in proof["proof"]],
        cp.root,
    )
    admin = server.network.user("admin")
    stored = server.get(f"/v1/envelopes/{receipt.envelope_sha256}", admin).content
    assert stored == body
    verify_envelope(Envelope.from_bytes(stored), [agent.key.public], kind="submission")


def test_consistency_proofs_between_every_pair_of_sizes(server, agent_factory):
    agents = [agent_factory(f"A8100{i}") for i in range(1, 4)]
    for month in range(1, 5):
        for a in agents:
            assert (
                server.post(
                    "/v1/submissions", a.submission(period=Period.month(2026, month))
                ).status_code
                == 201
            )
    name, key = log_key(server.client)
    size = verify_checkpoint(server.get("/v1/log/checkpoint").text, name, key).size
    assert size == 15
    roots = {
        n: verify_checkpoint(server.get(f"/v1/log/checkpoint/{n}").text, name, key).root
        for n in range(1, size + 1)
    }
    admin = server.network.user("admin")
    leaves = server.get(f"/v1/log/entries?start=0&end={size}", admin).json()
    tree = MemoryTree.from_leaf_hashes([bytes.fromhex(e["leaf_hash"]) for e in leaves])
    for e in leaves:  # leaf hashes are of the leaf data served
        assert (
            hashlib.sha256(b"\0" + base64.b64decode(e["leaf_data"])).hexdigest() == e["leaf_hash"]
        )
    for new in range(1, size + 1):
        assert tree.root(new) == roots[new]
        for old in range(1, new + 1):
            p = server.get(f"/v1/log/proof/consistency?old={old}&new={new}").json()
            verify_consistency(
                old, new, roots[old], roots[new], [bytes.fromhex(h) for h in p["proof"]]
            )
        for index in range(new):
            p = server.get(f"/v1/log/proof/inclusion?index={index}&size={new}").json()
            verify_inclusion(
                index, new, tree.leaf(index), [bytes.fromhex(h) for h in p["proof"]], roots[new]
            )
    bad = server.get(f"/v1/log/proof/consistency?old=3&new={size + 1}")
    assert bad.status_code == 400 and bad.json()["type"].endswith("bad-tree-size")


def test_corrections_keep_every_version_and_change_the_effective_values(server, agent_factory):
    agent = agent_factory("A81001")
    first = agent.submission_model(seed=1)
    assert server.post("/v1/submissions", agent.sign(first.to_bytes())).status_code == 201
    plain_again = server.post("/v1/submissions", agent.submission(seed=2))
    assert plain_again.status_code == 409 and plain_again.json()["type"].endswith(
        "period-already-submitted"
    )
    fix = agent.submission_model(seed=3, supersedes=first.submission_id, reason="late_data")
    r = server.post("/v1/submissions", agent.sign(fix.to_bytes()))
    assert r.status_code == 201, r.text
    verify_receipt(server.client, r.content)
    stale = server.post(
        "/v1/submissions",
        agent.submission(seed=4, supersedes=first.submission_id, reason="late_data"),
    )
    assert stale.status_code == 409 and stale.json()["type"].endswith("already-superseded")
    wrong_period = agent.submission(
        seed=5, period=Period.month(2026, 8), supersedes=fix.submission_id, reason="late_data"
    )
    r = server.post("/v1/submissions", wrong_period)
    assert r.status_code == 422 and r.json()["type"].endswith("supersedes-mismatch")

    rt = server.network.runtime()
    with rt.db.read() as s:
        rows = {row.submission_id: row for row in s.scalars(select(models.Submission))}
        assert rows[first.submission_id].effective is False
        assert rows[first.submission_id].superseded_by == fix.submission_id
        assert rows[fix.submission_id].effective is True
        effective = {
            c.key: c.numerator.value
            for c in protocol_cells(
                s.scalars(
                    select(models.Cell)
                    .join(models.Submission)
                    .where(models.Submission.effective.is_(True))
                )
            )
        }
        stored_versions = {c.submission_id for c in s.scalars(select(models.Cell))}
        leaves = [
            json.loads(bytes(x.leaf_data))
            for x in s.scalars(select(models.LogLeaf).where(models.LogLeaf.kind == "submission"))
        ]
    assert stored_versions == {first.submission_id, fix.submission_id}
    assert effective == {c.key: c.numerator.value for c in fix.cells}
    assert effective != {c.key: c.numerator.value for c in first.cells}
    assert [(x["submission_id"], x["supersedes"]) for x in leaves] == [
        (first.submission_id, None),
        (fix.submission_id, first.submission_id),
    ]


def test_concurrent_submissions_get_distinct_contiguous_leaves(server, agent_factory):
    agents = [agent_factory(f"A8100{i}") for i in range(1, 5)]
    results: list[Receipt] = []
    errors: list[str] = []

    def send(agent: SimAgent) -> None:
        import httpx

        with httpx.Client(base_url=server.url, timeout=60) as c:
            for month in range(1, 4):
                body = agent.submission(period=Period.month(2026, month))
                r = c.post("/v1/submissions", content=body)
                if r.status_code != 201:
                    errors.append(r.text)
                else:
                    results.append(verify_receipt(c, r.content, body))

    threads = [threading.Thread(target=send, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.leaf_index for r in results) == list(range(4, 16))  # 4 enrolments first


def test_role_views_and_pseudonyms(server, agent_factory):
    agent_factory("A81001")
    agent_factory("B82002")
    agent_factory("C83003", group="PCN2")
    net = server.network
    practice_user = net.user("practice", practice="A81001")
    other_user = net.user("practice", practice="B82002")
    seen = server.get("/v1/practices", practice_user).json()
    # own, then every other practice of the network (not only its PCN's: that would say which
    # pseudonyms share its PCN), by pseudonym only, in pseudonym order (not ODS order)
    assert [p["identified"] for p in seen] == [True, False, False]
    assert seen[0]["practice"] == "A81001"
    peers = seen[1:]
    assert all(set(p) == {"practice", "identified"} for p in peers)  # no group, name or size
    assert [p["practice"] for p in peers] == sorted(p["practice"] for p in peers)
    pseudonym = peers[0]["practice"]
    assert pseudonym.startswith("P-") and "B82002" not in json.dumps(seen)
    assert "C83003" not in json.dumps(seen) and "PCN" not in json.dumps(peers)
    assert server.get("/v1/practices", practice_user).json()[1]["practice"] == pseudonym  # stable
    other_view = server.get("/v1/practices", other_user).json()
    assert pseudonym not in json.dumps(other_view)  # another viewer, another pseudonym
    lead = server.get("/v1/practices", net.user("network_lead", group="PCN1")).json()
    assert [p["practice"] for p in lead] == ["A81001", "B82002"]
    entries = server.get("/v1/log/entries?start=0&end=3", practice_user).json()
    assert ["leaf" in e for e in entries] == [True, False, False]
    assert all(len(e["leaf_hash"]) == 64 for e in entries)
    assert server.get("/v1/audit/access", practice_user).status_code == 403
    assert server.get("/v1/me", practice_user).json()["role"] == "practice"


def test_catalogue_and_keys_are_served_signed(server):
    r = server.get("/v1/catalogue")
    assert r.status_code == 200
    key_info = server.get("/v1/catalogue/key").json()
    from protocol.catalogue import Catalogue
    from protocol.keys import VerifyingKey

    key = VerifyingKey.from_public_bytes(base64.b64decode(key_info["public_key"]))
    payload = verify_envelope(Envelope.from_bytes(r.content), [key], kind="catalogue")
    assert Catalogue.from_bytes(payload).sha256() == default_catalogue().sha256()
    assert server.get("/v1/log/checkpoint").status_code == 404  # nothing logged yet


def test_health_readiness_and_openapi(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    assert server.get("/readyz").json() == {"status": "ready"}
    assert server.get("/docs").status_code == 200
    # the server's own address, opened in a browser, leads to the dashboard (not a 404 problem)
    root = server.get("/", follow_redirects=False)
    assert (root.status_code, root.headers["location"]) == (307, "/dashboard"), root.text
    paths = server.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    for p in (
        "/v1/submissions",
        "/v1/enrol",
        "/v1/keys/rotate",
        "/v1/log/checkpoint",
        "/v1/log/proof/inclusion",
        "/v1/log/proof/consistency",
        "/v1/log/entries",
        "/v1/envelopes/{sha256}",
        "/v1/catalogue",
    ):
        assert p in paths
    r = server.get("/v1/log/proof/inclusion?index=abc&size=1")
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"


def test_receipt_model_round_trips(server, agent_factory):
    agent = agent_factory("A81001")
    r = server.post("/v1/submissions", agent.submission())
    env = Envelope.from_bytes(r.content)
    name, key = log_key(server.client)
    receipt = Receipt.from_bytes(verify_envelope(env, [key], kind="receipt"))
    assert receipt.aud == "fedqi-test" and receipt.status == "accepted"


def test_a_key_revoked_as_compromised_flags_what_it_signed_in_the_window(server, agent_factory):
    """``key revoke --compromised-since``: what the key signed that arrived in the window stays
    in the log but is flagged on the IG payload audit and shown as unverified, pooled nowhere,
    in the benchmarks; what arrived before stays. A correction from the practice's new key that
    names the suspect submission (the agent's --supersedes) replaces it."""
    import datetime as dt
    import uuid

    from aggregator.benchmarks.service import SUSPECT_NOTE

    agent = agent_factory("A81001")
    agent_factory("A81002")  # a peer, so there is a network to pool
    sep, octo = Period.month(2026, 9), Period.month(2026, 10)
    sep_id, oct_id = str(uuid.uuid4()), str(uuid.uuid4())
    assert (
        server.post(
            "/v1/submissions", agent.submission(period=sep, submission_id=sep_id)
        ).status_code
        == 201
    )
    net = server.network
    with net.database.session() as s:  # September's arrived before the window opens
        s.execute(
            update(models.Submission)
            .where(models.Submission.submission_id == sep_id)
            .values(received_at=dt.datetime(2026, 9, 5, tzinfo=dt.UTC))
        )
    assert (
        server.post(
            "/v1/submissions", agent.submission(period=octo, submission_id=oct_id)
        ).status_code
        == 201
    )
    admin = net.user("admin")

    def row(period: Period) -> dict:  # type: ignore[type-arg]
        view = server.get(f"/v1/benchmarks/practices/A81001?period={period.label}", admin).json()
        return next(i for i in view["indicators"] if i["indicator"] == "HYP_REG")

    assert row(octo)["status"] != "unverified"
    assert net.cli("key", "revoke", agent.key.kid, "--compromised-since", "2026-10-01",
                   "--key-dir", str(net.settings.key_dir)) == 0  # fmt: skip
    flagged = row(octo)
    assert flagged["status"] == "unverified" and flagged["note"] == SUSPECT_NOTE
    assert flagged["rate"] is None and flagged["numerator"] is None
    assert row(sep)["status"] != "unverified"  # before the window
    ig = net.user("ig_officer", practice="A81001")
    signin = server.client.post("/dashboard/login", data={"token": ig})
    assert signin.status_code == 303, signin.text
    page = server.client.get("/dashboard/ig").text
    oct_row = page[page.index(oct_id) :]
    assert "⚠ suspect" in oct_row[: oct_row.index("</tr>")]
    sep_row = page[page.index(sep_id) :]
    assert "⚠ suspect" not in sep_row[: sep_row.index("</tr>")]

    # the practice re-enrols a new key and corrects October, naming the suspect submission
    fresh = SimAgent(ods="A81001", catalogue=agent.catalogue)
    assert server.post("/v1/enrol", fresh.enrol(net.token("A81001"))).status_code == 201
    body = fresh.submission(period=octo, supersedes=oct_id, reason="data_correction")
    r = server.post("/v1/submissions", body)
    assert r.status_code == 201, r.text
    corrected = row(octo)
    assert corrected["status"] != "unverified" and corrected["rate"] is not None


def test_head_answers_wherever_get_does(server) -> None:  # type: ignore[no-untyped-def]
    """HEAD (RFC 9110; uptime monitors use it) gets the GET's status and headers without the
    body, on the health checks, the API and the dashboard; a POST-only path stays a 405."""
    admin = server.network.user("admin")
    assert server.client.post("/dashboard/login", data={"token": admin}).status_code == 303
    for path in ("/healthz", "/readyz", "/v1/log/key", "/v1/me", "/dashboard", "/dashboard/login",
                 "/dashboard/ig-pack", "/dashboard/ig-pack/dpia.html", "/dashboard/nope"):  # fmt: skip
        get = server.client.get(path, headers={"authorization": f"Bearer {admin}"})
        head = server.client.head(path, headers={"authorization": f"Bearer {admin}"})
        assert head.status_code == get.status_code, (path, head.status_code, get.status_code)
        assert head.status_code != 405 and head.content == b"", path
        assert head.headers.get("content-type") == get.headers.get("content-type"), path
        assert head.headers.get("location") == get.headers.get("location"), path
    assert server.client.head("/healthz").status_code == 200
    assert server.client.head("/v1/submissions").status_code == 405


def test_method_not_allowed_lists_head_wherever_it_lists_get(server) -> None:  # type: ignore[no-untyped-def]
    """A 405's Allow names every method the path answers (RFC 9110 section 15.5.6): HEAD
    wherever GET, since HEAD is answered wherever GET is, and each method of a path that
    several routes serve (the login page's GET and its form's POST)."""

    def allow(method: str, path: str) -> list[str]:
        r = server.client.request(method, path)
        assert r.status_code == 405, (method, path, r.status_code)
        assert r.headers["content-type"] == "application/problem+json", (method, path)
        return [m.strip() for m in r.headers["allow"].split(",")]

    for path in ("/healthz", "/v1/log/key", "/v1/log/checkpoint/3", "/dashboard",
                 "/dashboard/static/dashboard.css"):  # fmt: skip
        assert sorted(allow("DELETE", path)) == ["GET", "HEAD"], path
    assert sorted(allow("PUT", "/dashboard/login")) == ["GET", "HEAD", "POST"]
    said = server.client.request("PUT", "/dashboard/login").json()
    assert said["detail"] == "PUT /dashboard/login: this path answers GET, HEAD, POST", said
    # POST only: no GET, so no HEAD either, and a HEAD there is refused naming POST
    assert allow("GET", "/v1/submissions") == ["POST"]
    assert allow("HEAD", "/v1/submissions") == ["POST"]


def test_an_integer_too_long_or_json_too_deep_is_a_400_problem_not_a_500(server) -> None:  # type: ignore[no-untyped-def]
    """A body holding an integer of thousands of digits (Python refuses to convert one of more
    than 4,300, a ValueError the parser did not catch) or nested beyond the parser's depth is
    refused as a malformed envelope, 400 problem+json naming what is wrong, on every POST that
    takes an envelope (a fuzzing run found 500 text/plain)."""
    long_int = b'{"payloadType":' + b"9" * 5000 + b"}"
    deep = b"[" * 100_000
    for path in ("/v1/submissions", "/v1/enrol", "/v1/keys/rotate"):
        for body, said in ((long_int, "an integer of 5000 digits"), (deep, "nested too deeply")):
            r = server.client.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, (path, r.status_code, r.text[:200])
            assert r.headers["content-type"] == "application/problem+json", path
            assert said in r.json()["detail"], (path, r.json())


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "2026-02-30", "2026-11-02T25:00:00"])
def test_a_suspect_window_that_is_no_date_is_refused_in_words(server, agent_factory, capsys, bad):  # type: ignore[no-untyped-def]
    """``key revoke --compromised-since``: a start that is not a real date (or date and time) is
    refused naming the option, the value and the forms it takes, exit 2, and nothing is
    revoked (Click's "does not match the formats '%Y-%m-%d', ..." said neither why nor how)."""
    agent = agent_factory("A81001")
    net = server.network
    capsys.readouterr()
    code = net.cli("key", "revoke", agent.key.kid, "--compromised-since", bad,
                   "--key-dir", str(net.settings.key_dir))  # fmt: skip
    said = capsys.readouterr()
    assert code == 2, said
    text = said.out + said.err
    assert f"--compromised-since {bad!r}: not a date (2026-11-02) or a date and time" in text
    assert "%Y" not in text and "Traceback" not in text
    with net.database.session() as s:
        key = s.get(models.PracticeKey, agent.key.kid)
        assert key is not None and key.status == "active" and key.compromised_since is None
