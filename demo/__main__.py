"""``python -m demo``: the same as ``fedqi-demo``."""

from demo.cli import entry

raise SystemExit(entry())
