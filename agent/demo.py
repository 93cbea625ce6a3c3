"""``fedqi-demo``: the whole network on one machine (filled in by the demo work)."""

from __future__ import annotations


def main() -> int:
    print("fedqi demo: not yet assembled")
    return 0
