"""The agent's configuration: declared once, as data.

Where a setting comes from, highest priority first: keyword arguments to :func:`get_settings`,
environment variables (``FEDQI_AGENT_<NAME>``, nested with ``__`` as in
``FEDQI_AGENT_SOURCE__URL``), then the TOML file ``agent.toml`` in the agent home. Unknown keys
fail loudly in every place (a typo in a practice's config must never be silently ignored), and
every error names the key and the file or variable it came from.

The agent home (``--home``, else ``FEDQI_AGENT_HOME``, else ``~/.fedqi-agent``) holds the config
file, the keys, the pinned trust anchors, the cached catalogue and the outbox.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from agent.errors import ConfigError, hide_password
from protocol.catalogue import DisclosurePolicy
from protocol.submission import Audience, OdsCode

CONFIG_FILE = "agent.toml"
ENV_PREFIX = "FEDQI_AGENT_"
HOME_ENV = "FEDQI_AGENT_HOME"
PERIOD_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
#: The earliest year a period may be in: one before it is a typo (and the catalogue's look-backs,
#: decades before a period's end, would reach before the calendar's year 1).
FIRST_PERIOD_YEAR = 1900
LOOPBACK_NAMES = {"localhost"}


#: The outbox's file in an agent home (agent.outbound.outbox opens it; defined here, the inner
#: layer, so that settings can check a previous home holds one).
OUTBOX_FILE = "outbox.sqlite"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _no_control_characters(value: Any) -> Any:
    """A path or URL setting holding a control character (a NUL, which no file name can
    hold, from "\\u0000" in agent.toml or JSON) is refused as the setting is read, not by the
    operating system at the first command that opens it."""
    text = str(value) if isinstance(value, str | Path) else None
    if text is not None and any(not c.isprintable() and not c.isspace() for c in text):
        raise ValueError("holds a control character (a NUL or the like), which no path holds")
    return value


class SourceSettings(_Section):
    """Where the practice's records are read from."""

    kind: Literal["sqlite", "duckdb", "postgresql", "csv", "fhir", "omop"] | None = Field(
        default=None,
        description="where the records came from, for the provenance sent with each submission "
        "(csv / fhir extracts are loaded into a practice database first); omop: source.url is "
        "an OMOP CDM database, read in place through views; default: the database's own kind",
    )
    omop_codes: Literal["standard", "source", "concept_id"] = Field(
        default="standard",
        description="kind omop only: which OMOP codes rules match (standard concepts' codes, "
        "source concepts' codes, or concept ids alone)",
    )
    url: str | None = Field(
        default=None,
        description="the practice database: a URL (sqlite:///..., duckdb:///..., "
        "postgresql://...) or a path to a SQLite / DuckDB file; a relative path, also as a "
        "sqlite:/// or duckdb:/// URL's database, is relative to the agent home",
    )

    @field_validator("url")
    @classmethod
    def _url_has_a_numeric_port(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("empty: give a path or a URL, or leave the setting out")
        _no_control_characters(value)
        # A URL whose port is not a number would otherwise reach the driver's parser, which
        # raises a bare ValueError at the first command that reads the source.
        if value and "://" in value:
            try:
                _ = urlsplit(value).port  # raises ValueError for a port that is no number
            except ValueError:
                raise ValueError(
                    f"{hide_password(value)!r}: the port after the host is not a number"
                ) from None
        return value


class CatalogueSettings(_Section):
    """Which indicator catalogue to compute."""

    path: Path | None = Field(
        default=None,
        description="a local catalogue JSON file; unset: the catalogue the aggregator publishes, "
        "verified with the pinned catalogue key and cached in the agent home",
    )

    _path = field_validator("path")(_no_control_characters)


class TransportSettings(_Section):
    """How the agent talks to the aggregator."""

    connect_timeout: float = Field(default=10.0, gt=0, le=300, description="seconds to connect")
    read_timeout: float = Field(
        default=30.0, gt=0, le=600, description="seconds to wait for an answer"
    )
    retries: int = Field(
        default=4, ge=0, le=20, description="resends after a network failure or 5xx"
    )
    backoff: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="first wait between tries, doubled each retry (seconds)",
    )
    background_resend: bool = Field(
        default=True,
        description="when submit or approve cannot reach the aggregator, keep resending the "
        "queued message from a background process",
    )
    background_seconds: int = Field(
        default=3600,
        ge=0,
        le=7 * 24 * 3600,
        description="how long the background resend keeps trying (seconds)",
    )


