"""``fedqi-aggregator``: the network aggregator's command line.

Every command takes ``--db URL`` (a SQLite file is the default; PostgreSQL in production),
``--config FILE`` (TOML settings) and, where it needs keys, ``--key-dir``; those that report take
``--json``. Bad input: a one-line error on stderr and a non-zero exit.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import (
    AggregatorError,
    BadRequestError,
    ConfigError,
    DatabaseNotReadyError,
    ExitCode,
    NotFoundError,
    PortInUseError,
    exit_code_help,
)

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event as EventType

app = typer.Typer(
    name="fedqi-aggregator",
    epilog=escape(exit_code_help()),  # [aggregator] is not rich markup
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
practice_app = typer.Typer(no_args_is_help=True, help="Register practices.")
user_app = typer.Typer(no_args_is_help=True, help="Users and their API tokens.")
key_app = typer.Typer(no_args_is_help=True, help="Agent keys.")
db_app = typer.Typer(no_args_is_help=True, help="The database schema.")
catalogue_app = typer.Typer(no_args_is_help=True, help="Signed indicator catalogues.")
log_app = typer.Typer(no_args_is_help=True, help="The transparency log.")
app.add_typer(practice_app, name="practice")
app.add_typer(user_app, name="user")
app.add_typer(key_app, name="key")
app.add_typer(db_app, name="db")
app.add_typer(catalogue_app, name="catalogue")
app.add_typer(log_app, name="log")

DbOpt = Annotated[
    str | None, typer.Option("--db", help="database URL (default: sqlite:///fedqi-aggregator.db)")
]
KeyDirOpt = Annotated[
    Path | None, typer.Option("--key-dir", help="directory of the aggregator's keys")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print a JSON report")]


def _out() -> Console:
    """Made per call, writing to whatever sys.stdout is now; piped output gets a wide fixed
    width, so tables (a key's 43-character kid) are not cut to 80 columns in files and pipes."""
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


@app.callback()
def _root() -> None:
    """fedqi aggregator: verifies, stores and logs practices' signed submissions and builds
    peer benchmarks."""


# The environment the command line was handed (main's ``environ``; the process's by default):
# settings are read from it, and nothing swaps os.environ to pass it on.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar(
    "fedqi_aggregator_environ", default=None
)


def _settings(db: str | None, key_dir: Path | None = None, config: Path | None = None, **more: Any):  # type: ignore[no-untyped-def]
    from .settings import get_settings

    return get_settings(config, environ=_ENVIRON.get(), db=db, key_dir=key_dir, **more)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(when: dt.datetime) -> dt.datetime:
    """A stored instant as UTC (SQLite hands back naive UTC)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _report(as_json: bool, data: dict[str, Any], lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in lines:
            _out().print(line, highlight=False)


@contextmanager
def _database(settings):  # type: ignore[no-untyped-def]
    from .db.migrate import check_migrated
    from .db.session import Database

    db = Database(settings.db)
    try:
        check_migrated(db)
        yield db
    finally:
        db.dispose()


@app.command()
def version() -> None:
    """Print the aggregator and protocol versions."""
    from protocol import PROTOCOL_MAJOR, __version__

    typer.echo(f"fedqi-aggregator {__version__} (protocol v{PROTOCOL_MAJOR})")


@db_app.command("upgrade")
def db_upgrade(db: DbOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Create or migrate the database schema to the latest revision."""
    from .db.migrate import upgrade

    settings = _settings(db, config=config)
    revision = upgrade(settings.db)
    _report(as_json, {"revision": revision}, [f"database at revision {revision}"])


