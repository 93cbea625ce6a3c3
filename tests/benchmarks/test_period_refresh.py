"""A refresh stores each group's summary and its practices' counts, no row per practice; each
practice's figures are computed when read (aggregator/benchmarks/entries_store.py). These tests
hold the computed figures to the pure statistics (``stats.funnel`` over the same counts), field
for field, and the two ways in (a group, one practice) to each other."""

from __future__ import annotations

import random

import numpy as np
import pytest
from bench_store import Store, month
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.benchmarks import entries_store, service, stats
from aggregator.db import counts as counts_value

JAN, FEB = month(2026, 1), month(2026, 2)
INDICATORS = ("DM020", "HYP008", "AF006")

record = st.tuples(
    st.one_of(st.just(-1), st.integers(0, 400)),  # numerator (-1: withheld)
    st.one_of(st.just(-1), st.integers(0, 400)),  # denominator
    st.sampled_from(range(4)),  # numerator status code
    st.sampled_from(range(4)),  # denominator status code
    st.booleans(),  # flagged (unverified or suspect)
)


@settings(max_examples=200, deadline=None)
@given(st.lists(record, max_size=60))
def test_the_summary_over_arrays_is_the_summary_of_the_pure_statistics(rows) -> None:  # type: ignore[no-untyped-def]
    recs = np.zeros(len(rows), dtype=counts_value.RECORD)
    hidden = np.zeros(len(rows), dtype=bool)
    cells = []
    for i, (num, den, ns, ds, flag) in enumerate(rows):
        recs[i] = (num, den, 0, ns, ds, 0, 0)
        hidden[i] = flag
        if flag:
            cells.append(stats.Counts(f"P{i:03d}", None, None, "suppressed", "suppressed"))
        else:
            cells.append(
                stats.Counts(f"P{i:03d}", None if num < 0 else num, None if den < 0 else den,
                             counts_value.STATUSES[ns], counts_value.STATUSES[ds])  # type: ignore[arg-type]
            )  # fmt: skip
    assert service.summary_of_records(recs, hidden) == stats.summarise(cells)


def _random_network(store: Store, seed: int = 7) -> dict[tuple[str, tuple], list[stats.Counts]]:
    """40 practices, 3 indicators, 2 months, with withheld, rounded, zero and empty counts;
    returns what each group's statistics should see, by (indicator, period)."""
    rng = random.Random(seed)
    expected: dict[tuple[str, tuple], list[stats.Counts]] = {}
    for i in range(40):
        ods = f"A{i:05d}"
        store.practice(ods, f"PCN{i % 4}")
        for period in (JAN, FEB):
            cells = {}
            for ind in INDICATORS:
                if rng.random() < 0.1:
                    continue  # not sent
                den = rng.choice([0, rng.randint(1, 40), rng.randint(40, 900)])
                num = rng.randint(0, den) if den else 0
                kind = rng.random()
                if kind < 0.1:
                    spec: tuple = (None, den, "suppressed", "exact" if den else "zero")
                elif kind < 0.2:
                    spec = (5 * round(num / 5), 5 * round(den / 5), "rounded", "rounded")
                else:
                    spec = (num, den)
                cells[ind] = spec
                ns = spec[2] if len(spec) > 2 else ("zero" if spec[0] == 0 else "exact")
                ds = spec[3] if len(spec) > 3 else ("zero" if spec[1] == 0 else "exact")
                expected.setdefault((ind, period), []).append(
                    stats.Counts(ods, spec[0], spec[1], ns, ds)
                )
            store.submit(ods, period, cells)
    return expected


def test_computed_rows_are_the_pure_statistics_field_for_field(store: Store) -> None:
    expected = _random_network(store)
    assert service.refresh_stale(store.db) == len(expected) == 6
    r6 = entries_store._r6
    with store.db.read() as s:
        for (ind, period), cells in expected.items():
            ref = stats.funnel(sorted(cells, key=lambda c: c.practice))
            summ = s.get(service.BenchSummary, (ind, *period))
            assert summ is not None
            assert (summ.pooled, summ.tau2, summ.phi, summ.method, summ.abc, summ.included) == (
                ref.summary.pooled, ref.summary.dispersion.tau2, ref.summary.dispersion.phi,
                ref.summary.method, ref.summary.abc, ref.summary.included,
            )  # fmt: skip
            rows = service.practice_rows(s, ind, *period)
            assert [r.practice_ods for r in rows] == [p.practice for p in ref.practices]
            for r, p in zip(rows, ref.practices, strict=True):
                lim = p.limits
                assert (r.numerator, r.denominator, r.status, r.rate, r.z, r.band, r.note) == (
                    p.numerator,
                    p.denominator,
                    p.status,
                    r6(p.rate),
                    r6(p.z),
                    p.band,
                    p.note,
                )
                assert (r.lo95, r.hi95) == (
                    (r6(p.ci95[0]), r6(p.ci95[1])) if p.ci95 else (None, None)
                )
                assert r.limit_high_998 == (r6(lim.high_998) if lim else None)
                assert r.approximate == p.approximate


def test_one_practices_rows_are_its_rows_in_every_group(store: Store) -> None:
    """A practice's summary (read by practice) and a funnel (read by group) show it alike:
    every field and both rendered entries."""
    expected = _random_network(store, seed=11)
    service.refresh_stale(store.db)
    fields = [f for f in entries_store.PracticeRow.__slots__ if not f.startswith("_")]
    with store.db.read() as s:
        by_group = {
            (r.practice_ods, r.indicator, r.period_end): r
            for ind, period in expected
            for r in service.practice_rows(s, ind, *period)
        }
        seen = 0
        for i in range(40):
            for r in service.practice_history(s, f"A{i:05d}"):
                g = by_group[(r.practice_ods, r.indicator, r.period_end)]
                assert [getattr(r, f) for f in fields] == [getattr(g, f) for f in fields]
                assert (r.item_json, r.peer_json) == (g.item_json, g.peer_json)
                seen += 1
    assert seen == len(by_group) > 200


