"""Incremental refresh on SQLite and PostgreSQL: the hook marks groups stale, a refresh
recomputes only those, corrections replace superseded counts, results equal the pure stats."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from bench_store import Store, month
from sqlalchemy import select, text

from aggregator.benchmarks import service, stats
from aggregator.benchmarks.models import BenchEntries, BenchStale, BenchSummary

JAN, FEB = month(2026, 1), month(2026, 2)


def _network(store: Store) -> None:
    for ods, pcn in (
        ("A00001", "PCN1"),
        ("A00002", "PCN1"),
        ("A00003", "PCN2"),
        ("A00004", "PCN2"),
    ):
        store.practice(ods, pcn)
    store.submit("A00001", JAN, {"DM020": (70, 100), "HYP008": (30, 60)})
    store.submit("A00002", JAN, {"DM020": (140, 200), "HYP008": (None, 50, "suppressed", "exact")})
    store.submit("A00003", JAN, {"DM020": (40, 100), "HYP008": (0, 0)})
    store.submit("A00004", JAN, {"DM020": (95, 100), "HYP008": (45, 60, "rounded", "rounded")})


def test_hook_marks_groups_stale_in_the_ingest_transaction(store: Store) -> None:
    _network(store)
    with store.db.read() as s:
        stale = {(g.indicator, g.period_end) for g, _ in service.stale_groups(s)}
        marks = dict(s.execute(select(BenchStale.indicator, BenchStale.mark)).all())
    assert stale == {("DM020", JAN[1]), ("HYP008", JAN[1])}
    assert marks == {"DM020": 4, "HYP008": 4}  # each submission bumped the mark


def test_refresh_stores_what_the_pure_statistics_give(store: Store) -> None:
    _network(store)
    assert service.refresh_stale(store.db) == 2
    with store.db.read() as s:
        assert service.stale_count(s) == 0
        summ = s.get(BenchSummary, ("DM020", *JAN))
        rows = {r.practice_ods: r for r in service.practice_rows(s, "DM020", *JAN)}
        hyp = {r.practice_ods: r for r in service.practice_rows(s, "HYP008", *JAN)}
        ref = stats.funnel(
            [
                stats.Counts("A00001", 70, 100),
                stats.Counts("A00002", 140, 200),
                stats.Counts("A00003", 40, 100),
                stats.Counts("A00004", 95, 100),
            ]
        )
        assert summ is not None and summ.pooled == pytest.approx(ref.summary.pooled)
        assert summ.abc == pytest.approx(ref.summary.abc)
        assert summ.method == ref.summary.method
        for p in ref.practices:
            assert rows[p.practice].band == p.band
            assert rows[p.practice].lo95 == pytest.approx(p.ci95[0])  # type: ignore[index]
            assert rows[p.practice].limit_high_998 == pytest.approx(p.limits.high_998)  # type: ignore[union-attr]
        assert hyp["A00002"].status == "suppressed" and hyp["A00002"].rate is None
        assert hyp["A00003"].note == "no eligible patients"
        assert hyp["A00004"].approximate and hyp["A00004"].status == "rounded"


def test_a_drain_stops_between_periods_when_asked(store: Store) -> None:
    """A drain recomputes a period's stale groups together (one read of its counts); asked
    after each period whether to go on, it stops there, the older period still stale."""
    _network(store)
    store.submit("A00001", FEB, {"DM020": (75, 100), "HYP008": (30, 60)})
    asked: list[int] = []

    def go_on() -> bool:
        asked.append(1)
        return False

    # the newest period's two groups are always done; the answer after them stops the drain
    assert service.refresh_stale(store.db, go_on=go_on) == 2
    assert asked == [1]
    with store.db.read() as s:
        assert {(g.indicator, g.period_end) for g, _ in service.stale_groups(s)} == {
            ("DM020", JAN[1]),
            ("HYP008", JAN[1]),
        }
    assert service.refresh_stale(store.db, go_on=lambda: True) == 2
    with store.db.read() as s:
        assert service.stale_count(s) == 0


def test_refresh_touches_only_stale_groups(store: Store) -> None:
    _network(store)
    service.refresh_stale(store.db)
    with store.db.read() as s:
        before = {r.indicator: r.computed_at for r in service.summaries(s)}
    store.submit("A00001", FEB, {"DM020": (75, 100)})
    with store.db.read() as s:
        assert [(g.indicator, g.period_end) for g, _ in service.stale_groups(s)] == [
            ("DM020", FEB[1])
        ]
    assert service.refresh_stale(store.db) == 1
    with store.db.read() as s:
        after = {(r.indicator, r.period_end): r.computed_at for r in service.summaries(s)}
    assert after[("DM020", JAN[1])] == before["DM020"]
    assert after[("HYP008", JAN[1])] == before["HYP008"]
    assert ("DM020", FEB[1]) in after


def test_the_drain_takes_the_newest_period_first(store: Store) -> None:
    """After several months arrive at once (a backfill, a network-wide resubmission), the
    latest month, which the dashboard opens on, is recomputed first, not last."""
    _network(store)  # January's two groups
    store.submit("A00001", FEB, {"DM020": (75, 100), "HYP008": (31, 60)})
    with store.db.read() as s:
        assert [(g.period_end, g.indicator) for g, _ in service.stale_groups(s)] == [
            (FEB[1], "DM020"), (FEB[1], "HYP008"), (JAN[1], "DM020"), (JAN[1], "HYP008"),
        ]  # fmt: skip
    assert service.refresh_stale(store.db, limit=2) == 2
    with store.db.read() as s:
        assert {(g.period_end, g.indicator) for g, _ in service.stale_groups(s)} == {
            (JAN[1], "DM020"), (JAN[1], "HYP008"),
        }  # fmt: skip
        assert {r.period_end for r in service.summaries(s)} == {FEB[1]}


def test_correction_replaces_the_superseded_counts(store: Store) -> None:
    store.practice("A00001")
    store.practice("A00002")
    first = store.submit("A00001", JAN, {"DM020": (10, 100), "AF006": (5, 9)})
    store.submit("A00002", JAN, {"DM020": (50, 100)})
    service.refresh_stale(store.db)
    # the correction drops AF006: that group must be recomputed too (now without A00001)
    store.submit("A00001", JAN, {"DM020": (60, 100)}, supersedes=first)
    with store.db.read() as s:
        assert {g.indicator for g, _ in service.stale_groups(s)} == {"DM020", "AF006"}
    service.refresh_stale(store.db)
    with store.db.read() as s:
        rows = {r.practice_ods: r for r in service.practice_rows(s, "DM020", *JAN)}
        assert rows["A00001"].numerator == 60
        assert s.get(BenchSummary, ("DM020", *JAN)).pooled == pytest.approx(0.55)  # type: ignore[union-attr]
        assert service.practice_rows(s, "AF006", *JAN) == []


def test_a_mark_during_refresh_keeps_the_group_stale(store: Store) -> None:
    _network(store)
    with store.db.session() as s:
        pending = service.stale_groups(s, "DM020")
        service.refresh_group(s, pending[0][0])
        # a submission lands before this refresh commits: it bumps the mark
        service.mark_stale(s, [pending[0][0]])
        service._clear(s, pending[0][0], pending[0][1])
    with store.db.read() as s:
        assert [g.indicator for g, _ in service.stale_groups(s)].count("DM020") == 1


def test_ensure_fresh_refreshes_only_the_group_asked_for(store: Store) -> None:
    _network(store)
    with store.db.session() as s:
        assert service.ensure_fresh(s, "DM020", JAN[1]) == 1
    with store.db.read() as s:
        assert {g.indicator for g, _ in service.stale_groups(s)} == {"HYP008"}
        assert service.practice_rows(s, "DM020", *JAN)
        assert s.scalars(
            select(BenchEntries.practices).where(BenchEntries.indicator == "DM020")
        ).all()


def test_resolve_period(store: Store) -> None:
    _network(store)
    store.submit("A00001", FEB, {"DM020": (75, 100)})
    with store.db.read() as s:
        assert service.resolve_period(s, None) == FEB
        assert service.resolve_period(s, "2026-01") == JAN
        assert service.resolve_period(s, "2026-01-31") == JAN
        with pytest.raises(ValueError, match="2025-12"):
            service.resolve_period(s, "2025-12")


def test_fast_pseudonyms_equal_the_users_service() -> None:
    from types import SimpleNamespace

    from aggregator.benchmarks.viewer import pseudonym_of
    from aggregator.users.service import pseudonym_for

    for uid in (1, 7, 123456):
        for ods in ("A00001", "Y12345", "B81009"):
            secret = f"secret-{uid}".encode()
            viewer = SimpleNamespace(id=uid)
            assert pseudonym_of(secret, uid, ods) == pseudonym_for(secret, viewer, ods)  # type: ignore[arg-type]


def test_an_unknown_period_names_the_known_ones() -> None:
    import datetime as dt

    from aggregator.benchmarks.service import _listed

    def months(n: int) -> list[tuple[dt.date, dt.date]]:
        ends = [dt.date(2024 + (m + 1) // 12, (m + 1) % 12 + 1, 1) - dt.timedelta(days=1)
                for m in range(n)]  # fmt: skip
        return [(e.replace(day=1), e) for e in ends]

    twelve = _listed(months(12))
    # all of them, as the dashboard names them (YYYY-MM), not as period-end dates
    assert twelve.count(", ") == 11 and twelve.startswith("2024-01, 2024-02")
    thirty = _listed(months(30))
    assert thirty == "2024-01, 2024-02, 2024-03, ... 2026-04, 2026-05, 2026-06 (30 periods)"
    # a period that is not a calendar month is named by its start and end
    assert _listed([(dt.date(2024, 1, 15), dt.date(2024, 2, 14))]) == "2024-01-15/2024-02-14"


# --- refreshers side by side (PostgreSQL: one advisory lock per group) ----------------------------


@pytest.fixture
def pg_store(pg_database_factory) -> Iterator[Store]:  # type: ignore[no-untyped-def]
    from aggregator.db.migrate import upgrade
    from aggregator.db.session import Database

    url = pg_database_factory()
    upgrade(url)
    db = Database(url)
    yield Store(db)
    db.dispose()


def _wide_network(store: Store) -> list[service.Group]:
    """Four practices, three indicators, two months: six groups."""
    for i, ods in enumerate(("A00001", "A00002", "A00003", "A00004")):
        store.practice(ods, f"PCN{i % 2}")
        for period in (JAN, FEB):
            store.submit(
                ods, period, {ind: (10 + i, 40 + i) for ind in ("DM020", "HYP008", "AF006")}
            )
    with store.db.read() as s:
        return [g for g, _ in service.stale_groups(s)]


def _stored(store: Store) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every summary (without its time) and every group's stored practices, in a fixed order."""
    with store.db.read() as s:
        summ = [
            tuple(v for k, v in r._mapping.items() if k != "computed_at")
            for r in s.execute(
                select(BenchSummary.__table__).order_by(*BenchSummary.__table__.primary_key)
            ).all()
        ]
        prac = [
            tuple(r)
            for r in s.execute(
                select(BenchEntries.__table__).order_by(*BenchEntries.__table__.primary_key)
            ).all()
        ]
    return summ, prac


