"""The IG pack (``fedqi-aggregator ig-pack``, ``catalogue publish --ig-pack``, the dashboard's
``/dashboard/ig-pack``) and the access-audit page, on SQLite and PostgreSQL, over a real server on
loopback where the dashboard is involved."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
from pathlib import Path

import pytest
from agg_helpers import default_catalogue

from aggregator.igpack import DOCUMENTS
from aggregator.igpack.build import FIELD_MEANINGS, data_items, submission_fields
from protocol.catalogue import Codelist

NAMES = [n for n, _ in DOCUMENTS]


def _published(network) -> dict[str, object]:  # type: ignore[no-untyped-def]
    cat = default_catalogue()
    return {"id": cat.id, "version": cat.version, "sha256": cat.sha256()}


def test_ig_pack_writes_every_document_naming_the_catalogue(network, tmp_path: Path, capsys):
    out = tmp_path / "pack"
    capsys.readouterr()
    assert network.cli("ig-pack", "--out", str(out), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    ref = _published(network)
    assert {k: report["catalogue"][k] for k in ref} == ref
    assert report["previous"] is None and report["changes"] == []
    for name in NAMES:
        for ext in ("html", "md"):
            text = (out / f"{name}.{ext}").read_text()
            assert ref["sha256"] in text and f"{ref['id']}" in text, f"{name}.{ext}"
            assert (
                f"version **{ref['version']}**" in text
                or f"version <strong>{ref['version']}</strong>" in text
            )
        html = (out / f"{name}.html").read_text()
        # the dashboard's CSP: no script, no inline style
        assert "<script" not in html and "style=" not in html and "<style" not in html
    assert (out / "data-flow.svg").read_text().startswith("<svg")
    flow = (out / "data-flow.html").read_text()
    for box in ("Practice system", "Agent", "Outbox", "Aggregator", "Transparency log", "Roles"):
        assert box in flow
    # every field a submission can hold is in the data items, with its meaning
    items = (out / "data-items.md").read_text()
    for path, _ in submission_fields():
        assert f"| `{path}` |" in items, path
    assert "1 to 7 suppressed" in items and "rounded to the nearest 5" in items
    # totals are not claimed to be always released (the small-population rule, secondary
    # suppression and the agent's guard withhold some)
    for doc in ("data-items.md", "dpia.md", "dpia.html"):
        text = (out / doc).read_text()
        assert "not every total is released" in text and "small-population rule" in text, doc
        assert "Whole-practice totals: released exactly (0 stays a true zero)." not in text
    # the examples of the network's and the catalogue's own fields are this network's values
    aud_row = next(line for line in items.splitlines() if line.startswith("| `aud` |"))
    assert "fedqi-test" in aud_row, aud_row
    version_row = next(ln for ln in items.splitlines() if ln.startswith("| `catalogue.version` |"))
    assert f"| {ref['version']} |" in version_row or f"`{ref['version']}`" in version_row, (
        version_row
    )
    first = f"Version {ref['version']} is the first version of catalogue {ref['id']} this network"
    assert first in (out / "dpia.md").read_text() and first in (out / "dpia.html").read_text()
    # every indicator of the catalogue is listed
    for ind in default_catalogue().indicators:
        assert f"`{ind.id}`" in items
    # the governance fields the network has not filled in
    dpia = (out / "dpia.md").read_text()
    assert dpia.count("to be completed") >= 4
    for doc in ("dpia.md", "dpia.html"):  # the disclosure guard and its holds are described
        text = (out / doc).read_text()
        assert "disclosure guard" in text and "fedqi-agent pending" in text, doc
        # totals only: what the admin can still read, as docs/governance.md says
        assert "no per-practice value shown to anyone but the practice itself" not in text, doc
        clause = text.split("totals only", 1)[1].split(")", 1)[0]
        assert "its raw signed envelopes" in clause and "network administrator" in clause, doc
        assert "every read recorded in the access audit" in clause, doc
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["catalogue"]["sha256"] == ref["sha256"]


def test_governance_settings_fill_the_dpia(network, tmp_path: Path):
    config = tmp_path / "agg.toml"
    config.write_text(
        'ig_controller = "NW London ICB and each member practice (joint)"\n'
        'ig_lawful_basis = "Art. 6(1)(e); Art. 9(2)(h)"\n'
    )
    out = tmp_path / "pack"
    assert network.cli("ig-pack", "--out", str(out), "--config", str(config)) == 0
    dpia = (out / "dpia.html").read_text()
    assert "NW London ICB and each member practice (joint)" in dpia
    assert "Art. 6(1)(e); Art. 9(2)(h)" in dpia
    assert dpia.count('class="tbc"') == 2  # DPO contact and retention still to be completed


def test_a_new_catalogue_version_regenerates_the_pack_with_its_changes(
    network, tmp_path: Path, capsys
):
    cat = default_catalogue()
    removed = cat.indicators[-1]
    changed_list = cat.codelists[0]
    codelists = [
        Codelist.of(c.id, c.title, c.codes[:-1], c.source) if c.id == changed_list.id else c
        for c in cat.codelists
    ]
    data = cat.model_copy(
        update={
            "version": cat.version + 1,
            "indicators": cat.indicators[:-1],
            "codelists": tuple(codelists),
        }
    ).model_dump(mode="json")
    new = tmp_path / "v3.json"
    new.write_text(json.dumps(data))
    out = tmp_path / "pack"
    capsys.readouterr()
    assert network.cli("catalogue", "publish", str(new), "--ig-pack", str(out),
                       "--key-dir", str(network.settings.key_dir), "--json") == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["version"] == cat.version + 1 and report["ig_pack"]["changes"] >= 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["previous"]["version"] == cat.version
    assert manifest["catalogue"]["sha256"] == report["sha256"] != cat.sha256()
    changes = {(c["kind"], c["id"], c["change"]) for c in manifest["changes"]}
    assert ("indicator", removed.id, "removed") in changes
    assert ("codelist", changed_list.id, "changed") in changes
    detail = next(c["detail"] for c in manifest["changes"] if c["id"] == changed_list.id)
    assert detail == "0 codes added, 1 removed"
    index = (out / "index.html").read_text()
    assert removed.id in index and f"Compared with version {cat.version}" in index
    assert report["sha256"] in index


def test_ig_pack_error_paths(network, tmp_path: Path, capsys):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    capsys.readouterr()
    assert network.cli("ig-pack", "--out", str(a_file)) == 1
    assert "exists and is not a directory" in capsys.readouterr().err
    assert a_file.read_text() == "x"
    # a parent that is a file: one line naming it, no traceback
    assert network.cli("ig-pack", "--out", str(a_file / "sub" / "pack")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and "not-a-dir" in err and "Traceback" not in err, err
    # an empty --out is refused, where it wrote the pack into the current directory
    assert network.cli("ig-pack", "--out", "") == 2
    err = capsys.readouterr().err
    assert "Invalid value for '--out': empty: name the directory to write into" in err, err
    # a parent that exists but takes no files (/proc): one line, no traceback (a new-user run)
    assert network.cli("ig-pack", "--out", "/proc/pack") == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("error: --out /proc/pack: cannot write in /proc") and err.count("\n") == 1
    ), err
    # a pack's file name taken by a directory in --out: the same, and the directory is kept
    taken = tmp_path / "taken"
    (taken / "manifest.json").mkdir(parents=True)
    assert network.cli("ig-pack", "--out", str(taken)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {taken}: cannot write") and "Traceback" not in err, err
    assert (taken / "manifest.json").is_dir() and [p.name for p in taken.iterdir()] == [
        "manifest.json"
    ]
    assert network.cli("ig-pack", "--out", str(tmp_path / "p"), "--catalogue-id", "nope") == 2
    assert "catalogue 'nope': nothing published" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()  # nothing half-written
    assert network.cli("ig-pack") == 2  # --out is required
    assert "--out" in capsys.readouterr().err


def test_ig_pack_on_an_unmigrated_database(tmp_path: Path, capsys):
    from aggregator.cli import main as cli

    capsys.readouterr()
    (tmp_path / "x.db").touch()
    assert cli(["ig-pack", "--out", str(tmp_path / "p"), "--db", f"sqlite:///{tmp_path}/x.db"]) == 1
    assert "not migrated" in capsys.readouterr().err


def test_a_field_without_a_meaning_stops_the_pack(monkeypatch: pytest.MonkeyPatch):
    from aggregator.errors import ConfigError

    monkeypatch.delitem(FIELD_MEANINGS, "cells[].numerator.value")
    with pytest.raises(ConfigError, match=r"cells\[\]\.numerator\.value"):
        data_items(default_catalogue())


# --- the dashboard -----------------------------------------------------------------------------------


def _signed_in(server, token: str):  # type: ignore[no-untyped-def]
    import httpx

    client = httpx.Client(base_url=server.url, timeout=60)
    r = client.post("/dashboard/login", data={"token": token, "next": "/dashboard"})
    assert r.status_code == 303, r.text
    client.cookies = r.cookies or client.cookies
    return contextlib.closing(client)


@pytest.mark.parametrize("role", ["ig_officer", "network_lead", "practice", "admin"])
def test_dashboard_serves_the_pack_to_every_role(server, role):
    net = server.network
    net.add_practice("A81001")
    token = net.user(role, **({"group": "PCN1"} if role == "network_lead" else {"practice": "A81001"} if role in ("practice", "ig_officer") else {}))  # fmt: skip
    ref = _published(net)
    with _signed_in(server, token) as client:
        r = client.get("/dashboard/ig-pack", follow_redirects=True)
        assert r.status_code == 200 and str(r.url).endswith("/dashboard/ig-pack/index.html")
        assert ref["sha256"] in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
        for name in NAMES:
            page = client.get(f"/dashboard/ig-pack/{name}.html")
            assert page.status_code == 200 and ref["sha256"] in page.text, name
            md = client.get(f"/dashboard/ig-pack/{name}.md")
            assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
        assert (
            client.get("/dashboard/ig-pack/ig-pack.css")
            .headers["content-type"]
            .startswith("text/css")
        )
        assert client.get("/dashboard/ig-pack/data-flow.svg").text.startswith("<svg")
        missing = client.get("/dashboard/ig-pack/secrets.html")
        assert missing.status_code == 404 and "has no &#39;secrets.html&#39;" in missing.text
        nav = client.get("/dashboard/ig" if role != "network_lead" else "/dashboard/overview").text
        assert ('href="/dashboard/ig-pack"' in nav) == (role != "practice")
    # signed out: sent to sign in
    r = server.client.get("/dashboard/ig-pack/index.html")
    assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")


def test_access_audit_page_filters_and_csv(server, agent_factory):
    net = server.network
    agent = agent_factory("A81001")
    peer = agent_factory("B82002")
    body = agent.submission()
    assert server.post("/v1/submissions", body).status_code == 201
    assert server.post("/v1/submissions", peer.submission()).status_code == 201
    sha = hashlib.sha256(body).hexdigest()
    ig = net.user("ig_officer", practice="A81001")
    other_ig = net.user("ig_officer", practice="B82002")
    admin = net.user("admin")
    assert server.get(f"/v1/envelopes/{sha}", ig).status_code == 200  # granted
    assert server.get(f"/v1/envelopes/{sha}", other_ig).status_code == 403  # refused
    with _signed_in(server, ig) as client:
        page = client.get("/dashboard/access-audit")
        assert page.status_code == 200
        assert (
            page.text.count("<tr><td>") == 2 and "granted" in page.text and "refused" in page.text
        )
        assert "ig_officer-A81001" in page.text and "ig_officer-B82002" in page.text
        refused = client.get("/dashboard/access-audit?granted=no")
        assert refused.text.count("<tr><td>") == 1 and "ig_officer-B82002" in refused.text
        who = client.get("/dashboard/access-audit?who=ig_officer-A81001")
        assert who.text.count("<tr><td>") == 1
        future = client.get("/dashboard/access-audit?start=2999-01-01")
        assert "No reads match." in future.text
        bad = client.get("/dashboard/access-audit?start=yesterday")
        assert bad.status_code == 400 and "from &#39;yesterday&#39; is not a date" in bad.text
        backwards = client.get("/dashboard/access-audit?start=2026-12-31&end=2026-01-01")
        assert (
            backwards.status_code == 400
            and "from 2026-12-31 is after to 2026-01-01" in backwards.text
        )
        assert (
            client.get("/dashboard/access-audit?start=2026-01-01&end=2026-01-01").status_code == 200
        )
        maybe = client.get("/dashboard/access-audit?granted=maybe")
        assert maybe.status_code == 400 and "yes, no, or empty for both" in maybe.text
        rows = list(
            csv.DictReader(io.StringIO(client.get("/dashboard/access-audit.csv?granted=yes").text))
        )
        assert [(r["user"], r["envelope_sha256"], r["granted"]) for r in rows] == [
            ("ig_officer-A81001", sha, "yes")
        ]
        # times in UTC with their offset, in the CSV, on the page and from the API (SQLite
        # gave them back without a zone: '2026-12-07T20:09:17')
        at = dt.datetime.fromisoformat(rows[0]["at"])
        assert rows[0]["at"].endswith("+00:00") and at.utcoffset() == dt.timedelta(0)
        assert abs(dt.datetime.now(dt.UTC) - at) < dt.timedelta(minutes=10)
        assert f"<tr><td>{rows[0]['at']}</td>" in client.get("/dashboard/access-audit").text
        api = server.get("/v1/audit/access", ig).json()
        assert api and all(r["at"].endswith("+00:00") for r in api), api
        empty = client.get("/dashboard/access-audit.csv?role=practice").text
        assert empty == "at,user_id,user,role,practice,envelope_sha256,granted\n"
    # B82002's IG officer sees no read of B82002's envelopes (there was none): not A81001's
    with _signed_in(server, other_ig) as client:
        assert "No reads match." in client.get("/dashboard/access-audit").text
        assert client.get("/dashboard/access-audit.csv").text.count("\n") == 1
    with _signed_in(server, admin) as client:
        page = client.get("/dashboard/access-audit?practice=A81001")
        assert page.text.count("<tr><td>") == 2
    # a network lead gets the page, and no rows
    lead = net.user("network_lead", group="PCN1")
    with _signed_in(server, lead) as client:
        page = client.get("/dashboard/access-audit")
        assert (
            page.status_code == 200
            and "reviewed by IG officers" in page.text
            and "reads of a practice's envelopes are reviewed by its IG officer" in page.text
            and sha[:16] not in page.text
        )
        assert client.get("/dashboard/access-audit.csv").text.count("\n") == 1
    # a practice user's own reads are recorded (its IG officer sees them): the page says so,
    # not that it has 'no raw-envelope reads to review' (a new-user run)
    practice = net.user("practice", practice="A81001")
    server.get(f"/v1/envelopes/{sha}", practice)
    with _signed_in(server, practice) as client:
        page = client.get("/dashboard/access-audit").text
        assert "no raw-envelope reads" not in page and sha[:16] not in page
        assert (
            "your own included: reads of A81001's envelopes are reviewed by its IG officer" in page
        )
    with _signed_in(server, ig) as client:
        assert "practice-A81001" in client.get("/dashboard/access-audit").text


def test_the_packs_totals_rule_says_what_the_policy_withholds() -> None:
    """The pack's totals rule is the one the policy applies: under the network's policy a
    whole-practice total is not always released (the small-population rule and secondary
    suppression withhold some, and so may the agent's guard), and the pack says so, with the
    policy's own threshold; without secondary suppression only the guard's clause remains."""
    from aggregator.igpack.build import _disclosure
    from protocol.disclosure import RawCell, apply_policy, suppression_threshold

    cat = default_catalogue()
    policy = cat.disclosure
    assert policy.secondary_suppression and policy.totals.suppress_at_or_below == 0
    small = suppression_threshold(policy.stratified)
    # what the policy does: a total of `small` patients, all in one stratum, is withheld
    raw = [RawCell("IND", "all", "all", small, 1, 0), RawCell("IND", "all", "F", small, 1, 0)]
    raw += [RawCell("IND", "all", s, 0, 0, 0) for s in ("M", "U")]
    total = next(c for c in apply_policy(raw, policy) if c.stratum.sex == "all")
    assert total.denominator.status == "suppressed" and total.numerator.status == "suppressed"
    text = _disclosure(cat)["totals"]
    assert "not every total is released" in text, text
    assert f"whole-practice denominator is 1 to {small} has its denominator and numerator totals withheld" in text  # fmt: skip
    # ... zeros included: a population of `small` none of whom meets the indicator is not told
    raw = [RawCell("IND", "all", "all", small, 0, 0), RawCell("IND", "all", "F", small, 0, 0)]
    raw += [RawCell("IND", "all", s, 0, 0, 0) for s in ("M", "U")]
    released = {c.stratum.sex: c for c in apply_policy(raw, policy)}
    assert released["all"].numerator.status == released["F"].numerator.status == "suppressed"
    assert "its numerators withheld zeros included" in text
    assert "a numerator of 0 excepted" in _disclosure(cat)["stratified"]
    assert "secondary suppression withholds a total" in text and "disclosure guard" in text
    assert not text.endswith("released exactly (0 stays a true zero)")
    off = cat.model_copy(
        update={"disclosure": policy.model_copy(update={"secondary_suppression": False})}
    )
    text_off = _disclosure(off)["totals"]
    assert "small-population" not in text_off and "secondary suppression" not in text_off
    assert "disclosure guard" in text_off