def _count_period_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """The (start, end) of each read of a period's submissions from now on, in order."""
    reads: list[tuple] = []
    real = service._period_submissions

    def counting(session, start, end):  # type: ignore[no-untyped-def]
        reads.append((start, end))
        return real(session, start, end)

    monkeypatch.setattr(service, "_period_submissions", counting)
    return reads


def test_a_drain_reads_each_periods_submissions_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _random_network(store, seed=3)
    reads = _count_period_reads(monkeypatch)
    assert service.refresh_stale(store.db) == 6
    assert sorted(reads) == [JAN, FEB]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=80), st.data())
def test_the_achievable_benchmark_over_arrays_is_the_ranking_in_python(rows, data) -> None:  # type: ignore[no-untyped-def]
    rows = [(min(x, n), n) for x, n in rows]
    # ties: repeat some practices' counts, so the ranking has equal fractions to keep in order
    rows += data.draw(st.lists(st.sampled_from(rows), max_size=10)) if rows else []
    x = np.array([r[0] for r in rows], dtype=np.int64)
    n = np.array([r[1] for r in rows], dtype=np.int64)
    assert stats.achievable_benchmark_arrays(x, n) == stats.achievable_benchmark(rows)


def _uncached(s, ind: str, period: tuple) -> list[entries_store.PracticeRow]:  # type: ignore[no-untyped-def]
    summ = service.summary_row(s, ind, *period)
    stored = entries_store.load(s, ind, *period)
    assert summ is not None and stored is not None
    return entries_store.group_rows(ind, *period, summ, stored)


def _fields(rows: list[entries_store.PracticeRow]) -> list[tuple]:
    names = [f for f in entries_store.PracticeRow.__slots__ if not f.startswith("_")]
    return [
        (*(getattr(r, f) for f in names), r.submission_id, r.item_json, r.peer_json) for r in rows
    ]


def test_a_groups_cached_rows_follow_every_refresh(store: Store) -> None:
    """A read again takes the group's rows (their rendered entries too) from the process's cache;
    a correction, and a summary changed under the same counts, are read fresh, never stale."""
    entries_store.clear_cache()
    _random_network(store, seed=5)
    service.refresh_stale(store.db)
    with store.db.read() as s:
        first = service.practice_rows(s, "DM020", *JAN)
        assert _fields(first) == _fields(_uncached(s, "DM020", JAN))
        again = service.practice_rows(s, "DM020", *JAN)
        assert all(a is b for a, b in zip(first, again, strict=True)) and len(first) > 20
        old = next(r for r in first if r.rate is not None and r.status == "exact")
    # the practice corrects its month: 1 of 500 where it had sent other counts
    store.submit(old.practice_ods, JAN, {"DM020": (1, 500)}, supersedes=old.submission_id)
    service.refresh_stale(store.db)
    with store.db.read() as s:
        rows = service.practice_rows(s, "DM020", *JAN)
        mine = next(r for r in rows if r.practice_ods == old.practice_ods)
        assert (mine.numerator, mine.denominator) == (1, 500) != (old.numerator, old.denominator)
        assert '"numerator":1,' in mine.item_json
        assert _fields(rows) == _fields(_uncached(s, "DM020", JAN))
    # the summary changes with the stored counts unchanged: every row is judged against it anew
    with store.db.session() as s:
        summ = s.get(service.BenchSummary, ("DM020", *JAN))
        assert summ is not None and summ.pooled is not None
        summ.pooled = summ.pooled / 2
    with store.db.read() as s:
        judged = service.practice_rows(s, "DM020", *JAN)
        assert _fields(judged) == _fields(_uncached(s, "DM020", JAN)) != _fields(rows)


def test_the_cache_of_groups_holds_at_most_its_bound(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries_store.clear_cache()
    expected = _random_network(store, seed=9)
    service.refresh_stale(store.db)
    monkeypatch.setattr(entries_store, "CACHED_ROWS", 80)
    with store.db.read() as s:
        for ind, period in expected:
            assert _fields(service.practice_rows(s, ind, *period)) == _fields(
                _uncached(s, ind, period)
            )
            held = [len(v) for v in entries_store._CACHE.values()]
            assert sum(held) <= 80 or len(held) == 1
        # the most recently read group is held; the first read has left
        assert len(entries_store._CACHE) == 2
    entries_store.clear_cache()


def test_a_read_refreshes_each_stale_periods_groups_from_one_read(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that finds stale groups (here every group of both months: a practice's page)
    recomputes them a period at a time, each period's submissions read once."""
    expected = _random_network(store, seed=13)
    reads = _count_period_reads(monkeypatch)
    assert service.refresh_for_read(store.db) == len(expected) == 6
    assert sorted(reads) == [JAN, FEB]
    with store.db.read() as s:
        assert service.stale_groups(s) == []
        for (ind, period), cells in expected.items():
            ref = stats.funnel(sorted(cells, key=lambda c: c.practice))
            rows = service.practice_rows(s, ind, *period)
            assert [(r.practice_ods, r.status, r.band) for r in rows] == [
                (p.practice, p.status, p.band) for p in ref.practices
            ]
