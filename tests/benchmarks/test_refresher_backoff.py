"""The background refresher gives way to ingestion (any worker process's) but never falls more
than a minute behind."""

from __future__ import annotations

from aggregator.benchmarks.api import (
    MAX_DELAY_SECONDS,
    QUIET_SECONDS,
    Activity,
    quiet,
    should_refresh,
)


def test_waits_while_submissions_arrive() -> None:
    now = 1000.0
    assert not should_refresh(now, last_commit=now - 1, last_refresh=now - 10)
    assert not should_refresh(now, last_commit=now - QUIET_SECONDS + 0.1, last_refresh=now - 10)


def test_runs_once_submissions_pause() -> None:
    now = 1000.0
    assert should_refresh(now, last_commit=now - QUIET_SECONDS, last_refresh=now - 2)
    assert should_refresh(now, last_commit=float("-inf"), last_refresh=now)  # nothing ingested


def test_never_more_than_the_maximum_delay_behind() -> None:
    now = 1000.0
    assert should_refresh(now, last_commit=now - 0.5, last_refresh=now - MAX_DELAY_SECONDS)
    assert not should_refresh(now, last_commit=now - 0.5, last_refresh=now - MAX_DELAY_SECONDS + 1)


def test_a_started_refresh_stops_at_the_next_commit() -> None:
    now = 1000.0
    assert quiet(now, last_commit=now - QUIET_SECONDS)
    assert quiet(now, last_commit=float("-inf"))
    assert not quiet(now, last_commit=now - 0.1)


def test_another_workers_commits_count_through_the_log_size() -> None:
    sizes = iter([10, 10, 12, 12, 12])
    own = float("-inf")  # this process has committed nothing: its connections went elsewhere
    activity = Activity(lambda: own, lambda: next(sizes))
    assert activity.last_commit(100.0) == float("-inf")  # the first look only learns the size
    assert activity.last_commit(102.0) == float("-inf")  # unchanged
    assert activity.last_commit(104.0) == 104.0  # grew since the last look: a commit now
    assert activity.last_commit(106.0) == 104.0
    assert not should_refresh(106.0, activity.last_commit(106.0), last_refresh=90.0)
    assert should_refresh(109.0, 104.0, last_refresh=90.0)


def test_this_process_s_own_commits_count_too() -> None:
    activity = Activity(lambda: 50.0, lambda: 7)
    assert activity.last_commit(51.0) == 50.0
    assert activity.last_commit(52.0) == 50.0
