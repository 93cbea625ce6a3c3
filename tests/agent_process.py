"""Run ``fedqi-agent`` in a fresh Python process and see which modules it loaded: what a
command's start-up costs depends on them (docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys

_SCRIPT = (
    "import sys\n"
    "from agent.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('MODULES', ' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    "raise SystemExit(code)\n"
)


def agent_modules(*args: str, env: dict[str, str] | None = None) -> tuple[str, set[str]]:
    """``fedqi-agent ARGS`` (``env`` added to this environment) in a new process, which must
    succeed: its standard output, and every module it had loaded when it finished."""
    r = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert r.returncode == 0, r.stderr
    return r.stdout, set(r.stderr.split("MODULES ", 1)[1].split())
