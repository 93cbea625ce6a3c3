"""Cell verdicts (aggregator/log/verdict.py): the ingest seals each stored ``cells`` row under a
key derived from the log key, and the benchmark refresh trusts a row whose seal holds instead of
re-reading its envelope; any other row is checked against its envelope as before. The refresh
reads a submission's cells only where its sealed counts value (``submissions.counts``) is missing
or does not hold (tests/aggregator/test_counts_values.py): these tests clear the values, as on a
network whose submissions were stored before them.

Real server, real submissions and signatures, the refresh run in a session of a runtime loaded
from the network's settings (so with the verdict key) or of a database handle of its own,
opened without a runtime (so without it)."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from agg_helpers import OneCopyLosesTheDatabase
from sqlalchemy import func, select, update

from aggregator.benchmarks import service
from aggregator.benchmarks.models import BenchStale, BenchSummary
from aggregator.cli import _refresh_stale
from aggregator.cli import main as cli
from aggregator.db import models
from aggregator.db.session import Database
from aggregator.errors import DatabaseNotReadyError
from aggregator.log import checks, verdict
from aggregator.runtime import Runtime
from protocol.keys import SigningKey
from protocol.submission import Period
from tests.ports import free_port


@pytest.fixture
def sealed(server, agent_factory):  # type: ignore[no-untyped-def]
    for ods, group in (("A81001", "PCN1"), ("A81002", "PCN1")):
        agent = agent_factory(ods, group=group)
        for month in (4, 5):
            r = server.post("/v1/submissions", agent.submission(period=Period.month(2026, month)))
            assert r.status_code == 201, r.text
    rt = Runtime.load(server.network.settings)
    yield server, rt
    rt.db.dispose()


def _refreshed_then_unsealed(server, rt):  # type: ignore[no-untyped-def]
    """Refresh every group, then clear every stored verdict, as on a network upgraded from
    before verdicts; returns what the refresh stored (:func:`_bench`)."""
    with rt.db.session() as s:
        service.rebuild_all(s)
    expected = _bench(rt.db)
    with server.network.database.session() as s:
        s.execute(update(models.Cell).values(verdict=None))
    _without_counts(server)
    return expected


def _without_counts(server, submission_id=None):  # type: ignore[no-untyped-def]
    """Clear submissions' counts values (all, or one), as stored before revision 0010: the
    refresh then reads their cells."""
    with server.network.database.session() as s:
        q = update(models.Submission).values(counts=None, counts_verdict=None)
        if submission_id is not None:
            q = q.where(models.Submission.submission_id == submission_id)
        s.execute(q)


def _rows(db):  # type: ignore[no-untyped-def]
    with db.read() as s:
        return s.execute(
            select(
                models.Cell.submission_id,
                models.Cell.indicator,
                models.Cell.denominator,
                models.Cell.denominator_status,
                models.Cell.numerator,
                models.Cell.numerator_status,
                models.Cell.exclusions,
                models.Cell.exclusions_status,
                models.Cell.strata,
                models.Cell.verdict,
                models.Submission.practice_ods,
                models.Submission.kid,
                models.Submission.envelope_sha256,
                models.Submission.period_start,
                models.Submission.period_end,
            ).join(models.Submission)
        ).all()


def _binding(r):  # type: ignore[no-untyped-def]
    return (
        r.submission_id, r.practice_ods, r.kid, r.envelope_sha256,
        r.period_start.isoformat(), r.period_end.isoformat(),
    )  # fmt: skip


def _values(r):  # type: ignore[no-untyped-def]
    return (
        r.indicator, r.denominator, r.denominator_status, r.numerator, r.numerator_status,
        r.exclusions, r.exclusions_status, r.strata,
    )  # fmt: skip


def _count_envelope_checks(monkeypatch):  # type: ignore[no-untyped-def]
    calls: list[str] = []
    real = checks.signed_cells

    def counting(sha, body, kid, public_key):  # type: ignore[no-untyped-def]
        calls.append(sha)
        return real(sha, body, kid, public_key)

    monkeypatch.setattr(checks, "signed_cells", counting)
    checks._SIGNED._data.clear()  # the process's cache of earlier tests' envelopes
    return calls


def _bench(db):  # type: ignore[no-untyped-def]
    with db.read() as s:
        return {
            (r.practice_ods, r.indicator, r.period_start): (r.status, r.numerator, r.rate)
            for g in s.scalars(select(BenchSummary))
            for r in service.practice_rows(s, g.indicator, g.period_start, g.period_end)
        }


def test_every_stored_row_carries_a_verdict_that_holds_only_under_the_log_key(sealed) -> None:  # type: ignore[no-untyped-def]
    server, rt = sealed
    rows = _rows(rt.db)
    assert len({r.submission_id for r in rows}) == 4  # two practices, two months
    assert len(rows) == 4 * len({r.indicator for r in rows}) >= 8
    key = rt.signer.verdict_key
    assert all(len(r.verdict) == verdict.SIZE for r in rows)
    assert all(verdict.holds(key, r.verdict, _binding(r), _values(r)) for r in rows)
    other = verdict.derive_key(SigningKey.generate())
    assert not any(verdict.holds(other, r.verdict, _binding(r), _values(r)) for r in rows)
    # bound to the row's values and to its submission, not just its numbers
    r = rows[0]
    changed = (*_values(r)[:3], (r.numerator or 0) + 1, *_values(r)[4:])
    assert not verdict.holds(key, r.verdict, _binding(r), changed)
    moved = (*_binding(r)[:1], "B99999", *_binding(r)[2:])
    assert not verdict.holds(key, r.verdict, moved, _values(r))


def test_the_refresh_reads_no_envelope_for_sealed_rows_and_computes_the_same(
    sealed, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    server, rt = sealed
    calls = _count_envelope_checks(monkeypatch)
    plain = Database(server.network.settings.db)  # no runtime: no verdict key
    try:
        with plain.session() as s:  # so every envelope is checked
            assert "verdict_key" not in s.info
            service.rebuild_all(s)
    finally:
        plain.dispose()
    by_envelope = _bench(rt.db)
    assert len(set(calls)) == 4
    calls.clear()
    checks._SIGNED._data.clear()
    with rt.db.session() as s:
        assert s.info["verdict_key"] == rt.signer.verdict_key
        service.rebuild_all(s)
    assert calls == []
    assert _bench(rt.db) == by_envelope
    assert by_envelope and all(
        status != service.UNVERIFIED for status, _, _ in by_envelope.values()
    )


def test_an_edited_row_fails_its_verdict_and_is_shown_unverified(sealed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    server, rt = sealed
    r = next(r for r in _rows(rt.db) if r.numerator is not None and r.practice_ods == "A81001")
    _without_counts(server, r.submission_id)
    with server.network.database.session() as s:
        s.execute(
            update(models.Cell)
            .where(
                models.Cell.submission_id == r.submission_id, models.Cell.indicator == r.indicator
            )
            .values(numerator=r.numerator + 3)
        )
    calls = _count_envelope_checks(monkeypatch)
    with rt.db.session() as s:
        service.rebuild_all(s)
    assert set(calls) == {r.envelope_sha256}  # only the edited row's envelope is read
    status, numerator, rate = _bench(rt.db)[("A81001", r.indicator, r.period_start)]
    assert (status, numerator, rate) == (service.UNVERIFIED, None, None)
    # it failed its envelope check, so it is not sealed: the next refresh checks it again
    [edited] = [
        x for x in _rows(rt.db) if (x.submission_id, x.indicator) == (r.submission_id, r.indicator)
    ]
    assert edited.verdict == r.verdict and not verdict.holds(
        rt.signer.verdict_key, edited.verdict, _binding(edited), _values(edited)
    )
    calls.clear()
    checks._SIGNED._data.clear()
    with rt.db.session() as s:
        service.rebuild_all(s)
    assert set(calls) == {r.envelope_sha256}
    assert _bench(rt.db)[("A81001", r.indicator, r.period_start)][0] == service.UNVERIFIED


def test_a_verdict_copied_with_another_practices_values_does_not_hold(sealed) -> None:  # type: ignore[no-untyped-def]
    """Someone with the database copies one of practice B's rows, verdict and all, onto one of
    practice A's: the values are signed ones and the verdict is genuine, but it seals B's
    submission's row."""
    server, rt = sealed
    rows = _rows(rt.db)
    a = next(r for r in rows if r.practice_ods == "A81001" and r.period_start == dt.date(2026, 4, 1)
             and r.numerator is not None)  # fmt: skip
    b = next(
        r
        for r in rows
        if r.practice_ods == "A81002"
        and (r.numerator, r.denominator) != (a.numerator, a.denominator)
    )
    _without_counts(server, a.submission_id)
    with server.network.database.session() as s:
        s.execute(
            update(models.Cell)
            .where(models.Cell.submission_id == a.submission_id, models.Cell.indicator == a.indicator)
            .values(
                denominator=b.denominator, denominator_status=b.denominator_status,
                numerator=b.numerator, numerator_status=b.numerator_status,
                exclusions=b.exclusions, exclusions_status=b.exclusions_status,
                strata=b.strata, verdict=b.verdict,
            )
        )  # fmt: skip
    with rt.db.session() as s:
        service.rebuild_all(s)
    status, numerator, _ = _bench(rt.db)[("A81001", a.indicator, a.period_start)]
    assert (status, numerator) == (service.UNVERIFIED, None)


