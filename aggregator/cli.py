"""``fedqi-aggregator``: the network aggregator's command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

app = typer.Typer(name="fedqi-aggregator", no_args_is_help=True, add_completion=False)


@app.callback()
def _root() -> None:
    """fedqi aggregator: verifies, stores and logs practices' signed submissions and builds
    peer benchmarks."""


@app.command()
def version() -> None:
    """Print the aggregator and protocol versions."""
    from protocol import PROTOCOL_MAJOR, __version__

    typer.echo(f"fedqi-aggregator {__version__} (protocol v{PROTOCOL_MAJOR})")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        app(args=list(sys.argv[1:] if argv is None else argv), prog_name="fedqi-aggregator")
        return 0
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)


if __name__ == "__main__":
    raise SystemExit(main())
