"""API tokens may expire: `user add --expires`; an expired token is refused (API and
dashboard) as not valid, naming the expiry."""

from __future__ import annotations

import json

import pytest


def _add(server, capsys, *extra: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    code = server.network.cli("user", "add", "lead", "--role", "admin", "--json", *extra)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_token_works_until_it_expires_then_is_refused(server, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out = _add(server, capsys, "--expires", "2d")
    assert code == 0, out
    created = json.loads(out)
    assert created["expires_at"] is not None
    token = created["token"]
    assert server.get("/v1/practices", token).status_code == 200
    signin = server.client.post("/dashboard/login", data={"token": token})
    assert signin.status_code == 303, signin.text  # a dashboard session, ending with the token
    server.network.clock.offset = 3 * 86400  # the server's clock moves past the expiry
    r = server.get("/v1/practices", token)
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "expired" in r.json()["detail"]
    page = server.client.get("/dashboard/overview", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")


def test_a_token_without_expires_has_none(server, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out = _add(server, capsys)
    assert code == 0 and json.loads(out)["expires_at"] is None


@pytest.mark.parametrize("bad", ["soon", "-1d", "2020-01-01"])
def test_a_bad_or_past_expiry_is_refused(server, capsys, bad) -> None:  # type: ignore[no-untyped-def]
    code, out = _add(server, capsys, "--expires", bad)
    assert code == 2, out
    assert "--expires" in out
