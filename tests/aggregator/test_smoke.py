from __future__ import annotations


def test_submission_is_accepted(server, agent_factory):
    agent = agent_factory("A81001")
    r = server.post("/v1/submissions", agent.submission())
    assert r.status_code == 201, r.text