class AgentSettings(BaseSettings):
    """Every setting of the agent. See docs/configuration.md (a test keeps it complete)."""

    # The environment get_settings was handed (None: os.environ), set on a per-call subclass.
    invocation_environ: ClassVar[Mapping[str, str] | None] = None

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: Path = Field(description="the agent home directory (set by --home or FEDQI_AGENT_HOME)")
    practice: OdsCode | None = Field(default=None, description="the practice's ODS code")
    aud: Audience | None = Field(
        default=None, description="the network's audience name, as the aggregator's admin gives it"
    )
    aggregator_url: str | None = Field(
        default=None,
        description="the aggregator's base URL; https://, or http:// for a loopback host only",
    )
    ca_bundle: Path | None = Field(
        default=None,
        description="PEM file of CA certificates to verify the aggregator's TLS certificate with "
        "(default: the system's trust store); TLS is always verified",
    )
    audit_token_file: Path | None = Field(
        default=None,
        description="a file holding the API token of the practice's IG officer (owner-only "
        "mode); with it `audit verify` also checks every leaf's full data and the envelope bytes "
        "the aggregator stores",
    )
    visibility: Literal["named", "pseudonymised", "totals_only"] = Field(
        default="named",
        description="how the network may show this practice's values: named (to the network "
        "lead and admin), pseudonymised (to everyone), totals_only (only inside network totals); "
        "sent in every submission, in effect from the next one",
    )
    release: Literal["auto", "hold"] = Field(
        default="auto",
        description="auto: send when every check passes; hold: wait in the approval queue",
    )
    guard: Literal["on", "off"] = Field(
        default="on",
        description="on: before a submission is signed, the disclosure guard audits it with the "
        "catalogue's linked tables and this practice's earlier releases, withholds more counts "
        "where a small count could be narrowed, or holds it for approval with the reason "
        "(docs/disclosure.md); off: the per-table disclosure policy only",
    )
    previous_homes: tuple[Path, ...] = Field(
        default=(),
        description="agent homes this practice sent from before (kept after a re-enrolment for a "
        "lost key, or a reinstall), only read: what they released counts as earlier releases "
        "for the disclosure guard, as this home's own do, and the months they had accepted as "
        "submitted, so `run` does not send them again (docs/operations.md section 6)",
    )
    first_period: str | None = Field(
        default=None,
        description="YYYY-MM: the first period `run` submits when nothing has been sent yet, "
        "from this home or one in previous_homes (default: the last complete month), and the "
        "earliest `submit` and `run` send (unset: 24 months back; docs/agent.md)",
    )
    disclosure: DisclosurePolicy | None = Field(
        default=None,
        description="an optional stricter disclosure policy; it must tighten the network's",
    )
    source: SourceSettings = Field(default_factory=SourceSettings)
    catalogue: CatalogueSettings = Field(default_factory=CatalogueSettings)
    transport: TransportSettings = Field(default_factory=TransportSettings)

    @field_validator("aggregator_url")
    @classmethod
    def _url_is_safe(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_aggregator_url(value)
        return value.rstrip("/")

    _paths = field_validator("ca_bundle", "audit_token_file")(_no_control_characters)

    @field_validator("previous_homes")
    @classmethod
    def _previous_homes_hold_outboxes(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        for home in value:
            _no_control_characters(home)
            if not (home / OUTBOX_FILE).is_file():
                raise ValueError(f"{home} holds no outbox ({OUTBOX_FILE}): not an agent home")
        return value

    @field_validator("first_period")
    @classmethod
    def _period_format(cls, value: str | None) -> str | None:
        if value is not None:
            if not PERIOD_RE.match(value):
                raise ValueError(f"{value!r} is not a period of the form YYYY-MM")
            if int(value[:4]) < FIRST_PERIOD_YEAR:
                raise ValueError(f"{value!r} is before {FIRST_PERIOD_YEAR} (a typo?)")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = getattr(settings_cls, "invocation_environ", None)
        if environ is not None:  # the environment get_settings was handed, not os.environ
            env_settings = _EnvironSource(settings_cls, environ)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @property
    def config_file(self) -> Path:
        return self.home / CONFIG_FILE

    def require_home(self) -> None:
        """Fail with the one message (:func:`no_home`) if the agent home is not a directory."""
        if not self.home.is_dir():
            raise no_home(self.home)

    def require(self, *names: str) -> None:
        """Fail with one line naming the first missing setting the command needs."""
        for name in names:
            value: Any = self
            for part in name.split("."):
                value = getattr(value, part)
            if value is None:
                self.require_home()  # the likelier mistake: a wrong --home
                env = ENV_PREFIX + name.upper().replace(".", "__")
                raise ConfigError(
                    f"setting {name!r} is not set: put it in {self.config_file} or set {env}"
                )


def no_home(home: Path) -> ConfigError:
    """The one message for an agent home that is not there, whichever command or file meets
    it first (exit 3): the path, and what makes one. A file there is named as a file (init
    refuses to make a home over it)."""
    if home.exists():
        return ConfigError(
            f"{home} is not a directory, so not an agent home: pass the --home that "
            "`fedqi-agent init` made"
        )
    return ConfigError(
        f"there is no agent home at {home}: run `fedqi-agent init --home "
        f"{shlex.quote(str(home))}` to make one, or pass the --home that `fedqi-agent init` made"
    )


def check_aggregator_url(url: str) -> None:
    """https:// always; plain http:// only to a loopback host (tests, a local demo), because the
    payloads are signed but not encrypted and TLS is the only thing hiding them in transit. A
    port that is no number from 1 to 65535, a space or control character, and a user or
    password in the URL are refused here, as the setting is read, not by the HTTP client at the
    first request; no message prints a password."""
    shown = hide_password(url) if "@" in url else url
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"{shown!r} holds a space or a control character")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL"
        raise ValueError(f"{shown!r} is not a URL ({exc})") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{shown!r} is not an http(s) URL")
    try:
        port = parts.port  # ValueError: not a number, or not in 0-65535
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{shown!r}: the port after the host is not a number from 1 to 65535")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{shown!r}: a user or password in the URL is not used (the agent signs what it "
            "sends): remove it"
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            f"{shown!r}: plain http:// is allowed only for a loopback host (127.0.0.1, ::1, "
            "localhost); use https://"
        )


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of os.environ: the
    environment one invocation was handed (``agent.cli.main(argv, environ)``)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = dict(environ)  # set before the base class reads it
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self.case_sensitive:
            return dict(self._environ)
        return {k.lower(): v for k, v in self._environ.items()}


