"""``init``, ``enrol`` and ``rotate-key``: the agent home, its key, and joining the network."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.cli import app
from agent.errors import AgentUserError, ConfigError
from agent.home.keystore import Keystore, ensure_private_dir, write_private
from agent.home.settings import CONFIG_FILE, AgentSettings, resolve_home

from ._common import (
    HomeOption,
    JsonOption,
    console,
    emit_json,
    err_console,
    invocation_environ,
    one_line_errors,
    settings_for,
    tell_try,
)


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string for what we write
    return str(value).lower() if isinstance(value, bool) else str(value)


def render_config(values: dict[str, object], source: dict[str, object]) -> str:
    lines = [
        "# fedqi agent configuration (every setting: docs/configuration.md).",
        "# Environment variables FEDQI_AGENT_<NAME> override these; unknown keys are errors.",
    ]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    if source:
        lines += ["", "[source]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in source.items() if v is not None]
    return "\n".join(lines) + "\n"


@app.command()
@one_line_errors
def init(
    home: HomeOption = None,
    practice: Annotated[str | None, typer.Option(help="the practice's ODS code")] = None,
    aud: Annotated[str | None, typer.Option(help="the network's audience name")] = None,
    aggregator_url: Annotated[
        str | None, typer.Option("--aggregator-url", help="the aggregator's base URL")
    ] = None,
    source_url: Annotated[
        str | None, typer.Option("--source-url", help="the practice database (URL or path)")
    ] = None,
    source_kind: Annotated[
        str | None, typer.Option("--source-kind", help="sqlite|duckdb|postgresql|csv|fhir|omop")
    ] = None,
    release: Annotated[str | None, typer.Option(help="auto or hold")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create the agent home: a config file and an Ed25519 signing key (mode 0600, directory
    0700). Refuses to overwrite an existing key."""
    root = resolve_home(home, invocation_environ())
    if root.exists() and not root.is_dir():
        raise AgentUserError(
            f"agent home {root}: the agent home must be a directory, and {root} is a file"
        )
    keys = Keystore(root)
    if keys.has_active():
        raise ConfigError(
            f"{root} already has a signing key ({keys.dir / 'active'}); refusing to overwrite it"
        )
    config = root / CONFIG_FILE
    values: dict[str, object] = {
        "practice": practice,
        "aud": aud,
        "aggregator_url": aggregator_url,
        "release": release,
    }
    source_url, moved = _beside_the_user(source_url, root)
    source: dict[str, object] = {"kind": source_kind, "url": source_url}
    given = any(v is not None for v in [*values.values(), *source.values()])
    if config.exists() and given:
        raise ConfigError(f"{config} exists; edit it rather than passing settings to init")
    if not config.exists():
        text = render_config(values, {k: v for k, v in source.items() if v is not None})
        # Validate before writing anything, so a bad value leaves no half-made home.
        checked: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
        if any(v is not None for v in source.values()):
            checked["source"] = {k: v for k, v in source.items() if v is not None}
        try:
            settings_for(root, need_home=False, **checked)  # nothing is made before the values pass
        except ConfigError as exc:
            if str(exc).startswith("bad value for --"):  # an option's value: a bad argument
                raise AgentUserError(str(exc)) from None
            raise
        ensure_private_dir(root)
        write_private(config, text.encode(), exclusive=True)
    else:
        ensure_private_dir(root)
    settings: AgentSettings = settings_for(root, need_home=False)
    key = keys.create()
    result = {
        "home": str(root),
        "config": str(config),
        "kid": key.kid,
        "key_file": str(keys.dir / f"{key.kid}.key"),
        "practice": settings.practice,
    }
    if moved is not None:
        err_console().print(
            f"source.url: {moved} is not in the agent home but in the current directory; "
            f"{config} names it by its absolute path, {source_url}",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    warn_missing_source(settings, config)
    if as_json:
        emit_json(result)
        return
    out = console()
    out.print(f"agent home  {root}")
    out.print(f"config      {config}")
    out.print(f"signing key {result['key_file']} (mode 0600)")
    out.print(f"kid         {key.kid}")
    out.print(next_steps(settings, config, explicit_home=home is not None))


def _beside_the_user(url: str | None, root: Path) -> tuple[str | None, str | None]:
    """``--source-url`` as ``init`` writes it, and the relative path it replaced, if any. In
    ``agent.toml`` a relative path is read relative to the agent home; on the command line a
    user means the current directory. So a relative path (or a SQLite or DuckDB URL's relative
    database path) that names a file in the current directory and nothing in the home is
    written as that file's absolute path (or URL); any other value is written as given."""
    if not url:
        return url, None
    prefix, rest = "", ""
    if "://" in url:  # a SQLite or DuckDB URL's relative database path, likewise
        from agent.engine.compute import relative_file_url

        parts = relative_file_url(url)
        if parts is None:
            return url, None
        prefix, url_path, rest = parts
        given = Path(url_path).expanduser()
    else:
        given = Path(url).expanduser()
    if given.is_absolute() or (root / given).exists() or not given.is_file():
        return url, None
    return f"{prefix}{given.resolve()}{rest}", url


def warn_missing_source(settings: AgentSettings, config: Path) -> None:
    """Warn (stderr; init still succeeds) when source.url is a path to nothing, as it is
    resolved: a relative path is relative to the agent home, not the current directory, so
    ``--source-url p.sqlite`` run beside p.sqlite would fail at the first preview."""
    text = str(settings.source.url or "") if settings.source else ""
    if not text or "://" in text:
        return  # a URL: its server or driver says whether it is there
    from agent.engine.compute import source_target

    resolved = Path(source_target(settings))
    if resolved.exists():
        return
    given = Path(text).expanduser()
    message = f"warning: source.url {resolved} does not exist"
    if not given.is_absolute():
        message = (
            f"warning: source.url {text} resolves to {resolved}, which does not exist (a "
            "relative path is read relative to the agent home)"
        )
        if given.exists():
            message += (
                f"; {text} exists in the current directory: set source.url to its absolute "
                f"path, {given.resolve()}, in {config}"
            )
    err_console().print(message, markup=False, highlight=False, soft_wrap=True)


def next_steps(settings: AgentSettings, config: Path, *, explicit_home: bool = False) -> str:
    """What to do after ``init``: fill in what is missing, look at what would leave, enrol
    (the order of docs/agent.md and README.md)."""
    import datetime as dt

    from agent.periods import last_complete_period

    missing = [
        name
        for name, value in (
            ("practice", settings.practice),
            ("aud", settings.aud),
            ("aggregator_url", settings.aggregator_url),
            ("source", settings.source.url if settings.source else None),
        )
        if not value
    ]
    period = last_complete_period(dt.date.today()).label
    # the home given to init goes into the commands to copy (else they would use the default)
    at = f" --home {shlex.quote(str(settings.home))}" if explicit_home else ""
    steps = [
        f"`fedqi-agent preview{at} --period {period} --local` to see what would leave",
        f"`fedqi-agent enrol{at} --token TOKEN` with the single-use token from the network admin",
    ]
    if missing:
        steps.insert(0, f"set {', '.join(missing)} in {config}")
    return "next: " + ", then ".join(steps)


@app.command()
@one_line_errors
def enrol(
    token: Annotated[str, typer.Option(help="the single-use enrolment token from the network")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Enrol this agent's key with the aggregator (an enrol message signed by the key itself)
    and pin the aggregator's log key and catalogue key."""
    from agent.outbound.enrolment import enrol_agent

    settings = settings_for(home)
    result = enrol_agent(settings, token, now=int(time.time()), on_retry=tell_try)
    if as_json:
        emit_json(result)
        return
    out = console()
    out.print(f"enrolled practice {result['practice']} in network {result['aud']}")
    out.print(f"this agent's key: kid {result['kid']}")
    out.print(
        f"pinned: the log key {result['log_key']} (kid {result['log_key_kid']}) and the "
        f"catalogue key (kid {result['catalogue_key_kid']}); `fedqi-agent trust show` lists them"
    )
    out.print(f"receipt verified and stored: log leaf {result['leaf_index']}")


@app.command("rotate-key")
@one_line_errors
def rotate_key(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Replace the signing key: a rotate message signed by the old and the new key. The old key
    is kept (it no longer signs)."""
    from agent.outbound.enrolment import rotate

    settings = settings_for(home)
    result = rotate(settings, now=int(time.time()), on_retry=tell_try)
    if as_json:
        emit_json(result)
        return
    console().print(
        f"rotated: {result['old_kid']} -> {result['new_kid']} (receipt leaf {result['leaf_index']})"
    )
