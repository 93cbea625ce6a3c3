"""The background refresher gives way to ingestion but never falls more than a minute behind."""

from __future__ import annotations

from aggregator.benchmarks.api import MAX_DELAY_SECONDS, QUIET_SECONDS, should_refresh


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