@db_app.command("rebuild-benchmarks")
def db_rebuild_benchmarks(
    db: DbOpt = None,
    key_dir: KeyDirOpt = None,
    config: ConfigOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            min=1,
            help="processes recomputing groups side by side (PostgreSQL only): up to the "
            "machine's cores",
        ),
    ] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Recompute every benchmark group (each indicator and period with stored submissions), one
    group per transaction, while the server may keep running: after an upgrade or a change of
    method. Each stored cells row whose verdict does not hold (stored before verdicts, or
    under another log key) is checked against its signed envelope and, if it matches, sealed,
    so later refreshes need not read its envelope again. Needs the log key (--key-dir). With
    --jobs, the first process to fail stops the others after the group each is on (each
    group commits whole or not at all) and its error is printed then; the groups not reached
    stay stale, for the next run or the server's background refresher."""
    import time as _time

    from .benchmarks.service import mark_all_stale
    from .runtime import Runtime

    settings = _settings(db, key_dir, config)
    rt = Runtime.load(settings)
    try:
        if jobs > 1 and rt.db.dialect != "postgresql":
            raise BadRequestError(
                f"--jobs {jobs}: only on PostgreSQL (SQLite writes one transaction at a time); "
                "leave --jobs out"
            )
        started = _time.perf_counter()
        with _database_failures(), rt.db.session() as session:
            marked = mark_all_stale(session)
        done = _refresh_stale(rt.db) if jobs == 1 else _drain_in_processes(settings, jobs)
        seconds = _time.perf_counter() - started
    finally:
        rt.db.dispose()
    _report(
        as_json,
        {"marked": marked, "recomputed": done, "seconds": round(seconds, 2), "jobs": jobs},
        [f"{done} benchmark group(s) recomputed in {seconds:.1f} s ({marked} marked)"],
    )


def _drain_in_processes(settings: Any, jobs: int) -> int:
    """``rebuild-benchmarks --jobs``: ``jobs`` processes drain the stale groups side by side;
    returns how many groups they recomputed. The first error one of them raises is raised here
    as soon as it comes, not once the others have drained the queue: they are told to stop
    (each after the group it is on, which commits or rolls back whole) and waited for, so none
    is left running."""
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    # Each process its own runtime (connections, log key); each group's advisory lock keeps
    # them on different groups (aggregator.benchmarks.service).
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_drainer, initargs=(stop,)
    ) as pool:
        futures = [pool.submit(_drain, settings) for _ in range(jobs)]
        try:
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # the command itself interrupted (Ctrl-C, a signal)
            stop.set()
            raise
        failed = next((f.exception() for f in finished if f.exception() is not None), None)
        if failed is not None:
            stop.set()
            pool.shutdown(cancel_futures=True)  # and waits for those on a group
            raise failed
    return sum(f.result() for f in futures)


# In a ``rebuild-benchmarks --jobs`` process: set by the command when another process failed.
_STOP: EventType | None = None


def _drainer(stop: EventType) -> None:
    """Each ``rebuild-benchmarks --jobs`` process's start (an Event reaches a spawned process
    only as it starts, not with each call)."""
    global _STOP
    _STOP = stop


def _drain(settings: Any) -> int:
    """One ``rebuild-benchmarks --jobs`` process: drain the stale groups others do not hold,
    until none is left or the command says stop (between groups)."""
    from .runtime import Runtime

    stop = _STOP

    def go_on() -> bool:
        return stop is None or not stop.is_set()

    if not go_on():  # another process failed before this one started
        return 0
    rt = Runtime.load(settings)
    try:
        return _refresh_stale(rt.db, go_on)
    finally:
        rt.db.dispose()


def _refresh_stale(db: Any, go_on: Callable[[], bool] | None = None) -> int:
    """``refresh_stale`` for ``rebuild-benchmarks``, its database failures one line
    (:func:`_database_failures`)."""
    from .benchmarks.service import refresh_stale

    with _database_failures():
        return refresh_stale(db, go_on=go_on)


@contextmanager
def _database_failures() -> Iterator[None]:
    """``rebuild-benchmarks``: a database that fails mid-way (its connection lost, a statement
    it cancels) is the command's one-line error (DatabaseNotReadyError), not the driver's
    traceback; the groups recomputed before are kept, each committed in its own
    transaction."""
    from .db.session import driver_words
    from .web.problems import is_database_unavailable

    try:
        yield
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        raise DatabaseNotReadyError(
            f"rebuild-benchmarks: the database failed: {driver_words(exc)}; the groups "
            "recomputed before are kept: run it again for the rest"
        ) from None


