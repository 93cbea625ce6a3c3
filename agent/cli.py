"""``fedqi-agent``: the practice agent's command line.

Commands live in modules under :mod:`agent.commands`; each registers itself on :data:`app`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import typer

from agent.errors import exit_code_help

app = typer.Typer(
    name="fedqi-agent",
    help=(
        "fedqi agent: computes the network's quality indicators inside the practice and sends "
        "only signed, disclosure-controlled summary counts."
    ),
    epilog=exit_code_help(),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """fedqi agent: computes the network's quality indicators inside the practice and sends
    only signed, disclosure-controlled summary counts."""


@app.command()
def version() -> None:
    """Print the agent and protocol versions."""
    from protocol import PROTOCOL_MAJOR, __version__

    typer.echo(f"fedqi-agent {__version__} (protocol v{PROTOCOL_MAJOR})")


# Each module registers its commands on ``app`` when imported. A command line that names one
# command imports only the module that holds it: every module imports what its commands need
# (the sending commands httpx, ``synth`` the generator), and a ``preview`` should not pay for
# them. ``tests/agent/test_agent_cli_local.py`` checks this table against what each module
# registers.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "agent.commands.sources": ("load-csv", "load-fhir", "check-source"),
    "agent.commands.setup": ("init", "enrol", "rotate-key"),
    "agent.commands.report": ("preview", "explain"),
    "agent.commands.worklist": ("worklist",),
    "agent.commands.send": ("submit", "run", "pending", "approve", "reject"),
    "agent.commands.audit": ("audit",),
    "agent.commands.trust": ("trust",),
    "agent.commands.synth": ("synth",),
}
MODULE_OF: dict[str, str] = {cmd: mod for mod, cmds in COMMAND_MODULES.items() for cmd in cmds}


def _load_commands(args: Sequence[str] = ()) -> None:
    """Import the module of the command ``args`` names, or, for anything else (``--help``, no
    command, a mistyped one, which Click answers with the full list), every module."""
    wanted = MODULE_OF.get(args[0]) if args else None
    for name in [wanted] if wanted else COMMAND_MODULES:
        importlib.import_module(name)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI; returns the exit code (testable without a subprocess)."""
    from agent.commands._common import Invocation, invoked

    args = list(sys.argv[1:] if argv is None else argv)
    _load_commands(args)
    invocation = Invocation(environ=dict(os.environ if environ is None else environ))
    # Whatever the agent creates (the practice database synth or a load writes, the outbox,
    # the home and its files, a DuckDB write-ahead log) is its owner's only: 0600 files in
    # 0700 directories, as the key is. (POSIX; on Windows the agent home's ACL does this.)
    old_umask = os.umask(0o077) if os.name == "posix" else None
    try:
        with invoked(invocation):  # the commands read their settings from it
            return run_app(app, args, "fedqi-agent")
    finally:
        if old_umask is not None:
            os.umask(old_umask)


def run_app(typer_app: typer.Typer, args: list[str], prog_name: str) -> int:
    """Run a Typer app standalone and return its exit code: usage errors are Click's (exit 2,
    a message), an :class:`~agent.errors.AgentUserError` is one line on stderr and its own
    code. ``fedqi-agent`` and ``fedqi-demo`` both run this way."""
    from agent.errors import AgentUserError

    usage_error, aborted = _click_errors()
    try:
        # Not standalone: a usage error comes here, to be one line, not Click's boxed panel.
        code = typer_app(args=args, prog_name=prog_name, standalone_mode=False)
        # A command returns None (each is typed so): an int here is typer.Exit's code.
        return code if isinstance(code, int) and not isinstance(code, bool) else 0
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except AgentUserError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except usage_error as exc:  # an unknown option, a bad value: exit 2, as Click gives it
        _show_usage_error(exc, _command_path(typer_app, args, prog_name))
        return int(exc.exit_code)  # type: ignore[attr-defined]
    except aborted:  # end of input at a prompt
        typer.echo("error: aborted", err=True)
        return 1


def _click_errors() -> tuple[type[Exception], type[Exception]]:
    """The Click exception classes Typer raises: its usage errors' base (Typer 0.28 vendors
    Click as ``typer._click``; earlier releases use the ``click`` package) and ``Abort``."""
    import typer.core

    vendored: Any = getattr(typer.core, "_click", None)
    if vendored is None:  # pragma: no cover - Typer before 0.28
        import click as vendored
    return vendored.exceptions.ClickException, typer.Abort


def _command_path(typer_app: typer.Typer, args: list[str], prog_name: str) -> str:
    """The command ``args`` name (``fedqi-x audit show``): Click raises some usage errors (an
    option given without its value) with no context to take the path from."""
    import typer.main

    command: Any = typer.main.get_command(typer_app)
    path = [prog_name]
    for arg in args:
        commands = getattr(command, "commands", None)
        if not commands or arg not in commands:
            break
        command = commands[arg]
        path.append(arg)
    return " ".join(path)


def _show_usage_error(exc: Exception, command_path: str) -> None:
    """A usage error as one line naming where the command's help is (``command_path``'s, where
    Click gives no context); a command group run with no command shows its help, as Typer
    does."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        try:
            from typer import rich_utils

            rich_utils.rich_format_error(exc)  # type: ignore[arg-type]
        except ImportError:  # pragma: no cover - Typer without Rich
            exc.show()  # type: ignore[attr-defined]
        return
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path if ctx is not None else command_path} --help')"
    message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    typer.echo(f"error: {message}{where}", err=True)


if __name__ == "__main__":
    # Run through the importable module, so command modules register on the same ``app``.
    from agent.cli import main as _main

    raise SystemExit(_main())
