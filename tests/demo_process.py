"""``fedqi-demo`` serving (no ``--once``) as the demo and browser tests run it: on a free port,
once it says it serves."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.ports import LineReader, on_a_free_port, stop

DEMO = Path(sys.executable).parent / "fedqi-demo"
#: What the demo says once its network is built and checked and its aggregator serves it.
SERVING = "Serving until Ctrl-C"


@dataclass
class ServingDemo:
    proc: subprocess.Popen[str]
    port: int
    output: LineReader  # its stderr, line by line

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def serve_demo(
    args: Sequence[str], *, timeout: float, poll: float = 0.3, **popen: Any
) -> ServingDemo:
    """``fedqi-demo ARGS --port P`` once it says it serves, within ``timeout`` s, on a free port
    P: on another if P is taken first (the demo refuses a --port in use, or its aggregator
    exits saying so; tests/ports.py). Its stderr is read line by line; ``popen`` is the rest
    of Popen's arguments. A demo that does not serve is not left running."""

    def start(port: int) -> ServingDemo:
        proc = subprocess.Popen(
            [str(DEMO), *args, "--port", str(port)], stderr=subprocess.PIPE, text=True, **popen
        )
        output = LineReader(proc, proc.stderr)  # type: ignore[arg-type]
        try:
            output.wait_for(SERVING, what="fedqi-demo", timeout=timeout, poll=poll)
        except BaseException:
            stop(proc)
            raise
        return ServingDemo(proc, port, output)

    return on_a_free_port(start)