def test_a_drain_skips_a_group_another_refresher_holds(pg_store: Store) -> None:
    groups = _wide_network(pg_store)
    held = groups[0]  # the newest month's first: the one a drain takes first
    with pg_store.db.session() as other:
        service._lock_group(other, held)
        # The drain does not wait for it: it recomputes every other group and leaves that one.
        assert service.refresh_stale(pg_store.db) == len(groups) - 1
        with pg_store.db.read() as s:
            assert [g for g, _ in service.stale_groups(s)] == [held]
    assert service.refresh_stale(pg_store.db) == 1  # released: now it is taken
    with pg_store.db.read() as s:
        assert service.stale_count(s) == 0


def test_a_read_waits_for_a_group_being_refreshed_and_finds_it_fresh(pg_store: Store) -> None:
    groups = _wide_network(pg_store)
    g = groups[0]
    result: list[int] = []
    with pg_store.db.session() as other:
        service._lock_group(other, g)
        (mark,) = [m for h, m in service.stale_groups(other) if h == g]
        service.refresh_group(other, g)
        service._clear(other, g, mark)
        reader = threading.Thread(
            target=lambda: result.append(
                service.refresh_for_read(pg_store.db, g.indicator, g.period_end)
            )
        )
        reader.start()
        reader.join(timeout=1.0)
        assert reader.is_alive() and not result  # waiting on the group's lock
    # ``other`` committed: the reader gets the lock, finds the group fresh, recomputes nothing.
    reader.join(timeout=60)
    assert result == [0]


