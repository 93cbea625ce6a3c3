"""Long outputs open with a one-screen summary and take filters; a suppressed count says which
rule suppressed it."""

from __future__ import annotations

from pathlib import Path

from agent.library import load_default_catalogue
from agent.outbound.release import cell_words
from agent.outbound.suppression import (
    GUARDED,
    REASON_WORDS,
    SECONDARY,
    SMALL_COUNT,
    SMALL_POPULATION,
    TOTAL_ONLY,
    beyond_policy,
    suppression_reasons,
)
from protocol.disclosure import RawCell, apply_policy

SCREEN = 50  # lines: the summary must fit one screen


def _preview(cli, home: Path, *extra: str):  # type: ignore[no-untyped-def]
    return cli("preview", "--home", str(home), "--period", "2026-03", *extra)


def _rows(out: str) -> list[list[str]]:
    """The cell table's rows, split into columns: the lines after the header's rule, up to the
    "N of M cells" line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("\u2500"))
    end = next(i for i, line in enumerate(lines) if " of " in line and " cells." in line)
    assert start < end
    return [line.split("  ") for line in lines[start + 1 : end]]


def _cols(row: list[str]) -> list[str]:
    return [c.strip() for c in row if c.strip()]


def test_preview_opens_with_a_one_screen_summary(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    summary = _preview(cli, agent_home)
    full = _preview(cli, agent_home, "--all")
    assert summary.code == 0 and full.code == 0, summary.err + full.err
    assert len(summary.out.splitlines()) <= SCREEN < len(full.out.splitlines())
    assert "--all shows every cell" in summary.out and "suppressed counts" in summary.out
    # One row per indicator in the summary, every cell with --all.
    assert summary.out.count("HYP_BP_U80") == 1
    assert full.out.count("HYP_BP_U80 ") == 13


def test_preview_filters_by_indicator_and_stratum(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = _preview(cli, agent_home, "--indicator", "HYP_BP_U80", "--indicator", "DM_REG")
    assert r.code == 0, r.err
    rows = [_cols(row) for row in _rows(r.out)]
    assert len(rows) == 26 and {row[0] for row in rows} == {"HYP_BP_U80", "DM_REG"}
    assert "26 of 325 cells" in r.out
    r = _preview(cli, agent_home, "--indicator", "DM_REG", "--stratum", "total")
    rows = [_cols(row) for row in _rows(r.out)]
    assert len(rows) == 1 and rows[0][:3] == ["DM_REG", "all", "all"]
    r = _preview(cli, agent_home, "--stratum", "60-79/F")
    rows = [_cols(row) for row in _rows(r.out)]
    assert len(rows) == 25 and all(row[1:3] == ["60-79", "F"] for row in rows)


def test_preview_bad_filter_values_are_one_line_errors(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = _preview(cli, agent_home, "--indicator", "NOPE_1")
    assert r.code == 2 and "unknown indicator 'NOPE_1'" in r.err and "DM_REG" in r.err
    assert len(r.err.strip().splitlines()) == 1 and r.out == ""
    r = _preview(cli, agent_home, "--stratum", "90-99")
    assert r.code == 2 and "--stratum '90-99': no such stratum" in r.err and "60-79" in r.err
    r = _preview(cli, agent_home, "--indicator", "DM_REG", "--json")
    assert r.code == 2 and "--json" in r.err


def test_preview_checks_stratum_before_computing_or_printing(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """A stratum the catalogue cannot have fails first: nothing printed, nothing computed (the
    practice database is not even opened, so a missing one is not the error)."""
    r = _preview(cli, agent_home, "--stratum", "99-100")
    assert r.code == 2 and r.out == "", r.out
    assert "--stratum '99-100': no such stratum" in r.err and "0-39, 40-59, 60-79, 80+" in r.err
    missing = {"FEDQI_AGENT_SOURCE__URL": str(agent_home / "no-such.db")}
    r = cli(
        "preview",
        "--home",
        str(agent_home),
        "--period",
        "2026-03",
        "--stratum",
        "60-79/X",
        env=missing,
    )
    assert r.code == 2 and r.out == "" and "--stratum '60-79/X'" in r.err, r.err
    # A stratum the catalogue has still reaches the cells (and here the missing database).
    r = cli(
        "preview",
        "--home",
        str(agent_home),
        "--period",
        "2026-03",
        "--stratum",
        "80+/U",
        env=missing,
    )
    assert r.code == 4, r.err


def test_preview_says_why_each_count_is_suppressed(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = _preview(cli, agent_home, "--all")
    assert "small count" in r.out and "secondary suppression, to protect another cell" in r.out
    rows = [_cols(row) for row in _rows(r.out)]
    assert len(rows) == 325
    for row in rows:
        if "*" in row[3:6]:  # denom, num, excl
            words = ("small count", "secondary", "disclosure guard", "whole-practice total only")
            assert any(w in row[-1] for w in words), row


def test_suppression_reasons_name_the_rule() -> None:
    policy = load_default_catalogue().disclosure
    # 3 is suppressed on its own (1..7); its complement 57 would give it away, so it is
    # suppressed too, to protect the 3.
    raw = [
        RawCell("DM_REG", "all", "all", 60, 0, 0),
        RawCell("DM_REG", "40-59", "all", 3, 0, 0),
        RawCell("DM_REG", "60-79", "all", 57, 0, 0),
    ]
    reasons = suppression_reasons(raw, apply_policy(raw, policy), policy)
    assert reasons == {
        ("DM_REG", "40-59", "all", "denominator"): SMALL_COUNT,
        ("DM_REG", "60-79", "all", "denominator"): SECONDARY,
        # the shipped catalogue sends exclusions as a whole-practice total only: every
        # stratum's is suppressed, its zeros too
        ("DM_REG", "40-59", "all", "exclusions"): TOTAL_ONLY,
        ("DM_REG", "60-79", "all", "exclusions"): TOTAL_ONLY,
    }


def test_suppression_reasons_keep_the_policy_reason_for_counts_the_guard_also_withholds() -> None:
    """A correction's guard keeps the earlier version's suppressed counts: those disclosure
    control suppresses anyway keep their own reason, and only what the guard adds beyond the
    policy is the guard's (and counted as such)."""
    # exclusions by stratum, so that only the denominators are suppressed
    policy = load_default_catalogue().disclosure.model_copy(update={"exclusions_by_stratum": True})
    raw = [
        RawCell("DM_REG", "all", "all", 60, 0, 0),
        RawCell("DM_REG", "40-59", "all", 3, 0, 0),
        RawCell("DM_REG", "60-79", "all", 57, 0, 0),
    ]
    sticky = [("DM_REG", ("40-59", "all"), "denominator")]
    cells = apply_policy(raw, policy, withhold=sticky)
    reasons = suppression_reasons(raw, cells, policy, sticky)  # type: ignore[arg-type]
    assert reasons == {
        ("DM_REG", "40-59", "all", "denominator"): SMALL_COUNT,
        ("DM_REG", "60-79", "all", "denominator"): SECONDARY,
    }
    assert beyond_policy(raw, cells, policy) == set()
    # A count the policy releases (20) withheld by the guard, and its complement with it.
    raw = [
        RawCell("DM_REG", "all", "all", 60, 0, 0),
        RawCell("DM_REG", "40-59", "all", 20, 0, 0),
        RawCell("DM_REG", "60-79", "all", 40, 0, 0),
    ]
    withheld = [("DM_REG", ("40-59", "all"), "denominator")]
    cells = apply_policy(raw, policy, withhold=withheld)
    reasons = suppression_reasons(raw, cells, policy, withheld)  # type: ignore[arg-type]
    assert reasons == {
        ("DM_REG", "40-59", "all", "denominator"): GUARDED,
        ("DM_REG", "60-79", "all", "denominator"): SECONDARY,
    }
    assert beyond_policy(raw, cells, policy) == set(reasons)


