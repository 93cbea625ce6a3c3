"""The ``fedqi-aggregator`` console script: checks that the aggregator's extras are installed
before anything imports them.

``pip install fedqi`` is the practice's install (the agent and the protocol); the aggregator's
server stack (FastAPI, uvicorn, Alembic, Jinja2, orjson) comes with ``pip install 'fedqi[aggregator]'``. Without it this entry
point prints one line saying so and exits 3, instead of an ImportError's traceback. The list of
what each extra needs is read from the installed package's metadata (pyproject.toml is the one
place it is written).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata

from aggregator.errors import ExitCode  # plain Python: safe without the extras

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def missing_for_extra(extra: str, dist: str = "fedqi") -> list[str]:
    """The distributions that ``dist[extra]`` requires and that are not installed. Empty when
    everything is there, or when ``dist`` itself is not installed (running from a source tree)."""
    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return []
    marker = re.compile(r"""extra\s*==\s*["']""" + re.escape(extra) + r"""["']""")
    missing: list[str] = []
    for req in requires:
        spec, _, env = req.partition(";")
        name_match = _NAME.match(spec.strip())
        if not marker.search(env) or name_match is None:
            continue
        name = name_match.group(0)
        if name.lower() == dist.lower():
            continue  # a self-reference such as fedqi[aggregator]: checked by its own extra
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def missing_extras_message(command: str, extra: str, missing: Sequence[str]) -> str:
    return (
        f"error: {command} needs the '{extra}' extra, which is not installed "
        f"(missing: {', '.join(missing)}); install it with: pip install 'fedqi[{extra}]'"
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    missing = missing_for_extra("aggregator")
    if missing:
        print(missing_extras_message("fedqi-aggregator", "aggregator", missing), file=sys.stderr)
        return ExitCode.MISSING_EXTRA
    from aggregator.cli import main as cli_main

    return cli_main(argv, environ)


if __name__ == "__main__":
    raise SystemExit(main())
