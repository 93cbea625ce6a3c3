"""Benchmark: what the disclosure guard (agent/outbound/guard.py) costs on the demo network.

    .venv/bin/python bench/guard_cost.py [--practices 30] [--periods 12] [--today 2026-12-04]
        [--min-patients 400] [--max-patients 2500]
        [--data-dir DIR] [--json OUT.json] [--tree CHECKOUT]

The demo's network (``demo.cli.plan_network``: list sizes, recording quality and seeds, default
seed and groups) and its months (``demo.cli.demo_periods``: the ``--periods`` months ending with
the last complete one before ``--today``). Each practice's records are generated once with the
demo's arguments (``agent.sources.synth.generate_practice``, cached in ``--data-dir``) and the
default catalogue is computed for every month in one engine pass, as ``fedqi-agent run`` does.
Then, month by month, each release goes through the guard as ``prepare`` sends it there: with
the practice's latest earlier release of an adjacent month (the one before; the true counts of
that month known, as in one ``run``), under the catalogue's disclosure policy.

Per release it records the guard's time (``GuardResult.seconds``, wall, and the process's CPU
time around the call; in process: the identities are derived once per catalogue and set of
strata and cached, so the first release pays for them), its solves (linear programs, and how
many of them needed an integer program), the counts it withholds beyond ``apply_policy``'s (a
cell is one indicator x stratum, three counts: denominator, numerator, exclusions) and whether
it held the release, and for each indicator whether the release has its whole-practice rate
(the total's denominator released and above 0, its numerator released) after ``apply_policy``
alone and after the guard. Prints a line per practice and the totals, among them per month the
counts the guard chose to withhold (``GuardResult.withheld``), the counts suppressed beyond
``apply_policy``'s (those, and the complements suppressed to protect them), the rates lost and,
for each indicator that lost one, the practices with its rate after each; ``--json`` writes
them. Counts only; no patient.

``--min-patients``/``--max-patients``: the range the practices' list sizes are drawn from,
log-uniform as the demo draws them (``demo.cli.MIN_PATIENTS``, ``MAX_PATIENTS``, 400 to 2,500, by
default), e.g. 6,000 to 14,000 for practices of the size of real English ones. The same draws, so
each practice keeps its deprivation, recording quality and seed and only its size changes.

``--tree``: import the project (the guard, the engine, the demo's network) from another
checkout, e.g. a ``git worktree`` of the base commit, so that two trees are measured by the
same script (run it once per tree, alternating, on a shared machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KINDS = ("denominator", "numerator", "exclusions")


def suppressed(cells: Sequence[Any]) -> set[tuple[str, str, str, str]]:
    return {
        (c.indicator, c.stratum.age_band, c.stratum.sex, k)
        for c in cells
        for k in KINDS
        if getattr(c, k).status == "suppressed"
    }


def rates(cells: Sequence[Any]) -> set[str]:
    """The indicators whose whole-practice rate the cells give."""
    return {
        c.indicator
        for c in cells
        if (c.stratum.age_band, c.stratum.sex) == ("all", "all")
        and c.denominator.status in ("exact", "rounded")
        and (c.denominator.value or 0) > 0
        and c.numerator.status != "suppressed"
    }


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 3) if whole else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--practices", type=int, default=30)
    ap.add_argument("--periods", type=int, default=12)
    ap.add_argument("--today", type=dt.date.fromisoformat, default=dt.date.today())
    ap.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "fedqi-guard-cost"
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--tree", type=Path, default=None, help="import the project from this checkout")
    ap.add_argument(
        "--min-patients", type=int, default=None, help="smallest list size (default: the demo's)"
    )
    ap.add_argument(
        "--max-patients", type=int, default=None, help="largest list size (default: the demo's)"
    )
    o = ap.parse_args(argv)
    if o.tree is not None:
        if not (o.tree / "agent" / "outbound" / "guard.py").exists():
            ap.error(f"--tree {o.tree}: not a checkout of this project with the guard")
        sys.path.insert(0, str(o.tree.resolve()))

    import sqlalchemy as sa

    import demo.cli
    from agent.engine import compute_periods
    from agent.library import load_default_catalogue
    from agent.outbound.guard import Release, guard_cells
    from agent.periods import next_period, parse_period
    from agent.sources.synth import MAX_PATIENTS, generate_practice
    from demo.cli import DEFAULT_GROUPS, DEFAULT_SEED, demo_periods, plan_network
    from protocol.disclosure import apply_policy, check_cells

    low = demo.cli.MIN_PATIENTS if o.min_patients is None else o.min_patients
    high = demo.cli.MAX_PATIENTS if o.max_patients is None else o.max_patients
    if not 1 <= low <= high <= MAX_PATIENTS:
        ap.error(f"list sizes must satisfy 1 <= --min-patients <= --max-patients <= {MAX_PATIENTS}")
    # plan_network draws each size log-uniform between these two module constants
    demo.cli.MIN_PATIENTS, demo.cli.MAX_PATIENTS = low, high

    cat = load_default_catalogue()
    policy = cat.disclosure
    first, _, last_day = demo_periods(o.today, o.periods)
    months = [parse_period(first)]
    while len(months) < o.periods:
        months.append(next_period(months[-1]))
    versions = {i.id: i.version for i in cat.indicators}
    groups = min(DEFAULT_GROUPS, o.practices)
    o.data_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    t_all = time.perf_counter()
    releases: list[dict[str, Any]] = []
    for plan in plan_network(o.practices, groups, DEFAULT_SEED).practices:
        path = o.data_dir / (
            f"{plan.ods}-{plan.patients}-{plan.seed}-{plan.quality}-{last_day.isoformat()}.sqlite"
        )
        if not path.exists():
            generate_practice(
                path,
                patients=plan.patients,
                seed=plan.seed,
                quality=plan.quality,
                period_end=last_day,
            )
        engine = sa.create_engine(f"sqlite:///{path}")
        try:
            raw = compute_periods(engine, cat, [m.end for m in months])
        finally:
            engine.dispose()
        history: list[Release] = []
        for month in months:
            before = apply_policy(raw[month.end], policy)
            cpu0 = time.process_time()
            res = guard_cells(
                catalogue=cat, raw=raw[month.end], policy=policy, period=month, history=history
            )
            cpu = time.process_time() - cpu0
            check_cells(res.cells, policy)
            extra = suppressed(res.cells) - suppressed(before)
            releases.append(
                {
                    "practice": plan.ods,
                    "patients": plan.patients,
                    "period": month.label,
                    "linked": list(res.linked_releases),
                    "ms": round(1000 * res.seconds, 1),
                    "cpu_ms": round(1000 * cpu, 1),
                    "solves": res.solves,
                    "integer_programs": res.integer_programs,
                    "cells": len(res.cells),
                    "counts": len(KINDS) * len(res.cells),
                    "suppressed_by_policy": len(suppressed(before)),
                    "withheld_extra": len(extra),
                    "guard_withheld": len(res.withheld),
                    "cells_with_extra": len({x[:3] for x in extra}),
                    "held": res.held_reason,
                    "rates_by_policy": sorted(rates(before)),
                    "rates_after_guard": sorted(rates(res.cells)),
                }
            )
            # the next month's earlier release: this one as sent, its true counts at hand
            history = [
                Release(f"{month.label}", month, res.cells, versions, raw=tuple(raw[month.end]))
            ]
        mine = [r for r in releases if r["practice"] == plan.ods]
        print(
            f"{plan.ods} {plan.patients:>5} patients: guard "
            f"{statistics.median(r['ms'] for r in mine):.0f} ms median, "
            f"{max(r['ms'] for r in mine):.0f} ms max; "
            f"{sum(r['withheld_extra'] for r in mine)} counts withheld extra over "
            f"{len(mine)} releases" + (" HELD" if any(r["held"] for r in mine) else ""),
            flush=True,
        )
    ms = [r["ms"] for r in releases]
    counts = sum(r["counts"] for r in releases)
    cells = sum(r["cells"] for r in releases)
    extra = sum(r["withheld_extra"] for r in releases)
    extra_cells = sum(r["cells_with_extra"] for r in releases)
    total = {
        "practices": o.practices,
        "periods": [m.label for m in months],
        "releases": len(releases),
        "guard_ms_median": statistics.median(ms),
        "guard_ms_max": max(ms),
        "guard_ms_p90": statistics.quantiles(ms, n=10, method="inclusive")[-1]
        if len(ms) > 1
        else ms[0],
        "guard_cpu_ms_median": statistics.median(r["cpu_ms"] for r in releases),
        "guard_cpu_ms_max": max(r["cpu_ms"] for r in releases),
        "guard_cpu_s_total": round(sum(r["cpu_ms"] for r in releases) / 1000, 1),
        "guard_ms_median_first_month": statistics.median(
            r["ms"] for r in releases if r["period"] == months[0].label
        ),
        "guard_ms_median_with_earlier": statistics.median(r["ms"] for r in releases if r["linked"])
        if len(months) > 1
        else None,
        "guard_s_total": round(sum(ms) / 1000, 1),
        "solves_median": statistics.median(r["solves"] for r in releases),
        "solves_max": max(r["solves"] for r in releases),
        "solves_total": sum(r["solves"] for r in releases),
        "integer_programs_total": sum(r.get("integer_programs", 0) for r in releases),
        "counts_total": counts,
        "cells_total": cells,
        "suppressed_by_policy": sum(r["suppressed_by_policy"] for r in releases),
        "withheld_extra": extra,
        "withheld_extra_pct_of_counts": _pct(extra, counts),
        "cells_with_extra": extra_cells,
        "cells_with_extra_pct_of_cells": _pct(extra_cells, cells),
        "releases_with_extra": sum(r["withheld_extra"] > 0 for r in releases),
        "withheld_extra_max_per_release": max(r["withheld_extra"] for r in releases),
        "held": sum(bool(r["held"]) for r in releases),
        "held_reasons": [
            f"{r['practice']} {r['period']}: {r['held']}" for r in releases if r["held"]
        ],
        "wall_s": round(time.perf_counter() - t_all, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    by_month: dict[str, dict[str, Any]] = {}
    for month in months:
        mine = [r for r in releases if r["period"] == month.label]
        inds = sorted({i for r in mine for i in r["rates_by_policy"]})
        by_month[month.label] = {
            "guard_withheld": sum(r["guard_withheld"] for r in mine),
            "withheld_extra": sum(r["withheld_extra"] for r in mine),
            "rates_lost": sum(
                len(r["rates_by_policy"]) - len(r["rates_after_guard"]) for r in mine
            ),
            "rates_by_indicator": {
                i: [
                    sum(i in r["rates_by_policy"] for r in mine),
                    sum(i in r["rates_after_guard"] for r in mine),
                ]
                for i in inds
                if any(i not in r["rates_after_guard"] for r in mine if i in r["rates_by_policy"])
            },
        }
    total["guard"] = sys.modules[guard_cells.__module__].__file__  # the tree it was imported from
    total["guard_withheld"] = sum(r["guard_withheld"] for r in releases)
    total["rates_lost"] = sum(m["rates_lost"] for m in by_month.values())
    total["by_month"] = by_month
    print(json.dumps(total, indent=1))
    if o.json:
        o.json.write_text(json.dumps({"total": total, "releases": releases}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