@app.command()
def init(
    name: Annotated[str, typer.Option("--name", help="the network's name")],
    aud: Annotated[
        str, typer.Option("--aud", help="audience agents put in every message, e.g. fedqi-nwl")
    ],
    origin: Annotated[
        str | None, typer.Option("--origin", help="checkpoint origin (default: <aud>/log/v1)")
    ] = None,
    catalogue: Annotated[
        Path | None, typer.Option("--catalogue", help="catalogue JSON (default: the shipped one)")
    ] = None,
    db: DbOpt = None,
    key_dir: KeyDirOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set up the network: log key, catalogue signing key, pseudonym secret (0600 files in the
    key dir), and publish the catalogue signed."""
    import re

    from sqlalchemy import select

    from protocol.keys import b64url_encode

    from . import keyfiles
    from .catalogues.service import load_catalogue_file, publish
    from .db.models import Network

    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{0,62}", aud):
        raise BadRequestError(f"--aud {aud!r}: lower-case letters, digits, '.' and '-', at most 63")
    origin = origin or f"{aud}/log/v1"
    if not re.fullmatch(r"[^\s+]{1,200}", origin):
        raise BadRequestError(f"--origin {origin!r}: no spaces or '+' (it names the log's key)")
    if not name.strip() or len(name) > 200:
        raise BadRequestError("--name must be 1-200 characters")
    settings = _settings(db, key_dir, config)
    cat = load_catalogue_file(catalogue)
    with _database(settings) as database, database.session() as session:
        if session.scalars(select(Network)).first() is not None:
            raise ConfigError("this database is already initialised (init runs once per network)")
        log_key, cat_key = keyfiles.generate(settings.key_dir)
        now = _now()
        session.add(
            Network(
                id=1,
                name=name,
                aud=aud,
                origin=origin,
                log_key_name=origin,
                log_public_key=log_key.public.public_bytes(),
                catalogue_public_key=cat_key.public.public_bytes(),
                created_at=now,
            )
        )
        row = publish(session, cat, cat_key, now)
    # base64url without padding: the form of the JWK ``x`` that agents pin in trust.json and that
    # `fedqi-agent trust show` prints, so the three can be compared character for character.
    log_pub = b64url_encode(log_key.public.public_bytes())
    data = {
        "name": name,
        "aud": aud,
        "origin": origin,
        "key_dir": str(settings.key_dir),
        "log_key": {"name": origin, "public_key": log_pub, "kid": log_key.kid},
        "catalogue_key": {
            "public_key": b64url_encode(cat_key.public.public_bytes()),
            "kid": cat_key.kid,
        },
        "catalogue": {"id": row.id, "version": row.version, "sha256": row.sha256},
    }
    _report(
        as_json,
        data,
        [
            f"network {name!r} (aud {aud}) initialised; keys in {settings.key_dir} (mode 0600)",
            f"log key name: {origin}",
            f"log public key (base64url; pin this in agents): {log_pub}",
            f"log kid: {log_key.kid}",
            f"catalogue public key (base64url): {b64url_encode(cat_key.public.public_bytes())}",
            f"catalogue key kid: {cat_key.kid}",
            f"published catalogue {row.id} v{row.version} sha256 {row.sha256}",
        ],
    )


def _named_directory(text: str, option: str) -> Path:
    """A directory option's value: an empty one is refused (exit 2), where it was the current
    directory, into which the pack's 13 files then went (found by a new-user run)."""
    if not text.strip():
        raise typer.BadParameter("empty: name the directory to write into")
    return Path(text)


@catalogue_app.command("publish")
def catalogue_publish(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="catalogue JSON")],
    ig_pack_dir: Annotated[
        Path | None,
        typer.Option(
            "--ig-pack",
            help="regenerate the IG pack in this directory (see ig-pack)",
            parser=lambda text: _named_directory(text, "--ig-pack"),
        ),
    ] = None,
    db: DbOpt = None,
    key_dir: KeyDirOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign and publish a new catalogue version (and, with --ig-pack, regenerate the IG pack,
    which then says what changed since the previous version)."""
    from . import keyfiles
    from .catalogues.service import load_catalogue_file, publish

    settings = _settings(db, key_dir, config)
    cat = load_catalogue_file(file)
    key = keyfiles.load_catalogue_key(settings.key_dir)
    if ig_pack_dir is not None and ig_pack_dir.exists() and not ig_pack_dir.is_dir():
        raise ConfigError(f"--ig-pack {ig_pack_dir}: exists and is not a directory")
    with _database(settings) as database, database.session() as session:
        row = publish(session, cat, key, _now())
        row_id, version, sha = row.id, row.version, row.sha256
    data: dict[str, Any] = {"id": row_id, "version": version, "sha256": sha}
    lines = [f"published catalogue {row_id} v{version} sha256 {sha}"]
    if ig_pack_dir is not None:
        from .igpack import build_pack, write_pack

        with _database(settings) as database, database.read() as session:
            pack = build_pack(session, settings, catalogue_id=row_id, now=_now())
        write_pack(pack, ig_pack_dir)
        data["ig_pack"] = {"out": str(ig_pack_dir), "changes": len(pack.changes)}
        lines.append(f"IG pack regenerated in {ig_pack_dir} ({len(pack.changes)} changes)")
    _report(as_json, data, lines)


@practice_app.command("add")
def practice_add(
    ods: Annotated[str, typer.Argument(metavar="ODS", help="the practice's ODS code, e.g. A81001")],
    name: Annotated[
        str, typer.Option("--name", help="the practice's name, as the dashboard shows it")
    ],
    group: Annotated[str, typer.Option("--group", help="peer group, e.g. the PCN")],
    list_size: Annotated[int, typer.Option("--list-size", help="registered list size")],
    imd_decile: Annotated[
        int, typer.Option("--imd-decile", help="IMD decile 1 (most deprived) to 10")
    ],
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a practice."""
    from .practices.service import add_practice

    settings = _settings(db, config=config)
    with _database(settings) as database, database.session() as session:
        add_practice(
            session,
            ods,
            name=name,
            group=group,
            list_size=list_size,
            imd_decile=imd_decile,
            now=_now(),
        )
    _report(
        as_json,
        {
            "practice": ods,
            "name": name,
            "group": group,
            "list_size": list_size,
            "imd_decile": imd_decile,
        },
        [f"practice {ods} ({name}) added to group {group}"],
    )