def test_a_suppressed_total_is_small_only_under_the_rule_that_suppressed_it() -> None:
    """Totals keep the totals rule (exact here): an exclusions total of 2 over strata of 1 and
    1 is suppressed to protect them, not as a small count; a denominator total over a group
    that small is small (suppress_small_totals), a numerator total of 2 over a large group is
    not. (Exclusions by stratum: sent as a whole-practice total only, as the shipped catalogue
    sends them, the strata are suppressed whatever they hold and the total of 2 is released.)"""
    policy = load_default_catalogue().disclosure.model_copy(update={"exclusions_by_stratum": True})
    assert policy.totals.suppress_at_or_below == 0
    raw = [
        RawCell("AST_REVIEW", "all", "all", 100, 2, 2),
        RawCell("AST_REVIEW", "40-59", "all", 50, 1, 1),
        RawCell("AST_REVIEW", "60-79", "all", 50, 1, 1),
        RawCell("DM_REG", "all", "all", 5, 0, 0),
        RawCell("DM_REG", "40-59", "all", 2, 0, 0),
        RawCell("DM_REG", "60-79", "all", 3, 0, 0),
    ]
    reasons = suppression_reasons(raw, apply_policy(raw, policy), policy)
    assert reasons[("AST_REVIEW", "all", "all", "exclusions")] == SECONDARY
    assert reasons[("AST_REVIEW", "all", "all", "numerator")] == SECONDARY
    assert reasons[("AST_REVIEW", "40-59", "all", "exclusions")] == SMALL_COUNT
    assert reasons[("DM_REG", "all", "all", "denominator")] == SMALL_COUNT