def resolve_home(home: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if home is not None:
        return Path(home).expanduser()
    if env.get(HOME_ENV):
        return Path(env[HOME_ENV]).expanduser()
    return Path("~/.fedqi-agent").expanduser()


def known_env_names() -> set[str]:
    """Every environment variable name the settings read."""
    names = {HOME_ENV}
    for name, field in AgentSettings.model_fields.items():
        names.add(ENV_PREFIX + name.upper())
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, _Section):
            names.update(f"{ENV_PREFIX}{name.upper()}__{sub.upper()}" for sub in ann.model_fields)
    return names


def setting_keys() -> list[str]:
    """Every setting as a dotted key (for the docs test and error hints)."""
    keys: list[str] = []
    for name, field in AgentSettings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, _Section):
            keys.extend(f"{name}.{sub}" for sub in ann.model_fields)
        else:
            keys.append(name)
    return keys


def get_settings(
    home: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> AgentSettings:
    """Build the settings from the agent home's config file and the environment."""
    env = dict(os.environ if environ is None else environ)
    home_path = resolve_home(home, env)
    config_file = home_path / CONFIG_FILE
    file_data = _read_toml(config_file)

    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known_env_names())
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]} in the environment (known: see docs/configuration.md)"
        )

    # One class per call: it carries this call's environment (and config file) to the sources.
    config = SettingsConfigDict(**AgentSettings.model_config)
    if file_data is not None:
        config["toml_file"] = config_file
    cls = type(
        "AgentSettings", (AgentSettings,), {"model_config": config, "invocation_environ": env}
    )
    try:
        settings: AgentSettings = cls(home=home_path, **overrides)
        return settings
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_file, file_data or {}, env, overrides)) from None
    except SettingsError as exc:  # an environment variable that is not the JSON it must be
        raise ConfigError(_not_json(exc, env)) from None


