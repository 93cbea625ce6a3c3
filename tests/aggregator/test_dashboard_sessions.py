"""Dashboard sign-in makes a server-side session: the cookie holds a random id (never the API
token), only its SHA-256 is stored, sign-out deletes it, and it is refused once expired or once
its user is revoked. On SQLite and PostgreSQL, through a real server on loopback."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from aggregator.db.models import DashboardSession
from aggregator.users.service import add_user

COOKIE = "fedqi_session"


@contextlib.contextmanager
def _sign_in(server, token: str) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    """A fresh browser-like client signed in with ``token``."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        r = client.post("/dashboard/login", data={"token": token, "next": "/dashboard/overview"})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/dashboard/overview"
        yield client


def _signed_in(client: httpx.Client) -> bool:
    r = client.get("/dashboard/overview", follow_redirects=False)
    if r.status_code == 303:
        assert r.headers["location"].startswith("/dashboard/login")
        return False
    # signed in: a page for this user (a 404 "nothing stored yet" page is still signed in)
    assert r.status_code in (200, 404), r.text
    assert "Sign out" in r.text or "logout" in r.text
    return True


def _sessions(server) -> int:  # type: ignore[no-untyped-def]
    with server.network.database.read() as s:
        return int(s.scalar(select(func.count()).select_from(DashboardSession)) or 0)


def test_the_cookie_holds_a_session_id_not_the_token(server) -> None:  # type: ignore[no-untyped-def]
    token = server.network.user("admin")
    with _sign_in(server, token) as client:
        sid = client.cookies[COOKIE]
        assert sid != token and token not in sid
        assert len(sid) >= 43  # token_urlsafe(32)
        header = next(
            h
            for h in client.post("/dashboard/login", data={"token": token}).headers.get_list(
                "set-cookie"
            )
            if h.startswith(COOKIE + "=")
        )
        attrs = {a.strip().split("=")[0].lower() for a in header.split(";")}
        assert {"httponly", "path", "samesite"} <= attrs
        assert "path=/dashboard" in header.lower() and "samesite=strict" in header.lower()
        assert "secure" not in attrs  # plain http on loopback; https sets Secure
        with server.network.database.read() as s:
            stored = s.scalars(select(DashboardSession.id_sha256)).all()
        assert hashlib.sha256(sid.encode()).hexdigest() in stored
        assert sid not in stored  # only the hash is kept
        assert _signed_in(client)
        # the session id is no API token
        assert server.get("/v1/me", sid).status_code == 401
        # and the raw token in the cookie no longer signs anyone in
        raw = httpx.Client(base_url=server.url, cookies={COOKIE: token})
        with raw:
            assert not _signed_in(raw)


def test_sign_out_ends_the_session_for_the_old_cookie_too(server) -> None:  # type: ignore[no-untyped-def]
    token = server.network.user("admin")
    with _sign_in(server, token) as client:
        sid = client.cookies[COOKIE]
        assert _signed_in(client) and _sessions(server) == 1
        # the sign-in page says who is signed in (a new-user run found it silent)
        page = client.get("/dashboard/login").text
        assert 'id="signed-in"' in page and "You are signed in as" in page and "(admin)" in page
        assert 'action="/dashboard/logout"' in page  # and can sign out from there
        # a stale "signed out" link does not say so to someone signed in
        assert "You have signed out." not in client.get("/dashboard/login?done=signed-out").text
        r = client.post("/dashboard/logout")
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login?done=signed-out"
        assert _sessions(server) == 0
        # ... and, after signing out, that it is done (and no longer who was signed in)
        page = client.get(r.headers["location"]).text
        assert "You have signed out." in page and 'id="signed-in"' not in page
    # someone who kept a copy of the cookie is sent to sign in
    with httpx.Client(base_url=server.url, cookies={COOKIE: sid}) as replay:
        assert not _signed_in(replay)
        r = replay.get("/dashboard/overview.csv", follow_redirects=False)
        assert r.status_code in (303, 401), r.status_code


def test_an_expired_session_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    token = server.network.user("admin")
    hours = server.network.settings.session_hours
    with _sign_in(server, token) as client:
        server.network.clock.offset = hours * 3600 - 60
        assert _signed_in(client)
        server.network.clock.offset = hours * 3600 + 1
        assert not _signed_in(client)
        # the API token itself does not expire: signing in again works
        with _sign_in(server, token) as again:
            assert _signed_in(again)


