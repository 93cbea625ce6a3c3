"""The ``fedqi-agent`` console script and ``python -m agent``.

The first time in a process, Python's cyclic garbage collector is paused while the command's
modules load, then everything start-up made (modules, classes, pydantic's validators: they live
as long as the process) is moved out of its reach with :func:`gc.freeze` and it is turned on
again, so later collections do not walk those objects again and again. A ``preview`` costs
about 8% less CPU for it (docs/benchmarks.md). Later calls in the same process (the demo's warm
workers run many command lines through this entry point) go straight to
:func:`agent.cli.main`, which tests call directly and which does none of this.

Before anything loads NumPy (the disclosure guard's arrays), OpenBLAS, NumPy's linear algebra
library, is held to one thread unless the environment already says how many
(``OPENBLAS_NUM_THREADS``): on loading, it starts a thread per core, which cost about 0.07 s
of CPU in every command, and the guard's algebra is sparse and small (docs/benchmarks.md).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Mapping, Sequence

_started = False


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    global _started
    args = list(sys.argv[1:] if argv is None else argv)
    if not _started:
        _started = True
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            from agent.cli import _load_commands

            _load_commands(args)
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()
    from agent.cli import main as cli_main

    return cli_main(args, environ)
