"""What the agent's command modules share: options, output, and turning failures into one line."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from agent.errors import AgentUserError, SourceError, UnverifiedAnswerError
from agent.home.settings import AgentSettings, get_settings
from protocol.errors import ProtocolError

F = TypeVar("F", bound=Callable[..., Any])

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="the agent home directory (default: $FEDQI_AGENT_HOME, else ~/.fedqi-agent)",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


@dataclass(frozen=True)
class Invocation:
    """What one run of ``fedqi-agent`` was handed: its environment
    (``agent.cli.main(argv, environ)``). Passed down to the commands in a context variable for
    the length of the run, so settings never come from a swapped ``os.environ`` (the demo runs
    many agents' commands in one process)."""

    environ: Mapping[str, str]


_INVOCATION: ContextVar[Invocation | None] = ContextVar("fedqi_agent_invocation", default=None)


@contextmanager
def invoked(invocation: Invocation) -> Iterator[None]:
    """Run the commands inside with ``invocation`` as theirs."""
    token = _INVOCATION.set(invocation)
    try:
        yield
    finally:
        _INVOCATION.reset(token)


def invocation_environ() -> Mapping[str, str]:
    """The environment of the running command (os.environ when called outside the CLI)."""
    invocation = _INVOCATION.get()
    return os.environ if invocation is None else invocation.environ


def settings_for(home: Path | None, *, need_home: bool = True, **overrides: Any) -> AgentSettings:
    """The settings for ``--home`` (or the invocation's FEDQI_AGENT_HOME, else the default).

    An agent home that does not exist is refused with the one message (``no_home``: its path
    and the ``init`` that makes it, exit 3) before the command does anything, unless
    ``need_home`` is false: ``init``, which makes it, and the commands whose options (or
    environment) can name everything they read (``load-csv --into``, ``check-source --db
    --catalogue``, ``explain`` with ``catalogue.path``), which meet the same message where they
    do read the home (its catalogue, ``source.url``)."""
    settings = get_settings(home, invocation_environ(), **overrides)
    if need_home:
        settings.require_home()
    return settings


def console() -> Console:
    # Made per call so it writes to whatever sys.stdout is now (tests capture it); piped output
    # gets a wide fixed width so tables are not squeezed into 80 columns in files and logs.
    tty = sys.stdout.isatty()
    # emoji=False: a path or name holding ":ok:" or ":smile:" is printed as it is, not as an emoji.
    return Console(
        file=sys.stdout, soft_wrap=True, highlight=False, emoji=False, width=None if tty else 160
    )


def columns(
    title: str,
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    dim: Collection[str] = (),
) -> Text:
    """A long table (a preview's cells, a worklist's patients) as aligned plain columns: a title,
    a bold header, a rule, one line per row; the columns named in ``dim`` dimmed. rich's
    ``Table`` measures and wraps every cell, which cost 0.2 s of CPU for a 340-cell preview
    (docs/benchmarks.md, "Where a preview's CPU goes"); this costs about 15 ms. Cells are
    plain text (no rich markup), and a line wider than the screen wraps in the terminal."""
    body = [list(r) for r in rows]
    if any(len(r) != len(header) for r in body):
        raise ValueError("every row needs one cell per column")
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(header)]
    styles = ["dim" if h in dim else "" for h in header]
    out = Text()
    out.append(title + "\n", style="italic")
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
    out.append(line, style="bold")
    out.append("\n" + "  ".join("\u2500" * w for w in widths) + "\n")
    for row in body:
        last = max((i for i, cell in enumerate(row) if cell), default=-1)  # no trailing blanks
        for i, (cell, width, style) in enumerate(
            zip(row[: last + 1], widths, styles, strict=False)
        ):
            out.append(cell if i == last else cell.ljust(width) + "  ", style=style or None)
        out.append("\n")
    out.rstrip()
    return out


def err_console() -> Console:
    return Console(file=sys.stderr, soft_wrap=True, highlight=False, emoji=False)


def warn(text: str) -> None:
    """One ``warning: ...`` line on stderr (stdout stays the command's output, or its JSON)."""
    err_console().print(f"warning: {text}", markup=False, highlight=False)


def tell_try(what: str, failure: str, failed: int, tries: int, wait: float) -> None:
    """A transport retry notice (agent.outbound.transport.RetryNotice), one line on stderr as
    each try fails, so a command facing a dead aggregator does not wait in silence."""
    err_console().print(
        f"{what}: try {failed} of {tries} failed ({failure}); next in {wait:g} s",
        markup=False,
        highlight=False,
    )


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def one_line_errors(fn: F) -> F:
    """Map the failures a user can meet to :class:`AgentUserError` (printed as one line by
    ``agent.cli.main``, no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (AgentUserError, typer.Exit, typer.Abort, SystemExit):
            raise
        except ProtocolError as exc:
            raise UnverifiedAnswerError(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:
            # SQLAlchemy's errors, without importing SQLAlchemy for the commands that never
            # load it (a preview with a stored statement): if it is not loaded, none was raised.
            sa_exc = sys.modules.get("sqlalchemy.exc")
            if sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError):
                raise SourceError.cannot_read(exc) from None
            if isinstance(exc, sqlite3.Error):
                raise AgentUserError(f"local database error: {exc}") from None
            if isinstance(exc, OSError):
                where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
                raise AgentUserError(f"cannot access{where}: {exc.strerror or exc}") from None
            raise

    # Typer shows a docstring's line breaks as they are: make it one paragraph for --help.
    wrapper.__doc__ = " ".join((fn.__doc__ or "").split()) or None
    return wrapper  # type: ignore[return-value]
