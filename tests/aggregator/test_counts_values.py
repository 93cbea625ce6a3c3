"""Counts values (aggregator/db/counts.py): the ingest stores each submission's whole-practice
counts as one value and seals it (aggregator/log/verdict.py, ``seal_counts``); the benchmark
refresh reads a period's values, one per practice, and trusts a value only where its seal holds.

Real server, real submissions and signatures; the refresh runs in a session of a runtime loaded
from the network's settings (so with the verdict key)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from aggregator.benchmarks import service
from aggregator.benchmarks.models import BenchSummary
from aggregator.db import counts as counts_value
from aggregator.db import models
from aggregator.log import checks, verdict
from aggregator.runtime import Runtime
from protocol.keys import SigningKey
from protocol.submission import Period


@pytest.fixture
def sealed(server, agent_factory):  # type: ignore[no-untyped-def]
    for ods in ("A81001", "A81002"):
        agent = agent_factory(ods, group="PCN1")
        for m in (4, 5):
            r = server.post("/v1/submissions", agent.submission(period=Period.month(2026, m)))
            assert r.status_code == 201, r.text
    rt = Runtime.load(server.network.settings)
    yield server, rt
    rt.db.dispose()


def _subs(db):  # type: ignore[no-untyped-def]
    with db.read() as s:
        return s.execute(
            select(models.Submission.submission_id, models.Submission.practice_ods,
                   models.Submission.kid, models.Submission.envelope_sha256,
                   models.Submission.period_start, models.Submission.period_end,
                   models.Submission.counts, models.Submission.counts_verdict)
        ).all()  # fmt: skip


def _binding(r):  # type: ignore[no-untyped-def]
    return (r.submission_id, r.practice_ods, r.kid, r.envelope_sha256,
            r.period_start.isoformat(), r.period_end.isoformat())  # fmt: skip


def _totals(db, submission_id):  # type: ignore[no-untyped-def]
    c = models.Cell
    with db.read() as s:
        return {
            r[0]: tuple(r)
            for r in s.execute(
                select(c.indicator, c.denominator, c.denominator_status, c.numerator,
                       c.numerator_status, c.exclusions, c.exclusions_status)
                .where(c.submission_id == submission_id)
            )
        }  # fmt: skip


def _bench(db):  # type: ignore[no-untyped-def]
    with db.read() as s:
        return {
            (r.practice_ods, r.indicator, r.period_start): (r.status, r.numerator, r.rate)
            for g in s.scalars(select(BenchSummary))
            for r in service.practice_rows(s, g.indicator, g.period_start, g.period_end)
        }


def _practice_view(db, ods):  # type: ignore[no-untyped-def]
    with db.read() as s:
        return {(r.indicator, r.period_start): (r.status, r.numerator, r.rate)
                for r in service.practice_history(s, ods)}  # fmt: skip


def _count_cell_reads(monkeypatch):  # type: ignore[no-untyped-def]
    reads: list[int] = []
    real = service._unsealed_cells

    def counting(session, start, end, subs):  # type: ignore[no-untyped-def]
        reads.append(len(subs))
        return real(session, start, end, subs)

    monkeypatch.setattr(service, "_unsealed_cells", counting)
    return reads


def test_every_submission_carries_its_totals_sealed_under_the_log_key_only(sealed) -> None:  # type: ignore[no-untyped-def]
    server, rt = sealed
    subs = _subs(rt.db)
    assert len(subs) == 4
    key, other = rt.signer.verdict_key, verdict.derive_key(SigningKey.generate())
    for r in subs:
        assert counts_value.decode(r.counts) == _totals(rt.db, r.submission_id)
        assert verdict.Sealer(key, _binding(r)).holds_counts(r.counts_verdict, r.counts)
        assert not verdict.Sealer(other, _binding(r)).holds_counts(r.counts_verdict, r.counts)
        moved = (r.submission_id, "B99999", *_binding(r)[2:])
        assert not verdict.Sealer(key, moved).holds_counts(r.counts_verdict, r.counts)


def test_a_refresh_of_sealed_submissions_reads_no_cells_and_no_envelope(
    sealed, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    server, rt = sealed
    reads = _count_cell_reads(monkeypatch)
    envelopes: list[str] = []
    real = checks.signed_cells
    monkeypatch.setattr(checks, "signed_cells", lambda *a: envelopes.append(a[0]) or real(*a))
    with rt.db.session() as s:
        assert service.rebuild_all(s) >= 2
    assert reads == [] and envelopes == []
    shown = _bench(rt.db)
    assert shown and all(status != service.UNVERIFIED for status, _, _ in shown.values())


def _edit_counts(server, submission_id, change):  # type: ignore[no-untyped-def]
    with server.network.database.session() as s:
        sub = s.get(models.Submission, submission_id)
        totals = counts_value.decode(sub.counts)
        s.execute(
            update(models.Submission)
            .where(models.Submission.submission_id == submission_id)
            .values(counts=counts_value.encode(change(totals).values()))
        )


def test_an_edited_counts_value_is_never_shown(sealed) -> None:  # type: ignore[no-untyped-def]
    """Someone with the database raises one numerator in a submission's counts value (its seal
    left as it was). The seal fails, so the refresh reads that submission's cells: their
    verdicts hold, so it shows the signed values and writes the value again as signed. Edit the
    cells row too, and both fail: the refresh and the practice's own view show that value as
    unverified, with no counts and no rate, and the other practice's as they were."""
    server, rt = sealed
    with rt.db.session() as s:
        service.rebuild_all(s)
    before = _bench(rt.db)
    a = next(r for r in _subs(rt.db) if r.practice_ods == "A81001")
    ind = next(i for i, t in counts_value.decode(a.counts).items() if t[3] is not None)

    def raise_one(totals):  # type: ignore[no-untyped-def]
        t = totals[ind]
        return {**totals, ind: (t[0], t[1], t[2], t[3] + 1, t[4], t[5], t[6])}

    _edit_counts(server, a.submission_id, raise_one)
    with rt.db.session() as s:
        service.rebuild_all(s)
    assert _bench(rt.db) == before
    [repaired] = [r for r in _subs(rt.db) if r.submission_id == a.submission_id]
    assert (repaired.counts, repaired.counts_verdict) == (a.counts, a.counts_verdict)

    _edit_counts(server, a.submission_id, raise_one)
    with server.network.database.session() as s:
        s.execute(
            update(models.Cell)
            .where(models.Cell.submission_id == a.submission_id, models.Cell.indicator == ind)
            .values(numerator=models.Cell.numerator + 1)
        )
    with rt.db.session() as s:
        service.rebuild_all(s)
    after = _bench(rt.db)
    key = ("A81001", ind, a.period_start)
    assert after[key] == (service.UNVERIFIED, None, None)
    assert _practice_view(rt.db, "A81001")[(ind, a.period_start)] == (
        service.UNVERIFIED,
        None,
        None,
    )
    others = {k: v for k, v in before.items() if k[0] == "A81002"}
    assert others and all(after[k] == v for k, v in others.items())