def test_two_drains_at_once_store_what_one_drain_does(pg_store: Store) -> None:
    groups = _wide_network(pg_store)
    counts: list[int] = []
    drains = [
        threading.Thread(target=lambda: counts.append(service.refresh_stale(pg_store.db)))
        for _ in range(2)
    ]
    for t in drains:
        t.start()
    for t in drains:
        t.join(timeout=120)
    assert sum(counts) == len(groups)  # each group recomputed once, by one of them
    together = _stored(pg_store)
    with pg_store.db.session() as s:
        service.mark_all_stale(s)
    assert service.refresh_stale(pg_store.db) == len(groups)
    assert _stored(pg_store) == together


def test_group_keys_are_stable_signed_32_bit() -> None:
    g = service.Group("DM020", *JAN)
    k = service.group_key(g)
    assert -(2**31) <= k < 2**31
    assert k == service.group_key(service.Group("DM020", *JAN))
    assert k != service.group_key(service.Group("DM020", *FEB))


def _waiting_on_advisory_locks(store: Store) -> int:
    with store.db.read() as s:
        return int(
            s.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            ).scalar_one()
        )


def _until(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_read_a_drain_and_an_ingestion_do_not_deadlock(pg_store: Store) -> None:
    """A drain is recomputing January; a read wants every stale group (February, then
    January); a submission marks January then February stale in one transaction. The read
    recomputes one group per transaction, so it holds no row the submission needs while it
    waits for January's lock (it used to hold February's stale row, and PostgreSQL aborted one
    of the three as a deadlock)."""
    pg_store.practice("A00001")
    for period in (JAN, FEB):
        pg_store.submit("A00001", period, {"DM020": (10, 40)})
    with pg_store.db.read() as s:
        (feb, _), (jan, jan_mark) = service.stale_groups(s)
    outcome: dict[str, object] = {}

    def run(name: str, fn: Callable[[], object]) -> threading.Thread:
        def go() -> None:
            try:
                outcome[name] = fn()
            except Exception as exc:  # noqa: BLE001 - the test reports whatever failed
                outcome[name] = exc

        t = threading.Thread(target=go)
        t.start()
        return t

    def ingest() -> str:
        with pg_store.db.session() as s:
            service.mark_stale(s, [jan])
            service.mark_stale(s, [feb])
        return "committed"

    with pg_store.db.session() as drain:
        assert service._try_lock_group(drain, jan)
        service.refresh_group(drain, jan)
        reader = run("read", lambda: service.refresh_for_read(pg_store.db))
        _until(lambda: _waiting_on_advisory_locks(pg_store) == 1)  # the read waits for January
        ingestion = run("ingest", ingest)
        ingestion.join(timeout=30)
        service._clear(drain, jan, jan_mark)  # a no-op: the submission bumped January's mark
    reader.join(timeout=60)
    assert outcome == {"read": 2, "ingest": "committed"}
    with pg_store.db.read() as s:
        # January was recomputed by the read after the submission; February, recomputed
        # before it, is stale again, for the next refresh
        assert [g for g, _ in service.stale_groups(s)] == [feb]


def test_a_refresher_of_the_one_lock_era_still_excludes_the_drains(pg_store: Store) -> None:
    """During an upgrade a worker not yet restarted takes the one lock all refreshers took
    before there was a lock per group (pg_advisory_xact_lock of REFRESH_LOCK_KEY): a new
    drain waits for it instead of recomputing a group beside it."""
    groups = _wide_network(pg_store)
    counts: list[int] = []
    with pg_store.db.session() as old:
        old.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": service.REFRESH_LOCK_KEY})
        drain = threading.Thread(target=lambda: counts.append(service.refresh_stale(pg_store.db)))
        drain.start()
        _until(lambda: _waiting_on_advisory_locks(pg_store) == 1)
        assert not counts
    drain.join(timeout=60)
    assert counts == [len(groups)]
