"""Benchmark: what the disclosure guard (agent/guard.py) costs on the demo network.

    .venv/bin/python bench/guard_cost.py [--practices 30] [--groups 5] [--seed 1]
        [--data-dir DIR] [--json OUT.json]

The demo's network plan (``agent.demo.plan_network``: list sizes, recording quality and seeds),
each practice generated once (``agent.synth.generate_practice``, cached in ``--data-dir``), the
default catalogue computed for February and March 2026. For each practice:

* February, released on its own (no earlier release): apply_policy's suppressed counts, the
  guard's, and the guard's time;
* March with February before it (overlapping windows: the guard audits the pair too).

Prints one line per practice and the totals (counts over denominators, numerators and
exclusions, strata and totals), and with ``--json`` writes them. Counts only; no patient.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def suppressed(cells: Sequence[object]) -> int:
    kinds = ("denominator", "numerator", "exclusions")
    return sum(getattr(c, k).status == "suppressed" for c in cells for k in kinds)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--practices", type=int, default=30)
    ap.add_argument("--groups", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "fedqi-guard")
    ap.add_argument("--json", type=Path, default=None)
    o = ap.parse_args(argv)

    import sqlalchemy as sa

    from agent.demo import plan_network
    from agent.engine import compute_cells
    from agent.guard import Release, guard_cells
    from agent.library import load_default_catalogue
    from agent.synth import generate_practice
    from protocol.disclosure import apply_policy, check_cells
    from protocol.submission import Period

    cat = load_default_catalogue()
    policy = cat.disclosure
    feb, mar = Period.month(2026, 2), Period.month(2026, 3)
    o.data_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for plan in plan_network(o.practices, o.groups, o.seed).practices:
        path = o.data_dir / f"{plan.ods}-{plan.patients}-{plan.seed}-{plan.quality}.db"
        if not path.exists():
            generate_practice(path, patients=plan.patients, seed=plan.seed, quality=plan.quality)
        engine = sa.create_engine(f"sqlite:///{path}")
        try:
            raw_feb = compute_cells(engine, cat, feb.end)
            raw_mar = compute_cells(engine, cat, mar.end)
        finally:
            engine.dispose()
        first = guard_cells(catalogue=cat, raw=raw_feb, policy=policy, period=feb)
        history = [Release("february", feb, first.cells, {i.id: i.version for i in cat.indicators})]
        second = guard_cells(catalogue=cat, raw=raw_mar, policy=policy, period=mar, history=history)
        for res in (first, second):
            check_cells(res.cells, policy)
        row = {
            "practice": plan.ods,
            "patients": plan.patients,
            "counts": 3 * len(first.cells),
            "feb_primary_secondary": suppressed(apply_policy(raw_feb, policy)),
            "feb_guard": suppressed(first.cells),
            "feb_seconds": round(first.seconds, 2),
            "feb_held": first.held_reason,
            "mar_primary_secondary": suppressed(apply_policy(raw_mar, policy)),
            "mar_guard": suppressed(second.cells),
            "mar_seconds": round(second.seconds, 2),
            "mar_held": second.held_reason,
        }
        rows.append(row)
        print(
            f"{plan.ods} {plan.patients:>5} patients: Feb {row['feb_primary_secondary']} -> "
            f"{row['feb_guard']} suppressed in {row['feb_seconds']} s; Mar (with Feb) "
            f"{row['mar_primary_secondary']} -> {row['mar_guard']} in {row['mar_seconds']} s"
            + (" HELD" if row["feb_held"] or row["mar_held"] else ""),
            flush=True,
        )
    total = {
        "practices": len(rows),
        "counts_per_submission": rows[0]["counts"] if rows else 0,
        "feb_suppressed_before": sum(r["feb_primary_secondary"] for r in rows),
        "feb_suppressed_guard": sum(r["feb_guard"] for r in rows),
        "mar_suppressed_before": sum(r["mar_primary_secondary"] for r in rows),
        "mar_suppressed_guard": sum(r["mar_guard"] for r in rows),
        "feb_seconds_median": statistics.median(r["feb_seconds"] for r in rows),
        "feb_seconds_max": max(r["feb_seconds"] for r in rows),
        "mar_seconds_median": statistics.median(r["mar_seconds"] for r in rows),
        "mar_seconds_max": max(r["mar_seconds"] for r in rows),
        "held": sum(bool(r["feb_held"] or r["mar_held"]) for r in rows),
        "date": dt.date.today().isoformat(),
    }
    print(json.dumps(total, indent=1))
    if o.json:
        o.json.write_text(json.dumps({"total": total, "practices": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