def test_a_counts_value_and_seal_copied_from_another_submission_do_not_hold(sealed) -> None:  # type: ignore[no-untyped-def]
    server, rt = sealed
    subs = _subs(rt.db)
    a = next(r for r in subs if r.practice_ods == "A81001" and r.period_start.month == 4)
    b = next(r for r in subs if r.practice_ods == "A81002" and r.period_start.month == 4)
    key = rt.signer.verdict_key
    assert not verdict.Sealer(key, _binding(a)).holds_counts(b.counts_verdict, b.counts)
    with server.network.database.session() as s:
        s.execute(
            update(models.Submission)
            .where(models.Submission.submission_id == a.submission_id)
            .values(counts=b.counts, counts_verdict=b.counts_verdict)
        )
    with rt.db.session() as s:
        service.rebuild_all(s)
    shown = _bench(rt.db)
    mine = {k: v for k, v in shown.items() if k[0] == "A81001" and k[2] == a.period_start}
    # its cells hold, so the refresh shows the signed values from them, never B's
    assert mine
    for (_, ind, _), (status, numerator, _) in mine.items():
        assert status != service.UNVERIFIED
        assert numerator == _totals(rt.db, a.submission_id)[ind][3]
    [repaired] = [r for r in _subs(rt.db) if r.submission_id == a.submission_id]
    assert (repaired.counts, repaired.counts_verdict) == (a.counts, a.counts_verdict)


def test_submissions_stored_without_a_counts_value_are_sealed_once(sealed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """As on a network upgraded to revision 0010: the first refresh reads their cells (whose
    verdicts hold), shows the same values, and writes and seals each counts value; the next
    refresh reads no cells."""
    server, rt = sealed
    with rt.db.session() as s:
        service.rebuild_all(s)
    expected = _bench(rt.db)
    stored = {r.submission_id: (r.counts, r.counts_verdict) for r in _subs(rt.db)}
    with server.network.database.session() as s:
        s.execute(update(models.Submission).values(counts=None, counts_verdict=None))
    reads = _count_cell_reads(monkeypatch)
    with rt.db.session() as s:
        service.rebuild_all(s)
    assert sum(reads) == 4  # both months' two submissions
    assert _bench(rt.db) == expected
    assert {r.submission_id: (r.counts, r.counts_verdict) for r in _subs(rt.db)} == stored
    reads.clear()
    with rt.db.session() as s:
        service.rebuild_all(s)
    assert reads == []
