"""Visibility chosen by the practice (``named`` / ``pseudonymised`` / ``totals_only``), carried in
its signed submission and enforced by the aggregator for every role and output: the practices
API, the funnel (JSON, detail and CSV), the FHIR MeasureReport, the log entries and the dashboard
(page and CSV); a change takes effect from the next submission and is logged. Real server on
loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import logging

import pytest

from protocol.submission import Period, Submission

SEPT, OCT = Period.month(2026, 9), Period.month(2026, 10)
NAMED, PSEUDO, TOTALS = "A81001", "B82002", "C83003"


def _send(server, agent, period: Period, visibility: str | None) -> Submission:  # type: ignore[no-untyped-def]
    sub = agent.submission_model(period=period)
    if visibility is not None:
        sub = sub.model_copy(update={"visibility": visibility})
    sub = Submission.from_bytes(sub.to_bytes())  # the canonical bytes parse back, field and all
    assert sub.visibility == visibility
    r = server.post("/v1/submissions", agent.sign(sub.to_bytes()))
    assert r.status_code == 201, r.text
    return sub


@pytest.fixture
def three(server, agent_factory):  # type: ignore[no-untyped-def]
    agents = {ods: agent_factory(ods, "PCN1") for ods in (NAMED, PSEUDO, TOTALS)}
    _send(server, agents[NAMED], SEPT, None)  # absent: named, as before the field existed
    _send(server, agents[PSEUDO], SEPT, "pseudonymised")
    _send(server, agents[TOTALS], SEPT, "totals_only")
    net = server.network
    tokens = {
        "admin": net.user("admin"),
        "lead": net.user("network_lead", group="PCN1"),
        **{f"practice:{o}": net.user("practice", practice=o) for o in agents},
        f"ig:{NAMED}": net.user("ig_officer", practice=NAMED),
    }
    return server, agents, tokens


def _funnel(server, token: str, **q: str) -> dict:  # type: ignore[no-untyped-def]
    query = "&".join(f"{k}={v}" for k, v in {"period": "2026-09", **q}.items())
    r = server.get(f"/v1/benchmarks/indicators/HYP_REG?{query}", token)
    assert r.status_code == 200, r.text
    return r.json() if q.get("format") != "csv" else r.text  # type: ignore[no-any-return]


@pytest.mark.parametrize("who", ["admin", "lead"])
def test_lead_and_admin_see_only_the_named_practice_identified(three, who: str):
    server, _, tokens = three
    token = tokens[who]
    listed = server.get("/v1/practices", token).json()
    assert [p["practice"] for p in listed if p["identified"]] == [NAMED]
    hidden = [p["practice"] for p in listed if not p["identified"]]
    assert len(hidden) == 1 and hidden[0].startswith("P-")  # PSEUDO, under a pseudonym
    for view in (_funnel(server, token), _funnel(server, token, detail="true")):
        ids = [p["id"] for p in view["practices"]]
        assert NAMED in ids and PSEUDO not in ids and TOTALS not in ids
        assert len(ids) == 2  # the named one and the pseudonymised one; totals_only is no point
        assert view["summary"]["practices"] == 3  # but it is in the network totals
    text = _funnel(server, token, format="csv")
    assert NAMED in text and PSEUDO not in text and TOTALS not in text
    for ods in (PSEUDO, TOTALS):
        refused = server.get(f"/v1/benchmarks/practices/{ods}", token)
        assert refused.status_code == 403
        noun = {"admin": "an admin", "lead": "a network lead"}[who]
        assert refused.json()["detail"] == f"practice {ods}: not visible to {noun}"
        fhir = server.get(
            f"/v1/benchmarks/practices/{ods}/measure-report/HYP_REG?period=2026-09", token
        )
        assert fhir.status_code == 403
    fhir = server.get(
        f"/v1/benchmarks/practices/{NAMED}/measure-report/HYP_REG?period=2026-09", token
    )
    assert fhir.status_code == 200 and NAMED in fhir.text
    size = int(server.get("/v1/log/checkpoint").text.splitlines()[1])
    entries = server.get(f"/v1/log/entries?start=0&end={size}", token).json()
    assert len(entries) == size
    seen = " ".join(str(e.get("leaf", "")) for e in entries)
    assert NAMED in seen and PSEUDO not in seen and TOTALS not in seen


@pytest.mark.parametrize("ods", [NAMED, PSEUDO, TOTALS])
def test_each_practice_still_sees_itself_and_not_a_totals_only_peer(three, ods: str):
    server, _, tokens = three
    token = tokens[f"practice:{ods}"]
    view = _funnel(server, token)
    ids = [p["id"] for p in view["practices"]]
    assert ids[0] == ods and view["practices"][0]["identified"] is True
    assert len(ids) == (3 if ods == TOTALS else 2)  # a totals_only peer is not shown to others
    assert not any(o in ids for o in {NAMED, PSEUDO, TOTALS} - {ods})
    assert server.get(f"/v1/benchmarks/practices/{ods}", token).status_code == 200
    fhir = server.get(
        f"/v1/benchmarks/practices/{ods}/measure-report/HYP_REG?period=2026-09", token
    )
    assert fhir.status_code == 200
    listed = server.get("/v1/practices", token).json()
    assert listed[0]["practice"] == ods and len(listed) == (3 if ods == TOTALS else 2)


def test_the_dashboard_enforces_it_for_every_role(three):
    import httpx

    server, _, tokens = three
    for who, token in tokens.items():
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert c.post("/dashboard/login", data={"token": token}).status_code == 303
            own = who.partition(":")[2] or None
            page = c.get("/dashboard/indicators/HYP_REG?period=2026-09")
            assert page.status_code == 200, (who, page.text[:300])
            csv_text = c.get("/dashboard/indicators/HYP_REG/funnel.csv?period=2026-09").text
            for ods in (PSEUDO, TOTALS):
                if ods != own:
                    assert ods not in page.text and ods not in csv_text, (who, ods)
            if who in ("admin", "lead"):
                overview = c.get("/dashboard/overview.csv?period=2026-09").text
                assert NAMED in overview and PSEUDO not in overview and TOTALS not in overview
                assert c.get(f"/dashboard/practices/{PSEUDO}").status_code == 403
            # the IG pack holds no practice's values at all
            for doc in ("data-items", "dpia"):
                pack = c.get(f"/dashboard/ig-pack/{doc}.html").text
                assert not any(o in pack for o in (NAMED, PSEUDO, TOTALS))


def test_a_change_takes_effect_from_the_next_submission_and_is_logged(three, caplog):
    server, agents, tokens = three
    admin = tokens["admin"]
    assert PSEUDO not in [p["id"] for p in _funnel(server, admin)["practices"]]
    with caplog.at_level(logging.INFO, logger="fedqi.aggregator.visibility"):
        back = _send(server, agents[PSEUDO], OCT, None)  # named again (the field left out)
        _send(server, agents[NAMED], OCT, None)  # no change: nothing logged
    changes = [r.getMessage() for r in caplog.records if r.name == "fedqi.aggregator.visibility"]
    assert changes == [f"practice {PSEUDO} visibility pseudonymised -> named from submission {back.submission_id}"]  # fmt: skip
    assert PSEUDO in [p["id"] for p in _funnel(server, admin)["practices"]]
    listed = server.get("/v1/practices", admin).json()
    assert [p["practice"] for p in listed if p["identified"]] == [NAMED, PSEUDO]
    with server.network.database.read() as s:
        from aggregator.db.models import Practice

        row = s.get(Practice, PSEUDO)
        assert (
            row is not None
            and row.visibility == "named"
            and row.visibility_since == back.submission_id
        )