def _not_json(exc: SettingsError, env: Mapping[str, str]) -> str:
    """pydantic-settings' "error parsing value for field ..." as the setting and variable."""
    m = re.search(r'field "([^"]+)"', str(exc))
    name = m[1] if m else "(unknown)"
    var = ENV_PREFIX + name.upper()
    where = f"in environment variable {var}" if var in env else "in the environment"
    why = exc.__cause__ or exc.__context__
    detail = f" ({str(why).splitlines()[0]})" if why is not None and str(why) else ""
    form = (
        f"a JSON object, or one key at a time as {var}__KEY"
        if name in _SECTIONS
        else "a JSON list of paths"
        if name == "previous_homes"
        else "JSON"
    )
    return f"bad setting {name!r} {where}: not valid JSON{detail}; give it as {form}"


def _env_source(loc: list[str], env: Mapping[str, str]) -> str:
    """The environment variable a setting at ``loc`` came from: ``FEDQI_AGENT_SOURCE__URL``, or
    a shorter one whose JSON holds it (``FEDQI_AGENT_SOURCE='{"url": ...}'``,
    ``FEDQI_AGENT_PREVIOUS_HOMES='[...]'``); the first name if none is set (the caller then
    looks in the file)."""
    full = ENV_PREFIX + "__".join(p.upper() for p in loc)
    if full in env:
        return full
    for n in range(len(loc) - 1, 0, -1):
        var = ENV_PREFIX + "__".join(p.upper() for p in loc[:n])
        if var not in env:
            continue
        try:
            node: Any = json.loads(env[var])
        except ValueError:
            return var
        for part in loc[n:]:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                break
        else:
            return var
    return full


def _read_toml(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    if "home" in data:
        raise ConfigError(f"{path}: 'home' cannot be set in the config file (use --home)")
    return data


def _describe(
    exc: ValidationError,
    config_file: Path,
    file_data: dict[str, Any],
    env: Mapping[str, str],
    given: Mapping[str, Any] | None = None,
) -> str:
    """Every bad setting, each with where it came from, in one line ("; " between them), so
    that a file with two wrong values is corrected in one go."""
    return "; ".join(_describe_one(err, config_file, file_data, env, given) for err in exc.errors())


def _describe_one(
    err: Any,
    config_file: Path,
    file_data: dict[str, Any],
    env: Mapping[str, str],
    given: Mapping[str, Any] | None,
) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "(root)"
    msg = _in_words(key, err)
    env_name = _env_source(loc, env)
    node_given: Any = given or {}
    for part in loc:
        node_given = node_given.get(part) if isinstance(node_given, dict) else None
    if node_given is not None:  # a command's option (init's --practice, --source-url, ...)
        option = "--" + "-".join(loc).replace("_", "-")
        return f"bad value for {option}: {msg}"
    node: Any = file_data
    in_file = True
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            in_file = False
            break
    if env_name in env:
        where = f"in environment variable {env_name}"
    elif in_file:
        where = f"in {config_file}"
    else:
        where = f"(config file {config_file})"
    if err["type"] == "extra_forbidden":
        known = ", ".join(k for k in setting_keys() if k != "home")
        hint = ""
        top_level = [k for k in setting_keys() if "." not in k and k != "home"]
        if in_file and len(loc) == 2 and loc[1] in top_level:
            # TOML reads every line below a [table] header as that table's: a line appended
            # to a file that ends with [source] lands in source.
            hint = f": `{loc[1]}` is a top-level setting: put it above the first [table] line"
        return f"unknown setting {key!r} {where}{hint} (known settings: {known})"
    return f"bad setting {key!r} {where}: {msg}"


#: The settings that are tables (their environment variable is a JSON object).
_SECTIONS = ("source", "catalogue", "transport", "disclosure")

#: What a setting that does not match its pattern must look like, in words.
_PLAIN = {
    "practice": "a practice's ODS code is a capital letter and five digits, e.g. A81001",
    "aud": "a network's name is lower-case letters, digits, '.' and '-', starting with a "
    "letter or digit, at most 63 characters, e.g. north-pcn",
}


def _in_words(key: str, err: Any) -> str:
    """A validation error's message without the validator's own words ("Value error, ",
    "Input should be a valid integer, unable to parse string as an integer")."""
    kind = err["type"]
    if kind == "string_pattern_mismatch":
        return str(_PLAIN.get(key, err["msg"]))
    if kind == "string_type":
        return "not text (in the TOML file, in quotes)"
    if kind == "int_parsing":
        return "not a whole number"
    if kind in ("float_parsing", "decimal_parsing"):
        return "not a number"
    if kind == "bool_parsing":
        return "not true or false"
    return str(err["msg"]).removeprefix("Value error, ")