def test_rows_without_a_verdict_or_under_another_log_key_are_checked_against_their_envelopes(
    sealed, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Rows stored before verdicts (null), or sealed under an earlier log key: nothing is
    trusted, the envelopes are read, and the signed values are shown."""
    server, rt = sealed
    with rt.db.session() as s:
        service.rebuild_all(s)
    expected = _bench(rt.db)
    some = next(r for r in _rows(rt.db) if r.practice_ods == "A81002")
    _without_counts(server, some.submission_id)
    with server.network.database.session() as s:
        s.execute(
            update(models.Cell)
            .where(models.Cell.submission_id == some.submission_id)
            .values(verdict=None)
        )
    calls = _count_envelope_checks(monkeypatch)
    with rt.db.session() as s:
        service.rebuild_all(s)
    assert set(calls) == {some.envelope_sha256}
    assert _bench(rt.db) == expected
    calls.clear()
    checks._SIGNED._data.clear()
    with rt.db.session() as s:
        s.info["verdict_key"] = verdict.derive_key(SigningKey.generate())
        service.rebuild_all(s)
    assert len(set(calls)) == 4
    assert _bench(rt.db) == expected


def test_rows_proven_against_their_envelopes_are_sealed_so_the_next_refresh_trusts_them(
    sealed, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A network that upgrades has rows stored before verdicts: the first refresh with the
    verdict key reads their envelopes and seals the rows that match; later refreshes read none.
    A refresh without the key (a process with no log key) writes no verdict."""
    server, rt = sealed
    expected = _refreshed_then_unsealed(server, rt)
    plain = Database(server.network.settings.db)
    try:
        with plain.session() as s:
            service.rebuild_all(s)
    finally:
        plain.dispose()
    assert all(r.verdict is None for r in _rows(rt.db))
    calls = _count_envelope_checks(monkeypatch)
    with rt.db.session() as s:
        service.rebuild_all(s)
    assert len(set(calls)) == 4
    assert _bench(rt.db) == expected
    rows = _rows(rt.db)
    key = rt.signer.verdict_key
    assert rows and all(verdict.holds(key, r.verdict, _binding(r), _values(r)) for r in rows)
    calls.clear()
    checks._SIGNED._data.clear()
    with rt.db.session() as s:
        service.rebuild_all(s)
    assert calls == []
    assert _bench(rt.db) == expected


def test_db_rebuild_benchmarks_recomputes_every_group_and_seals_old_rows(
    sealed, capsys, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The operator's command after an upgrade: every group recomputed, one per transaction,
    and every row stored without a verdict proven against its envelope and sealed. Without the
    log key it refuses, naming what is missing, and changes nothing."""
    server, rt = sealed
    expected = _refreshed_then_unsealed(server, rt)
    groups = {(ind, start) for _, ind, start in expected}
    capsys.readouterr()
    empty = tmp_path / "no-keys"
    empty.mkdir()
    assert (
        cli(["db", "rebuild-benchmarks", "--db", server.network.db, "--key-dir", str(empty)]) != 0
    )
    err = capsys.readouterr().err
    assert "error:" in err and str(empty) in err and "Traceback" not in err
    assert all(r.verdict is None for r in _rows(rt.db))
    key_dir = str(server.network.settings.key_dir)
    assert (
        cli(["db", "rebuild-benchmarks", "--db", server.network.db, "--key-dir", key_dir, "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["marked"] == report["recomputed"] == len(groups) >= 2
    assert _bench(rt.db) == expected
    rows = _rows(rt.db)
    key = rt.signer.verdict_key
    assert rows and all(verdict.holds(key, r.verdict, _binding(r), _values(r)) for r in rows)


def test_db_rebuild_benchmarks_in_several_processes(sealed, capsys) -> None:  # type: ignore[no-untyped-def]
    """``--jobs 2`` on PostgreSQL: two processes share the groups (each group once) and store
    what one process does, sealing the rows that had no verdict. On SQLite, which writes one
    transaction at a time, it is refused, naming the option, and nothing changes."""
    server, rt = sealed
    expected = _refreshed_then_unsealed(server, rt)
    key_dir = str(server.network.settings.key_dir)
    args = ["db", "rebuild-benchmarks", "--db", server.network.db, "--key-dir", key_dir]
    capsys.readouterr()
    if rt.db.dialect != "postgresql":
        assert cli([*args, "--jobs", "2"]) == 2
        err = capsys.readouterr().err
        assert "--jobs 2" in err and "PostgreSQL" in err and "Traceback" not in err
        assert all(r.verdict is None for r in _rows(rt.db))
        return
    assert cli([*args, "--jobs", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["jobs"] == 2 and report["marked"] == report["recomputed"] >= 2
    assert _bench(rt.db) == expected
    key = rt.signer.verdict_key
    rows = _rows(rt.db)
    assert rows and all(verdict.holds(key, r.verdict, _binding(r), _values(r)) for r in rows)


def _queue_empty_groups(network, n: int) -> int:  # type: ignore[no-untyped-def]
    """``n`` stale groups with no cells (one a day from 2000-01-01): a long queue that drains
    quickly. Returns ``n``."""
    now = dt.datetime.now(dt.UTC)
    days = [dt.date(2000, 1, 1) + dt.timedelta(days=i) for i in range(n)]
    with network.database.session() as s:
        s.add_all(
            BenchStale(indicator="BP_CONTROL", period_start=d, period_end=d, mark=1, marked_at=now)
            for d in days
        )
    return n


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_db_rebuild_benchmarks_reports_a_failed_process_at_once(
    network, tmp_path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """``--jobs 2`` where one process loses the database (its copy of the settings names one
    that does not exist) while the other drains a long queue (2,000 groups, some 20 s of
    draining here): the error is printed as it comes, as one line, with exit 1, and the other
    process stops after the group it is on, leaving the rest stale for the next run, instead
    of draining them all before the error is heard."""
    queued = _queue_empty_groups(network, 2000)
    one_lost = OneCopyLosesTheDatabase(network.settings, tmp_path / "claimed")
    monkeypatch.setattr("aggregator.cli._settings", lambda *args, **kwargs: one_lost)
    capsys.readouterr()
    started = time.monotonic()
    code = cli(["db", "rebuild-benchmarks", "--jobs", "2"])
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith(f"error: cannot reach database {network.db}_gone: "), err
    assert "does not exist" in err and "Traceback" not in err, err
    with network.database.read() as s:
        left = s.scalar(select(func.count()).select_from(BenchStale))
    assert queued // 2 < left < queued, (
        f"the other process recomputed {queued - left} of the {queued} queued groups in "
        f"{seconds:.1f} s before the error was reported"
    )


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_db_rebuild_benchmarks_keeps_the_groups_done_when_the_database_goes_mid_drain(
    network, capsys
) -> None:  # type: ignore[no-untyped-def]
    """The drain's connection is ended by the server (``pg_terminate_backend``) after some of
    2,000 queued groups: the command's error is one line with exit 1, and the groups it had
    recomputed stay committed (no longer stale), the rest stale for the next run."""
    import threading

    import psycopg

    queued = _queue_empty_groups(network, 2000)
    url = network.db.replace("postgresql+psycopg://", "postgresql://")
    ended: list[int] = []

    def end_the_drain() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                left = conn.execute("SELECT count(*) FROM bench_stale").fetchone()[0]  # type: ignore[index]
                if left <= queued - 50:
                    break
                time.sleep(0.02)
            # An idle pooled connection that is ended is replaced unnoticed (pre-ping): end
            # them until one is ended inside a group's transaction and the command fails.
            while not finished.is_set() and time.monotonic() < deadline:
                ended.extend(
                    r[0]
                    for r in conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                time.sleep(0.005)

    finished = threading.Event()
    killer = threading.Thread(target=end_the_drain)
    killer.start()
    capsys.readouterr()
    try:
        code = cli(["db", "rebuild-benchmarks", "--db", network.db,
                    "--key-dir", str(network.settings.key_dir)])  # fmt: skip
    finally:
        finished.set()
        killer.join()
    err = capsys.readouterr().err
    assert ended and any(ended), "no connection of the drain was ended"
    assert code == 1, err
    assert err.startswith("error: rebuild-benchmarks: the database failed: "), err
    assert err.count("\n") == 1 and "Traceback" not in err and "run it again" in err, err
    with network.database.read() as s:
        left = s.scalar(select(func.count()).select_from(BenchStale))
    assert 0 < left <= queued - 50, left


def test_db_rebuild_benchmarks_says_in_one_line_that_the_database_went_away() -> None:
    """A database that stops answering mid-drain (here: nothing listens at its address) is
    ``rebuild-benchmarks``' one-line error, in one process or in each of ``--jobs``, not the
    driver's traceback."""
    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone")
    try:
        with pytest.raises(DatabaseNotReadyError) as raised:
            _refresh_stale(db)
    finally:
        db.dispose()
    message = raised.value.message
    assert message.startswith("rebuild-benchmarks: the database failed: "), message
    assert "127.0.0.1" in message and "\n" not in message and "run it again" in message


# Seals made by the first release of verdicts (aggregator/log/verdict.py, migration 0007): the
# stored verdicts of a network must keep holding whatever the code that computes them becomes.
_KEY = bytes(range(32))
_BINDING = ("3f2a9c1e-1234-4bcd-9abc-0123456789ab", "A81001", "fedqi:abc|def", "ab" * 32,
            "2026-03-01", "2026-03-31")  # fmt: skip
_VECTORS = [
    (("BP_CONTROL", 456, "exact", 123, "exact", 7, "exact", '[["0-17","F",0,0,0]]'),
     "c1604b29590358d4ece741605253ea40"),
    (("AF_ANTICOAG", None, "suppressed", None, "suppressed", 0, "zero", ""),
     "90a3efcc98a605ca78068392ab6555d3"),
    (("X", 0, "", 1, "~", 2, "0:", None), "6f63c2c032ac021fde12bbc0dad66b30"),
]  # fmt: skip


@pytest.mark.parametrize(("row", "seal"), _VECTORS)
def test_seals_are_those_of_the_first_release(row: tuple[object, ...], seal: str) -> None:
    from aggregator.log import verdict

    assert verdict.Sealer(_KEY, _BINDING).seal(row).hex() == seal
    assert verdict.holds(_KEY, bytes.fromhex(seal), _BINDING, row)
    other = (*_BINDING[:5], "2026-04-30")
    assert not verdict.holds(_KEY, bytes.fromhex(seal), other, row)
    assert not verdict.holds(_KEY, bytes.fromhex(seal)[:-1], _BINDING, row)
    assert not verdict.holds(_KEY, None, _BINDING, row)