@practice_app.command("list")
def practice_list(db: DbOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List practices and their active keys."""
    from sqlalchemy import select

    from .db.models import Practice, PracticeKey

    settings = _settings(db, config=config)
    with _database(settings) as database, database.read() as session:
        rows = list(session.scalars(select(Practice).order_by(Practice.ods)))
        keys = {
            k.practice_ods: k.kid
            for k in session.scalars(select(PracticeKey).where(PracticeKey.status == "active"))
        }
    data = [
        {
            "practice": p.ods,
            "name": p.name,
            "group": p.group,
            "list_size": p.list_size,
            "imd_decile": p.imd_decile,
            "active_kid": keys.get(p.ods),
        }
        for p in rows
    ]
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table("ODS", "name", "group", "list size", "IMD", "active kid")
    for d in data:
        table.add_row(
            d["practice"],
            d["name"],
            d["group"],
            str(d["list_size"]),
            str(d["imd_decile"]),
            d["active_kid"] or "-",
        )
    _out().print(table)


@app.command("enrol-token")
def enrol_token(
    ods: Annotated[str, typer.Argument(metavar="ODS", help="the practice's ODS code")],
    hours: Annotated[int | None, typer.Option("--hours", help="lifetime (default 72)")] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a single-use enrolment token (printed once; stored hashed)."""
    from .practices.service import issue_enrol_token

    settings = _settings(db, config=config)
    lifetime = hours if hours is not None else settings.enrol_token_hours
    if not 1 <= lifetime <= 24 * 90:
        raise BadRequestError(f"--hours {lifetime} is not between 1 and {24 * 90}")
    with _database(settings) as database, database.session() as session:
        token, expires = issue_enrol_token(session, ods, hours=lifetime, now=_now())
    _report(
        as_json,
        {"practice": ods, "token": token, "expires_at": expires.isoformat()},
        [
            f"enrolment token for {ods} (single use, expires {expires.isoformat(timespec='minutes')}); "
            "send it out of band, it is not shown again:",
            token,
        ],
    )


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the user's name")],
    role: Annotated[
        str, typer.Option("--role", help="admin | network_lead | practice | ig_officer")
    ],
    practice: Annotated[
        str | None, typer.Option("--practice", help="ODS code (practice, ig_officer)")
    ] = None,
    group: Annotated[
        str | None,
        typer.Option("--group", help="PCN (network_lead): the group of a registered practice"),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires",
            help="the token is refused from then on: a date (2027-03-31, UTC midnight), an "
            "ISO 8601 instant, or a number of days (90d); default: no expiry",
        ),
    ] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a user and print their API token once (stored hashed)."""
    from .users.service import add_user

    now = _now()
    expires_at = _expiry(expires, now) if expires is not None else None
    settings = _settings(db, config=config)
    with _database(settings) as database, database.session() as session:
        user, token = add_user(
            session, name, role, practice=practice, group=group, now=now, expires_at=expires_at
        )
        uid = user.id
    _report(
        as_json,
        {
            "id": uid,
            "name": name,
            "role": role,
            "practice": practice,
            "group": group,
            "token": token,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
        [
            f"user {uid} {name!r} ({role}); API token"
            + (f" (expires {expires_at.isoformat()})" if expires_at else " (no expiry)")
            + ", not shown again:",
            token,
        ],
    )


@user_app.command("list")
def user_list(db: DbOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List users: id, name, role, practice or group, created, expiry, and whether each is
    active, expired or revoked (tokens are stored hashed and never shown)."""
    from .users.service import list_users

    settings = _settings(db, config=config)
    with _database(settings) as database, database.read() as session:
        users = list_users(session)
        rows = [
            {
                "id": u.id,
                "name": u.name,
                "role": u.role,
                "practice": u.practice_ods,
                "group": u.group,
                "created_at": u.created_at.isoformat(),
                "revoked": bool(u.disabled),
                "expires_at": u.expires_at.isoformat() if u.expires_at else None,
            }
            for u in users
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    now = _now()
    table = Table("id", "name", "role", "practice / group", "created", "expires", "status")
    for u, r in zip(users, rows, strict=True):
        expired = u.expires_at is not None and _aware(u.expires_at) <= now
        status = "revoked" if r["revoked"] else "expired" if expired else "active"
        table.add_row(str(r["id"]), str(r["name"]), str(r["role"]),
                      str(r["practice"] or r["group"] or ""), str(r["created_at"]),
                      str(r["expires_at"] or "never"), status)  # fmt: skip
    _out().print(table)


@user_app.command("revoke")
def user_revoke(
    user_id: Annotated[
        int,
        typer.Argument(
            metavar="USER_ID",
            help="the user's id (see `user list`)",
            min=1,
            max=2**63 - 1,  # the largest id the databases hold (an OverflowError beyond)
        ),
    ],
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a user: their API token and dashboard sign-in stop working at once; the user stays
    listed (as revoked) so the access audit still names them."""
    from .users.service import revoke_user

    settings = _settings(db, config=config)
    with _database(settings) as database, database.session() as session:
        user = revoke_user(session, user_id)
        name, role = user.name, user.role
    _report(
        as_json,
        {"id": user_id, "name": name, "role": role, "revoked": True},
        [f"user {user_id} {name!r} ({role}) revoked"],
    )


def _expiry(text: str, now: dt.datetime) -> dt.datetime:
    """``--expires``: ``90d``, a date or an ISO 8601 instant (UTC when no offset is given)."""
    t = text.strip()
    try:
        if t.endswith("d") and t[:-1].isdigit():
            return now + dt.timedelta(days=int(t[:-1]))
        when = dt.datetime.fromisoformat(t)
    except ValueError:
        raise BadRequestError(
            f"--expires {text!r}: give a number of days (90d), a date (2027-03-31) or an "
            "ISO 8601 instant"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _suspect_since(text: str) -> dt.datetime:
    """``--compromised-since``: a date or a date and time, UTC when no offset is given."""
    t = text.strip()
    try:
        when = dt.datetime.fromisoformat(t)
    except ValueError:
        raise BadRequestError(
            f"--compromised-since {text!r}: not a date (2026-11-02) or a date and time "
            "(2026-11-02T09:30:00) that exists"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


# A kid is base64url and may start with "-": take such a token as the kid, not as an option.
@key_app.command("revoke", context_settings={"ignore_unknown_options": True})
def key_revoke(
    kid: Annotated[str, typer.Argument(metavar="KID", help="the key's kid")],
    compromised_since: Annotated[
        str | None,
        typer.Option(
            "--compromised-since",
            metavar="<date[Thh:mm:ss]>",
            help="start of the suspect window: an ISO date, or date and time, UTC "
            "(2026-11-02 or 2026-11-02T09:30:00)",
        ),
    ] = None,
    db: DbOpt = None,
    key_dir: KeyDirOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an agent key: later messages signed by it are rejected; history stays verifiable."""
    from .practices.service import revoke_key
    from .runtime import Runtime

    since = None if compromised_since is None else _suspect_since(compromised_since)
    settings = _settings(db, key_dir, config)
    rt = Runtime.load(settings)
    try:
        with rt.db.session() as session:
            index = revoke_key(session, rt.signer, kid, compromised_since=since, now=_now())
    finally:
        rt.db.dispose()
    _report(
        as_json,
        {"kid": kid, "leaf_index": index, "compromised_since": since},
        [f"key {kid} revoked (log leaf {index})"],
    )


@key_app.command("list")
def key_list(
    practice: Annotated[
        str | None, typer.Option("--practice", help="only this practice's keys (its ODS code)")
    ] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List agent keys."""
    from sqlalchemy import select

    from .db.models import Practice, PracticeKey

    settings = _settings(db, config=config)
    with _database(settings) as database, database.read() as session:
        q = select(PracticeKey).order_by(PracticeKey.practice_ods, PracticeKey.created_at)
        if practice:
            if session.get(Practice, practice) is None:  # an empty list would read as "no keys"
                raise BadRequestError(
                    f"--practice {practice}: no such practice is registered "
                    "(fedqi-aggregator practice list)"
                )
            q = q.where(PracticeKey.practice_ods == practice)
        rows = [
            {
                "kid": k.kid,
                "practice": k.practice_ods,
                "status": k.status,
                "last_seq": k.last_seq,
                "created_at": k.created_at.isoformat(),
                "compromised_since": (
                    k.compromised_since.isoformat() if k.compromised_since is not None else None
                ),
            }
            for k in session.scalars(q)
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("kid", "practice", "status", "last seq", "created", "compromised since")
    for r in rows:
        table.add_row(r["kid"], r["practice"], r["status"], str(r["last_seq"]), r["created_at"],
                      r["compromised_since"] or "")  # fmt: skip
    _out().print(table)


@app.command("ig-pack")
def ig_pack(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            help="directory to write the pack into",
            parser=lambda text: _named_directory(text, "--out"),
        ),
    ],
    catalogue_id: Annotated[
        str | None,
        typer.Option("--catalogue-id", help="catalogue to describe (default: the latest)"),
    ] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the information-governance pack (data items, data-flow diagram, DPIA annex, record of
    processing; HTML and Markdown) from the latest signed catalogue and the network's settings,
    naming the catalogue hash and what changed since the previous catalogue version."""
    from .igpack import build_pack, write_pack

    settings = _settings(db, config=config)
    with _database(settings) as database, database.read() as session:
        pack = build_pack(session, settings, catalogue_id=catalogue_id, now=_now())
    files = write_pack(pack, out_dir)
    cat = pack.catalogue
    _report(
        as_json,
        pack.manifest() | {"out": str(out_dir), "files": [f.name for f in files]},
        [
            f"IG pack for catalogue {cat['id']} v{cat['version']} (sha256 {cat['sha256']}) "
            f"written to {out_dir}: {len(files)} files",
            f"changes since the previous version: {len(pack.changes)}"
            if pack.previous
            else "first version of this catalogue: nothing to compare with",
        ],
    )


@log_app.command("verify")
def log_verify(
    db: DbOpt = None,
    key_dir: KeyDirOpt = None,
    log_public_key: Annotated[
        str | None,
        typer.Option(
            "--log-public-key",
            help="the log's public key as init printed it (base64url); default: the one in the "
            "key directory, if it holds the log key",
        ),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-verify the whole log and the cells derived from it, from the database (after a
    restore from backup, on a schedule, or any time): leaf hashes, stored envelopes and their
    signatures, every stored cell re-derived from its signed payload, every signed checkpoint,
    every stored tree node. Names each difference (check, leaf, practice, period, indicator)
    and exits 8 if there is any; benchmarks built on differing cells, or on an envelope that
    fails a check, are recomputed on their next read, which shows those values as unverified.
    The checkpoints are checked against the log key the network holds apart from the database
    (--log-public-key, or the key directory's log key), and a database that carries another
    key is a finding; with neither, against the key stored in the database, as it says."""
    import datetime as _dt

    from sqlalchemy import select, update

    from .benchmarks.models import BenchSummary
    from .benchmarks.service import Group, mark_stale
    from .db.models import Submission
    from .log.verify import EVERY_INDICATOR, groups_with_differences, verify_log

    settings = _settings(db, key_dir=key_dir, config=config)
    pinned, source = _pinned_log_key(settings.key_dir, key_dir is not None, log_public_key)
    with _database(settings) as database:
        with database.read() as session:
            report = verify_log(session, pinned, source)
        groups = groups_with_differences(report.findings)
        with database.session() as session:
            # the groups with differing cells, and those showing a practice as unverified
            # (rechecked: repaired cells are shown again)
            shown = session.execute(
                select(BenchSummary.indicator, BenchSummary.period_start, BenchSummary.period_end)
                .where(BenchSummary.flagged.is_not(None))
                .distinct()
            ).all()
            suspect: list[Group] = []
            for (a, b), inds in groups.items():
                start, end = _dt.date.fromisoformat(a), _dt.date.fromisoformat(b)
                if EVERY_INDICATOR in inds:  # an envelope that does not verify: all of it
                    inds = inds - {EVERY_INDICATOR} | set(
                        session.scalars(
                            select(BenchSummary.indicator)
                            .where(
                                BenchSummary.period_start == start, BenchSummary.period_end == end
                            )
                            .distinct()
                        )
                    )
                suspect += [Group(ind, start, end) for ind in sorted(inds)]
            # The submissions named: their sealed counts values are trusted no longer, so
            # the recomputation reads their cells (and envelopes) again, as it did before.
            named = {(f.practice, f.period) for f in report.findings if f.practice and f.period}
            for ods, period in sorted(named):
                a, b = period.split("..")
                session.execute(
                    update(Submission)
                    .where(
                        Submission.practice_ods == ods,
                        Submission.period_start == _dt.date.fromisoformat(a),
                        Submission.period_end == _dt.date.fromisoformat(b),
                    )
                    .values(counts_verdict=None)
                )
            mark_stale(session, suspect + [Group(*r) for r in shown])
    lines = [
        f"log {'verified' if report.ok else 'FAILED'}: {report.size} leaves, root {report.root_hex}",
        f"  {report.envelopes_checked} envelopes re-hashed, {report.submissions_checked} "
        f"signatures and submissions checked, {report.cells_checked} cells rows re-derived, "
        f"{report.checkpoints_checked} signed checkpoints checked (latest size "
        f"{report.latest_checkpoint_size}), {report.nodes_checked} tree nodes checked",
        f"  checkpoints checked against {source}",
        *(f"  {f}" for f in report.findings),
    ]
    if suspect:
        lines.append(
            f"  {len(suspect)} benchmark group(s) marked for "
            "recomputation: their differing values now show as unverified"
        )
    _report(as_json, report.as_dict() | {"checkpoints_checked_against": source}, lines)
    if not report.ok:
        raise typer.Exit(ExitCode.LOG_FAILED)


def _pinned_log_key(key_dir: Path, given: bool, public: str | None) -> tuple[bytes | None, str]:
    """The log's public key for ``log verify`` and where it came from: ``--log-public-key``,
    else the key directory's log key (an error if ``--key-dir`` was given and holds none), else
    none (the database's own key is used, and the report says so)."""
    from protocol.errors import ProtocolError
    from protocol.keys import b64url_decode

    from .keyfiles import LOG_KEY, load_log_key

    if public is not None:
        try:
            raw = b64url_decode(public.strip(), what="--log-public-key")
        except ProtocolError as exc:
            raise BadRequestError(str(exc)) from None  # it names --log-public-key
        if len(raw) != 32:
            raise BadRequestError(
                f"--log-public-key: {len(raw)} bytes; an Ed25519 public key is 32 (base64url)"
            )
        return raw, "the key given with --log-public-key"
    if (key_dir / LOG_KEY).exists() or given:
        return (
            load_log_key(key_dir).public.public_bytes(),
            f"the log key in {key_dir}",
        )
    return None, (
        "the key stored in the database itself (pin the network's with --log-public-key or "
        "--key-dir)"
    )


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option("--host", help="address to listen on (setting host; default 127.0.0.1)"),
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="port to listen on (setting port; default 8400)")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="uvicorn worker processes (one per core: a process verifies one submission at a time)",
        ),
    ] = 1,
    db: DbOpt = None,
    key_dir: KeyDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the HTTP API with uvicorn (refuses an unmigrated or uninitialised database)."""
    import uvicorn

    from .web.app import create_app
    from .web.serving import log_config

    settings = _settings(db, key_dir, config, host=host, port=port)
    application = create_app(settings)  # raises before listening if the database is not ready
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # the aggregator's own fedqi.* lines (a practice's changed visibility) beside uvicorn's
        "log_config": log_config(),
        "proxy_headers": True,
        # Whose X-Forwarded-Proto to believe: the session cookie is Secure only over https.
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "server_header": False,
    }
    if workers == 1:
        from .runtime import tune_gc

        # Bound here, before the app starts: a port in use is this command's one-line error
        # (exit 4), not uvicorn's log lines and its exit 3 (which this table gives a missing extra).
        sock = _bind(settings)
        application.state.runtime.warm()
        tune_gc()
        server = uvicorn.Server(uvicorn.Config(application, **common))
        with sock:
            server.run(sockets=[sock])
        if not server.started:
            raise ConfigError("serve: the server did not start (its messages are above)")
        return
    # Several processes: each builds the app from the same settings, passed down as environment.
    application.state.runtime.db.dispose()
    os.environ.update(
        {
            "FEDQI_AGGREGATOR_DB": settings.db,
            "FEDQI_AGGREGATOR_KEY_DIR": str(settings.key_dir.resolve()),
        }
    )
    if settings.config_file is not None:
        os.environ["FEDQI_AGGREGATOR_CONFIG"] = str(settings.config_file.resolve())
    factory = "aggregator.web.app:create_app_from_environment"
    from .web.serving import serve_workers, spreads_connections

    if spreads_connections():  # each worker its own listening socket (see aggregator.web.serving)
        # First without SO_REUSEPORT: another serve's workers would let a socket with it join
        # their port, and the two aggregators would share its connections.
        _bind(settings).close()
        reserve = _bind(settings, reuse_port=True)
        serve_workers({"app": factory, "factory": True, **common}, reserve, workers)
        return
    # Elsewhere uvicorn binds the port itself: tried here first, so a port in use is this
    # command's one line and exit 4 on every platform, not uvicorn's exit 3.
    _bind(settings).close()
    uvicorn.run(factory, factory=True, workers=workers, **common)


#: A bind's errno when another socket holds the address: POSIX's EADDRINUSE, and Windows'
#: WSAEADDRINUSE (10048), which a socket's OSError carries there.
_ADDRESS_IN_USE = frozenset({errno.EADDRINUSE, 10048})


def _bind(settings: Any, *, reuse_port: bool = False) -> Any:
    """``serve``'s socket on the settings' host and port; one line if it cannot be bound, with
    the system's reason: PortInUseError (exit 4) when another process holds them, told by the
    errno, not by the words, which differ between systems; ConfigError (exit 1) otherwise."""
    from .web.serving import bound_socket

    try:
        return bound_socket(settings.host, settings.port, reuse_port=reuse_port)
    except OSError as exc:
        error = PortInUseError if exc.errno in _ADDRESS_IN_USE else ConfigError
        raise error(
            f"serve: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from exc


def _one_paragraph(group: typer.Typer) -> None:
    """Typer shows a docstring's line breaks as they are, so a command's help broke where its
    source line did, mid-sentence: each command's docstring is given as one paragraph for
    --help (as the agent's commands are)."""
    for command in group.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = " ".join(command.callback.__doc__.split())
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _one_paragraph(sub.typer_instance)


_one_paragraph(app)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    token = _ENVIRON.set(None if environ is None else dict(environ))
    # What the aggregator creates (a SQLite database and its journal, which hold every
    # submission and the users; dumps; an IG pack's files) is its owner's only: 0600 files in
    # 0700 directories, as its keys are. (POSIX.)
    old_umask = os.umask(0o077) if os.name == "posix" else None
    usage_error, aborted = _click_errors()
    try:
        # Not standalone: a usage error comes here, to be one line, not Click's boxed panel.
        code = app(args=args, prog_name="fedqi-aggregator", standalone_mode=False)
        # A command returns None (each is typed so): an int here is typer.Exit's code.
        return code if isinstance(code, int) and not isinstance(code, bool) else ExitCode.OK
    except usage_error as exc:  # an unknown option, a bad value: exit 2
        _show_usage_error(exc, _command_path(app, args, "fedqi-aggregator"))
        return int(exc.exit_code)  # type: ignore[attr-defined]
    except aborted:  # end of input at a prompt
        typer.echo("error: aborted", err=True)
        return ExitCode.FAILED
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (ExitCode.OK if code is None else ExitCode.FAILED)
    except AggregatorError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        if isinstance(exc, PortInUseError):
            return ExitCode.PORT_IN_USE
        # an argument naming something that does not exist (a kid, a practice) is bad input too
        bad = isinstance(exc, BadRequestError | NotFoundError)
        return ExitCode.BAD_INPUT if bad else ExitCode.FAILED
    finally:
        _ENVIRON.reset(token)
        if old_umask is not None:
            os.umask(old_umask)


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
    raise SystemExit(main())
