"""bench/guard_cost.py (the disclosure guard's cost in docs/disclosure.md) runs end to end at a
tiny scale: two demo practices, two months, every release checked by the aggregator's rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench/guard_cost.py"


def test_guard_cost_reports_every_release(tmp_path: Path) -> None:
    out = tmp_path / "guard.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--practices", "2", "--periods", "2",
         "--today", "2026-12-04", "--data-dir", str(tmp_path / "data"), "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=os.environ.copy(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    total, releases = result["total"], result["releases"]
    assert total["periods"] == ["2026-10", "2026-11"] and total["releases"] == 4 == len(releases)
    assert {r["practice"] for r in releases} == {"Y90001", "Y90002"}
    # the first month of a practice has no earlier release; the second is guarded with it
    assert [bool(r["linked"]) for r in releases] == [False, True, False, True]
    assert total["counts_total"] == sum(r["counts"] for r in releases) == 3 * total["cells_total"]
    assert total["withheld_extra"] == sum(r["withheld_extra"] for r in releases)
    assert total["solves_total"] == sum(r["solves"] for r in releases) > 0
    assert 0 <= total["integer_programs_total"] <= total["solves_total"]
    assert all(r["cpu_ms"] > 0 and r["suppressed_by_policy"] > 0 for r in releases)
    assert total["held"] == sum(bool(r["held"]) for r in releases)