def test_columns_align_every_row_and_trim_trailing_blanks() -> None:
    import pytest

    from agent.commands._common import columns

    text = columns("Title", ["a", "bb", "ccc"], [["1", "2", "3"], ["444", "", ""]], dim=["bb"])
    assert text.plain.splitlines() == ["Title", "a    bb  ccc", "───  ──  ───", "1    2   3", "444"]
    dimmed = [text.plain[s.start : s.end] for s in text.spans if s.style == "dim"]
    assert dimmed == ["2   "]  # the dim column only, never the header
    with pytest.raises(ValueError, match="one cell per column"):
        columns("Title", ["a", "b"], [["1"]])


def test_preview_shows_what_the_disclosure_guard_would_send(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """preview runs the guard as sending does, so its payload is the one that would be signed;
    with the practice's ``guard = "off"`` it is the per-table policy's."""
    import datetime as dt

    from agent.engine.compute import compute_raw_cells
    from agent.home.settings import get_settings
    from agent.outbound.release import guarded_cells
    from protocol.submission import Period, Submission

    settings = get_settings(agent_home, {})
    catalogue = load_default_catalogue()
    raw = compute_raw_cells(settings, catalogue, dt.date(2026, 3, 31)).cells
    march = Period(start=dt.date(2026, 3, 1), end=dt.date(2026, 3, 31))
    guarded = guarded_cells(catalogue, raw, catalogue.disclosure, march, [])
    per_table = apply_policy(raw, catalogue.disclosure)
    assert guarded.withheld and guarded.cells != per_table  # this practice needs the guard

    on = _preview(cli, agent_home, "--json")
    assert on.code == 0, on.err
    assert Submission.from_bytes(on.out.strip().encode()).cells == guarded.cells
    off = cli(
        "preview", "--home", str(agent_home), "--period", "2026-03", "--json",
        env={"FEDQI_AGENT_GUARD": "off"},
    )  # fmt: skip
    assert off.code == 0, off.err
    assert Submission.from_bytes(off.out.strip().encode()).cells == per_table

    shown = _preview(cli, agent_home, "--all")
    assert f"withholds {len(guarded.withheld)} more count(s)" in shown.out
    rows = [_cols(row) for row in _rows(shown.out)]
    by_guard = [row for row in rows if "withheld by the disclosure guard" in row[-1]]
    assert by_guard and {row[0] for row in by_guard} == {ind for ind, _, _ in guarded.withheld}


def test_a_small_populations_zero_numerator_is_withheld_for_its_own_reason() -> None:
    """The one patient of a whole-practice population of 1 does not meet the indicator: its
    numerators (the total and the stratum) are suppressed, and preview says why (not
    'secondary suppression'), and the payload's words allow 0."""
    policy = load_default_catalogue().disclosure
    raw = [
        RawCell("DM_REG", "all", "all", 1, 0, 0),
        RawCell("DM_REG", "40-59", "all", 1, 0, 0),
        RawCell("DM_REG", "60-79", "all", 0, 0, 0),
    ]
    cells = apply_policy(raw, policy)
    reasons = suppression_reasons(raw, cells, policy)
    assert reasons[("DM_REG", "all", "all", "numerator")] == SMALL_POPULATION
    assert reasons[("DM_REG", "40-59", "all", "numerator")] == SMALL_POPULATION
    assert "zeros included" in REASON_WORDS[SMALL_POPULATION]
    words = cell_words(next(c for c in cells if c.stratum.is_total), policy)
    assert "numerator suppressed (0-7 or withheld" in words