def test_a_session_never_outlives_the_token(server) -> None:  # type: ignore[no-untyped-def]
    rt = server.network.runtime()
    with rt.db.session() as s:
        _, token = add_user(
            s,
            "brief",
            "admin",
            practice=None,
            group=None,
            now=rt.now(),
            expires_at=rt.now() + dt.timedelta(hours=1),
        )
    with _sign_in(server, token) as client:
        with server.network.database.read() as s:
            row = s.scalars(select(DashboardSession)).one()
            expires = row.expires_at.replace(tzinfo=row.expires_at.tzinfo or dt.UTC)
            created = row.created_at.replace(tzinfo=row.created_at.tzinfo or dt.UTC)
        assert expires - created <= dt.timedelta(hours=1, seconds=1)
        server.network.clock.offset = 2 * 3600  # token expired, session_hours (12) not yet
        assert not _signed_in(client)


def test_revoking_a_user_ends_their_sessions_at_once(server, capsys) -> None:  # type: ignore[no-untyped-def]
    net = server.network
    net.add_practice("A81001")
    token = net.user("ig_officer", practice="A81001")
    other = net.user("admin")
    with _sign_in(server, token) as client, _sign_in(server, other) as bystander:
        assert _signed_in(client) and _sessions(server) == 2
        capsys.readouterr()
        assert net.cli("user", "list", "--json") == 0
        uid = next(
            u["id"] for u in json.loads(capsys.readouterr().out) if u["role"] == "ig_officer"
        )
        assert net.cli("user", "revoke", str(uid)) == 0
        assert not _signed_in(client)
        assert _sessions(server) == 1  # theirs deleted, the other user's kept
        assert _signed_in(bystander)


@pytest.mark.parametrize("cookie", ["", "x", "fqa_" + "A" * 43, "%00" * 10])
def test_junk_cookies_are_sent_to_sign_in(server, cookie: str) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.url, cookies={COOKIE: cookie}) as client:
        assert not _signed_in(client)


def test_the_sign_in_page_shows_only_its_own_messages(server) -> None:  # type: ignore[no-untyped-def]
    """?error= selects one of the page's fixed messages: text written into a link (a phishing
    line) is never shown, and an unknown code shows no message at all."""
    bait = "Your token expired: send it to helpdesk@evil.example"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        r = client.get("/dashboard/login", params={"error": bait})
        assert r.status_code == 200
        assert "helpdesk@evil.example" not in r.text and 'role="alert"' not in r.text
        r = client.get("/dashboard/login", params={"error": "expired"})
        assert 'role="alert"' in r.text and "Your session has ended" in r.text
        r = client.post("/dashboard/login", data={"token": "fqa_nope"})
        assert r.status_code == 401 and "That token is not valid." in r.text


def test_an_ended_session_is_sent_to_sign_in_saying_so(server) -> None:  # type: ignore[no-untyped-def]
    token = server.network.user("admin")
    with _sign_in(server, token) as client:
        server.network.clock.offset = server.network.settings.session_hours * 3600 + 1
        r = client.get("/dashboard/overview", follow_redirects=False)
        assert r.status_code == 303
        assert (
            r.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Foverview&error=expired"
        )
        page = client.get(r.headers["location"])
        assert "Your session has ended" in page.text
    # no cookie at all: plain sign-in, no message
    with httpx.Client(base_url=server.url, timeout=60) as fresh:
        r = fresh.get("/dashboard/overview", follow_redirects=False)
        assert r.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Foverview"


def test_the_sign_in_page_signed_in_says_only_what_is_true(server) -> None:  # type: ignore[no-untyped-def]
    """A new-user run: /dashboard/login?error=invalid while signed in said both "That token is
    not valid." and "You are signed in as ...". A link's error code says nothing about a
    session that holds: signed in, the page says only as whom."""
    token = server.network.user("admin")
    with _sign_in(server, token) as client:
        for code in ("invalid", "expired"):
            page = client.get("/dashboard/login", params={"error": code}).text
            assert 'id="signed-in"' in page, code
            assert 'role="alert"' not in page and "not valid" not in page, code
            assert "Your session has ended" not in page, code
        # a token refused now, while the session holds: both are true, and both are said
        r = client.post("/dashboard/login", data={"token": "fqa_nope"})
        assert r.status_code == 401 and "That token is not valid." in r.text
        assert 'id="signed-in"' in r.text
