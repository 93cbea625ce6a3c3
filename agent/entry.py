"""The ``fedqi-agent`` console script and ``python -m agent``: one process, one command.

Python's cyclic garbage collector is paused while the command's modules load, then everything
start-up made (modules, classes, pydantic's validators: they live as long as the process) is
moved out of its reach with :func:`gc.freeze` and it is turned on again, so later collections
do not walk those objects again and again. A ``preview`` costs about 8% less CPU for it
(docs/benchmarks.md). :func:`agent.cli.main` does none of this: the tests and the demo call it
many times in one process, where freezing would keep their garbage alive.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    gc.disable()
    try:
        from agent.cli import _load_commands
        from agent.cli import main as cli_main

        args = list(sys.argv[1:] if argv is None else argv)
        _load_commands(args)
    finally:
        gc.freeze()
        gc.enable()
    return cli_main(args)
