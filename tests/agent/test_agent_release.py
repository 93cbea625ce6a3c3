"""Building what leaves: disclosure control, the Submission, plain words, due periods."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from agent_helpers import uniform_cells

from agent.errors import AgentUserError, ConfigError
from agent.home.settings import get_settings
from agent.library import load_default_catalogue
from agent.outbound.outbox import NewMessage, Outbox
from agent.outbound.release import build_submission, describe_submission, effective_policy
from agent.outbound.submitter import ALREADY_HELD, due_periods
from agent.periods import (
    earliest_period,
    last_complete_period,
    month_of,
    next_period,
    parse_period,
    require_in_reach,
    stale_source,
)
from protocol.disclosure import check_cells
from protocol.keys import SigningKey
from protocol.submission import Submission


def test_build_submission_releases_only_policy_checked_cells() -> None:
    catalogue = load_default_catalogue()
    sub = build_submission(
        catalogue=catalogue,
        raw_cells=uniform_cells(catalogue, 4),
        period=parse_period("2026-03"),
        practice="A12345",
        aud="test-net",
        kid=SigningKey.generate().kid,
        seq=3,
        now=1_800_000_000,
        policy=catalogue.disclosure,
        source_kind="sqlite",
    )
    assert Submission.from_bytes(sub.to_bytes()) == sub
    check_cells(sub.cells, catalogue.disclosure)
    assert {c.numerator.status for c in sub.cells if not c.stratum.is_total} == {"suppressed"}
    assert {c.indicator for c in sub.cells} == {i.id for i in catalogue.indicators}
    assert sub.provenance.disclosure_policy and len(sub.provenance.indicators) == len(
        catalogue.indicators
    )
    words = describe_submission(sub, catalogue.disclosure)
    assert "A12345" in words[0] and any("suppressed" in w for w in words)


def test_a_looser_practice_policy_is_refused(tmp_path: Path) -> None:
    catalogue = load_default_catalogue()
    loose = '{"name": "loose", "stratified": {"suppress_at_or_below": 0, "round_to": 1}}'
    settings = get_settings(tmp_path, {"FEDQI_AGENT_DISCLOSURE": loose})
    with pytest.raises(ConfigError, match="does not tighten"):
        effective_policy(catalogue, settings)
    assert effective_policy(catalogue, get_settings(tmp_path, {})) == catalogue.disclosure


def test_a_practice_policy_takes_the_networks_layout_of_exclusions(tmp_path: Path) -> None:
    catalogue = load_default_catalogue()
    assert catalogue.disclosure.exclusions_by_stratum is False  # the shipped catalogue's
    strict = '{"name": "strict", "stratified": {"suppress_at_or_below": 10, "round_to": 10}}'
    policy = effective_policy(catalogue, get_settings(tmp_path, {"FEDQI_AGENT_DISCLOSURE": strict}))
    assert policy.exclusions_by_stratum is False and policy.stratified.round_to == 10
    by_stratum = '{"name": "strict", "exclusions_by_stratum": true}'
    settings = get_settings(tmp_path, {"FEDQI_AGENT_DISCLOSURE": by_stratum})
    with pytest.raises(ConfigError, match="exclusions_by_stratum"):
        effective_policy(catalogue, settings)


@pytest.mark.parametrize("text", ["2026-00", "2026-1", "x", "2026-03-01"])
def test_parse_period_rejects(text: str) -> None:
    with pytest.raises(AgentUserError, match="bad period"):
        parse_period(text)


def test_periods() -> None:
    assert parse_period("2024-02").end == dt.date(2024, 2, 29)
    assert next_period(parse_period("2025-12")).label == "2026-01"
    assert last_complete_period(dt.date(2026, 1, 15)).label == "2025-12"


def test_a_period_is_stale_more_than_31_days_after_the_newest_record() -> None:
    april, may = parse_period("2026-04"), parse_period("2026-05")
    assert stale_source(april, dt.date(2026, 3, 30)) is None  # 31 days: allowed
    assert stale_source(april, None) is None  # no dated record: check-source says so
    assert stale_source(april, dt.date(2026, 3, 29)) == (
        "period 2026-04 ends on 2026-04-30, 32 days after the newest dated record in the "
        "practice database (2026-03-29): its counts would miss everything recorded since (is "
        "the extract still being updated?)"
    )
    assert stale_source(may, dt.date(2026, 5, 31)) is None  # records after the period
    assert month_of(dt.date(2026, 3, 29)).label == "2026-03"


def test_due_periods_follow_the_last_submitted(tmp_path: Path) -> None:
    today = dt.date(2026, 5, 2)
    settings = get_settings(tmp_path, {"FEDQI_AGENT_FIRST_PERIOD": "2026-01"})
    with Outbox(tmp_path / "o.sqlite") as outbox:
        assert [p.label for p in due_periods(settings, outbox, today)] == [
            "2026-01",
            "2026-02",
            "2026-03",
            "2026-04",
        ]
        outbox.add_signed(
            lambda s: NewMessage("submission", b"e", "1" * 64, "k" * 43, s, "id1", "2026-02"),
            "accepted",
        )
        rejected = outbox.add_signed(
            lambda s: NewMessage("submission", b"f", "2" * 64, "k" * 43, s, "id2", "2026-04"),
            "held",
        )
        outbox.set_state(rejected.id, "rejected")
        assert [p.label for p in due_periods(settings, outbox, today)] == ["2026-03", "2026-04"]
    fresh = get_settings(tmp_path / "other", {})
    with Outbox(tmp_path / "o2.sqlite") as outbox:
        assert [p.label for p in due_periods(fresh, outbox, today)] == ["2026-04"]


def test_the_earliest_month_is_first_period_else_24_months_back() -> None:
    """Without first_period, submit reaches the last complete month and the 23 before it; a
    month before that is refused in one line naming the bound and the setting that sends it;
    with first_period, the month before it is refused the same way."""
    today = dt.date(2026, 12, 7)
    assert earliest_period(None, today).label == "2024-12"
    assert earliest_period("2026-03", today).label == "2026-03"
    assert earliest_period("2016-01", today).label == "2016-01"
    assert earliest_period(None, dt.date(2026, 1, 1)).label == "2024-01"
    require_in_reach(parse_period("2024-12"), None, today)
    with pytest.raises(AgentUserError) as refused:
        require_in_reach(parse_period("2024-11"), None, today)
    assert str(refused.value) == (
        "period 2024-11 is before 2024-12, the first of the last 24 complete months (to "
        "2026-11), the earliest sent without first_period: nothing was computed, signed or sent "
        'for it (a mistyped year?). To send it on purpose, set first_period = "2024-11" (or '
        "earlier; in agent.toml, or FEDQI_AGENT_FIRST_PERIOD)"
    )
    require_in_reach(parse_period("2016-11"), "2016-11", today)
    with pytest.raises(AgentUserError) as refused:
        require_in_reach(parse_period("2026-02"), "2026-03", today)
    assert str(refused.value).startswith(
        "period 2026-02 is before first_period (2026-03), the first month this practice sends: "
        "nothing was computed, signed or sent for it"
    )


def test_run_goes_no_further_back_than_first_period_after_a_stray_old_month(
    tmp_path: Path,
) -> None:
    """A month sent before the earliest run reaches (a mistyped year, sent before submit
    refused one) does not count for where run starts: it starts as a new home does, at
    first_period or the last complete month, and says so; a month within reach still
    counts."""
    today = dt.date(2026, 12, 7)
    said: list[str] = []
    (tmp_path / "h").mkdir()
    with Outbox.open(tmp_path / "h") as outbox:
        _stored(outbox, "2016-11", "accepted")
        fresh = get_settings(tmp_path / "h", {})
        assert [p.label for p in due_periods(fresh, outbox, today, [], said.append)] == ["2026-11"]
        assert said == [
            "the latest month submitted, 2016-11, is before 2024-12, the earliest month run "
            "sends without first_period (24 months back): run starts from 2026-11 as a new "
            "agent home would, not from the month after 2016-11; to send the months between, "
            "set first_period in agent.toml"
        ]
        since = get_settings(tmp_path / "h", {"FEDQI_AGENT_FIRST_PERIOD": "2026-08"})
        assert [p.label for p in due_periods(since, outbox, today, [])] == [
            "2026-08",
            "2026-09",
            "2026-10",
            "2026-11",
        ]
        # first_period set further back than the stray month: run goes on from the stray month
        further = get_settings(tmp_path / "h", {"FEDQI_AGENT_FIRST_PERIOD": "2016-01"})
        assert due_periods(further, outbox, today, [])[0].label == "2016-12"
        _stored(outbox, "2026-06", "accepted")
        said.clear()
        assert due_periods(fresh, outbox, today, [], said.append)[0].label == "2026-07"
        assert said == []


def _stored(outbox: Outbox, period: str, state: str, note: str = "") -> None:
    n = len(outbox.messages()) + 1
    outbox.add_signed(
        lambda s: NewMessage("submission", b"e", f"{n:064x}", "k" * 43, s, f"id{n}", period),
        state,
        note,
    )


def test_due_periods_count_what_previous_homes_had_accepted(tmp_path: Path) -> None:
    """A new home after a lost key: the months its previous home had accepted count as
    submitted (what it only held, queued or had refused does not: the network does not hold
    those), and so does a month the aggregator refused here as already held."""
    today = dt.date(2026, 5, 2)
    (tmp_path / "old").mkdir()
    with Outbox.open(tmp_path / "old") as old:
        _stored(old, "2026-01", "accepted")
        _stored(old, "2026-02", "accepted")
        _stored(old, "2026-03", "held")
        _stored(old, "2026-03", "queued")
    env = {
        "FEDQI_AGENT_FIRST_PERIOD": "2026-01",
        "FEDQI_AGENT_PREVIOUS_HOMES": f'["{tmp_path / "old"}"]',
    }
    settings = get_settings(tmp_path / "new", env)
    (tmp_path / "new").mkdir()
    with Outbox.open(tmp_path / "new") as outbox:
        assert [p.label for p in due_periods(settings, outbox, today)] == ["2026-03", "2026-04"]
        _stored(outbox, "2026-03", "refused", "HTTP 422: something else")
        assert [p.label for p in due_periods(settings, outbox, today)] == ["2026-03", "2026-04"]
        _stored(outbox, "2026-03", "refused", f"{ALREADY_HELD}{'0' * 8}-0000-4000-8000-{'0' * 12}")
        assert [p.label for p in due_periods(settings, outbox, today)] == ["2026-04"]


def test_a_previous_home_is_read_without_being_written(tmp_path: Path) -> None:
    """previous_homes are opened read-only: their outbox file is not changed, not even its
    mode, and one that is not an outbox is a configuration error naming it and the setting."""
    import contextlib

    from agent.outbound.release import open_previous_homes

    (tmp_path / "old").mkdir()
    with Outbox.open(tmp_path / "old") as old:
        _stored(old, "2026-01", "accepted")
    outbox_file = tmp_path / "old" / "outbox.sqlite"
    outbox_file.chmod(0o640)
    before = (outbox_file.read_bytes(), outbox_file.stat().st_mtime_ns)
    settings = get_settings(
        tmp_path / "new", {"FEDQI_AGENT_PREVIOUS_HOMES": f'["{tmp_path / "old"}"]'}
    )
    with contextlib.ExitStack() as stack:
        ((home, box),) = open_previous_homes(settings, stack)
        assert home == tmp_path / "old" and [m.period for m in box.messages()] == ["2026-01"]
    assert (outbox_file.read_bytes(), outbox_file.stat().st_mtime_ns) == before
    assert outbox_file.stat().st_mode & 0o777 == 0o640
    outbox_file.write_bytes(b"not an outbox " * 100)
    with contextlib.ExitStack() as stack, pytest.raises(ConfigError) as caught:
        open_previous_homes(settings, stack)
    assert str(tmp_path / "old") in str(caught.value) and "previous_homes" in str(caught.value)
