"""``fedqi-aggregator user list`` / ``user revoke`` and ``user add --group`` validation, on
SQLite and PostgreSQL, with a revoked token refused by the real server on loopback."""

from __future__ import annotations

import json

import pytest


def _json(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    return json.loads(capsys.readouterr().out)


def test_list_shows_every_user_without_tokens(network, capsys):
    network.add_practice("A81001", group="PCN1")
    network.add_practice("B82002", group="PCN2")
    capsys.readouterr()
    assert (
        network.cli("user", "add", "ann", "--role", "network_lead", "--group", "PCN2", "--json")
        == 0
    )
    token = _json(capsys)["token"]
    assert network.cli("user", "add", "ian", "--role", "ig_officer", "--practice", "A81001") == 0
    capsys.readouterr()
    assert network.cli("user", "list", "--json") == 0
    rows = _json(capsys)
    assert [(r["name"], r["role"], r["practice"], r["group"], r["revoked"]) for r in rows] == [
        ("ann", "network_lead", None, "PCN2", False),
        ("ian", "ig_officer", "A81001", None, False),
    ]
    assert token not in json.dumps(rows)
    assert network.cli("user", "list") == 0
    table = capsys.readouterr().out
    assert "ann" in table and "PCN2" in table and "active" in table


def test_add_rejects_a_group_no_practice_is_in(network, capsys):
    capsys.readouterr()
    assert network.cli("user", "add", "ann", "--role", "network_lead", "--group", "PCN1") == 2
    assert "add a practice first" in capsys.readouterr().err
    network.add_practice("A81001", group="PCN1")
    capsys.readouterr()
    assert network.cli("user", "add", "ann", "--role", "network_lead", "--group", "PCN9") == 2
    err = capsys.readouterr().err
    assert "--group 'PCN9'" in err and "known: PCN1" in err
    assert network.cli("user", "list", "--json") == 0
    assert _json(capsys) == []  # nothing half-written


def test_revoke_stops_the_token_at_once(server, capsys):
    net = server.network
    net.add_practice("A81001")
    token = net.user("ig_officer", practice="A81001")
    assert server.get("/v1/me", token).status_code == 200
    capsys.readouterr()
    assert net.cli("user", "list", "--json") == 0
    (row,) = _json(capsys)
    assert net.cli("user", "revoke", str(row["id"]), "--json") == 0
    assert _json(capsys) == {
        "id": row["id"],
        "name": row["name"],
        "role": "ig_officer",
        "revoked": True,
    }
    r = server.get("/v1/me", token)
    assert r.status_code == 401 and r.json()["type"].endswith("bad-token")
    # said as revoked (the server knows the token; a new-user run read "not valid"), while an
    # unknown token is only "not valid"
    assert "the API token was revoked" in r.json()["detail"], r.json()
    unknown = server.get("/v1/me", "fqa_" + "x" * 40)
    assert unknown.status_code == 401 and "the API token is not valid" in unknown.json()["detail"]
    assert "revoked" not in unknown.text
    # the dashboard sign-in refuses it too, saying so
    login = server.client.post("/dashboard/login", data={"token": token, "next": "/dashboard"})
    assert login.status_code == 401 and "That token was revoked" in login.text
    assert net.cli("user", "list", "--json") == 0
    assert _json(capsys)[0]["revoked"] is True


def test_revoke_error_paths(network, capsys):
    network.add_practice("A81001")
    network.user("practice", practice="A81001")
    capsys.readouterr()
    assert network.cli("user", "revoke", "999999") == 2
    assert "user 999999: no such user" in capsys.readouterr().err
    assert network.cli("user", "list", "--json") == 0
    uid = str(_json(capsys)[0]["id"])  # PostgreSQL's sequence is not reset between tests
    assert network.cli("user", "revoke", uid) == 0
    capsys.readouterr()
    assert network.cli("user", "revoke", uid) == 2
    assert "already revoked" in capsys.readouterr().err
    # not an id: typer's usage error, non-zero, naming the argument
    assert network.cli("user", "revoke", "ann") == 2
    assert network.cli("user", "revoke", "0") == 2


def test_list_shows_each_token_expiry(network, capsys):
    network.add_practice("A81001", group="PCN1")
    assert network.cli("user", "add", "eve", "--role", "practice", "--practice", "A81001",
                       "--expires", "2031-01-31") == 0  # fmt: skip
    assert network.cli("user", "add", "tom", "--role", "practice", "--practice", "A81001") == 0
    capsys.readouterr()
    assert network.cli("user", "list", "--json") == 0
    rows = {r["name"]: r for r in _json(capsys)}
    assert rows["eve"]["expires_at"].startswith("2031-01-31")
    assert rows["tom"]["expires_at"] is None
    assert network.cli("user", "list") == 0
    table = capsys.readouterr().out
    assert "2031-01-31" in table and "never" in table
