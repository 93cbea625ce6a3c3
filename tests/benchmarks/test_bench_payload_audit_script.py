"""bench/payload_audit.py (the payload audit's page, verified one by one and together) runs end to
end at a tiny scale, and the two ways agree on every check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_payload_audit_bench_verifies_a_page_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench/payload_audit.py"), "--practices", "3", "--months", "2",
         "--page", "5", "--runs", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=os.environ.copy(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["submissions"] == 6 and result["page"] == 5 and result["runs"] == 1
    for way in ("one_by_one", "together"):
        assert result[way]["wall_s"] > 0 and result[way]["cpu_s"] > 0
    assert "one by one" in proc.stdout and "together" in proc.stdout
