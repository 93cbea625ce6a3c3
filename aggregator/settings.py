"""The aggregator's settings, declared once as data.

Sources, highest priority first: values passed to :func:`get_settings` (the CLI's options),
environment variables ``FEDQI_AGGREGATOR_<FIELD>``, secret files in ``secrets_dir`` (one file per
field, named like the environment variable), then a TOML file (``--config`` or
``FEDQI_AGGREGATOR_CONFIG``). Unknown keys in the TOML file and ``FEDQI_AGGREGATOR_*`` variables
that name no setting are errors, so a typo fails loudly; secret files that name no setting are
not read (a secrets directory may hold other services' secrets).

The environment is the one :func:`get_settings` is handed (``environ``; the process's own by
default): the command line passes its caller's down, and nothing changes ``os.environ`` to pass
settings within a process. One :class:`Settings` object is then passed down to everything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import BadRequestError, ConfigError

DEFAULT_DB = "sqlite:///fedqi-aggregator.db"
MAX_BODY_BYTES = 256 * 1024
#: The size peer groups' bands: under 5,000, 5,000-9,999, 10,000-14,999, 15,000 and over.
SIZE_BAND_EDGES = (5000, 10000, 15000)
MIN_PEERS_PER_BAND = 3


def check_size_band_edges(edges: Iterable[int]) -> tuple[int, ...]:
    """``edges`` as a tuple if they make bands: whole list sizes of at least 1, each above the
    one before (a repeated or falling edge would make bands overlap or leave one empty)."""
    out = tuple(edges)
    for e in out:
        if isinstance(e, bool) or not isinstance(e, int) or e < 1:
            raise ValueError(f"a band edge is a list size of at least 1, got {e!r}")
    for a, b in zip(out, out[1:], strict=False):
        if b <= a:
            raise ValueError(
                f"band edges must be ascending with no repeats (bands may not overlap): "
                f"{b} follows {a} in {list(out)}"
            )
    return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FEDQI_AGGREGATOR_", extra="forbid", frozen=True, case_sensitive=False
    )

    db: str = Field(DEFAULT_DB, description="SQLAlchemy database URL (SQLite file or PostgreSQL)")
    key_dir: Path = Field(
        Path("aggregator-keys"), description="directory of the log and catalogue signing keys"
    )
    host: str = Field("127.0.0.1", description="address `serve` listens on")
    port: int = Field(8400, ge=1, le=65535, description="port `serve` listens on")
    forwarded_allow_ips: str = Field(
        "127.0.0.1,::1",
        min_length=1,
        description="addresses of the reverse proxies whose X-Forwarded-For/-Proto `serve` "
        "trusts (comma-separated, or * where only the proxy can reach the aggregator)",
    )
    max_body_bytes: int = Field(
        MAX_BODY_BYTES, ge=1024, le=16 * 1024 * 1024, description="request body cap"
    )
    iat_future_seconds: int = Field(
        300, ge=0, description="how far in the future a message's iat may be"
    )
    iat_past_seconds: int = Field(7 * 86400, ge=0, description="how old a message's iat may be")
    enrol_token_hours: int = Field(
        72, ge=1, le=24 * 90, description="default enrolment token lifetime"
    )
    session_hours: int = Field(
        12,
        ge=1,
        le=24 * 30,
        description="dashboard sign-in lifetime (never beyond the API token's own expiry)",
    )
    pseudonym_secret: SecretStr | None = Field(
        None, description="HMAC secret for peer pseudonyms; default: key_dir/pseudonym.secret"
    )
    log_level: str = Field("info", description="uvicorn log level")
    # The peer groups' list-size bands (docs/aggregator.md, "Peer-group bands").
    size_band_edges: tuple[int, ...] = Field(
        SIZE_BAND_EDGES,
        description="list sizes where one size peer-group band ends and the next begins, ascending",
    )
    min_peers_per_band: int = Field(
        MIN_PEERS_PER_BAND,
        ge=1,
        description="peers each list-size band of a practice's view must hold (bands merge until they do)",
    )
    # What the network fills in for its IG pack (`ig-pack`); "to be completed" until set.
    ig_controller: str = Field("", max_length=500, description="IG pack: the data controller(s)")
    ig_lawful_basis: str = Field(
        "", max_length=2000, description="IG pack: the lawful basis (UK GDPR Art. 6 and 9)"
    )
    ig_dpo_contact: str = Field(
        "", max_length=500, description="IG pack: the data protection officer's contact"
    )
    ig_retention: str = Field(
        "", max_length=2000, description="IG pack: how long stored counts and envelopes are kept"
    )

    # Set per instance (from get_settings), never from the environment itself.
    config_file: Path | None = Field(None, exclude=True, description="TOML settings file")

    @field_validator("db")
    @classmethod
    def _db_kind(cls, value: str) -> str:
        """A SQLite file's path, or a ``sqlite://`` or ``postgresql://`` URL (a driver may follow
        ``+``). Any other URL is refused here, with where it came from (an option: exit 2; the
        environment or the file: exit 1), not later as the database is first opened."""
        if "://" not in value:
            return value
        scheme = value.split("://", 1)[0].split("+", 1)[0].lower()
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(
                f"{value.split('://', 1)[0]}:// is not a supported database: a SQLite file's "
                "path, or a sqlite:// or postgresql:// URL"
            )
        return value

    @field_validator("size_band_edges", mode="before")
    @classmethod
    def _edges_from_text(cls, value: Any) -> Any:
        """An environment variable or secret file gives text: ``5000,10000,15000`` (or a JSON
        list); TOML gives a list."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError(f"not a list of list sizes: {value!r}") from None
        parts = [p.strip() for p in text.split(",")] if text else []
        if not all(p.isdigit() for p in parts):
            raise ValueError(f"not a comma-separated list of list sizes: {value!r}")
        return [int(p) for p in parts]

    @field_validator("size_band_edges")
    @classmethod
    def _edges_ascending(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return check_size_band_edges(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml, environ = _CALL.get()
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            _EnvironSource(settings_cls, environ),
            file_secret_settings,
        ]
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


PREFIX = "FEDQI_AGGREGATOR_"
# pydantic-settings builds sources from class-level config; the TOML path and the environment
# are per call (a context variable: per thread and per task, never shared between callers).
_CALL: ContextVar[tuple[Path | None, Mapping[str, str]]] = ContextVar(
    "fedqi_aggregator_settings_call", default=(None, {})
)


class _EnvironSource(PydanticBaseSettingsSource):
    """``FEDQI_AGGREGATOR_<FIELD>`` variables of the environment handed to get_settings (names
    case-insensitive, as pydantic-settings' own environment source)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        fields = {name for name in settings_cls.model_fields if name != "config_file"}
        self._values = {
            key[len(PREFIX) :].lower(): value
            for key, value in environ.items()
            if key.upper().startswith(PREFIX) and key[len(PREFIX) :].lower() in fields
        }

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


#: Variables with the prefix that name no setting but where the settings come from.
_META_VARIABLES = frozenset({"CONFIG", "SECRETS_DIR"})


def _refuse_unknown_variables(env: Mapping[str, str]) -> None:
    """A ``FEDQI_AGGREGATOR_*`` variable that names no setting is an error, as an unknown key in
    the TOML file is: a misspelt ``FEDQI_AGGREGATOR_PROT`` would otherwise be ignored and the
    default used. (Secret files are different: a secrets directory such as ``/run/secrets`` may
    hold other services' secrets, so files that name no setting there are not read.)"""
    fields = {name for name in Settings.model_fields if name != "config_file"}
    unknown = sorted(
        key
        for key in env
        if key.upper().startswith(PREFIX)
        and key[len(PREFIX) :].upper() not in _META_VARIABLES
        and key[len(PREFIX) :].lower() not in fields
    )
    if unknown:
        known = ", ".join(PREFIX + name.upper() for name in sorted(fields))
        raise ConfigError(
            f"unknown setting {unknown[0]} in the environment (known: {known}, and "
            f"{PREFIX}CONFIG, {PREFIX}SECRETS_DIR)"
        )


#: Settings the command line sets with an option of the same name.
_OPTIONS = frozenset({"db", "key_dir", "host", "port"})


def _in_words(err: Any) -> str:
    """A validation error's message without the validator's own words ("Value error, ",
    "Input should be a valid integer, unable to parse string as an integer")."""
    kind = err["type"]
    if kind == "int_parsing":
        return "not a whole number"
    if kind in ("float_parsing", "decimal_parsing"):
        return "not a number"
    if kind == "bool_parsing":
        return "not true or false"
    return str(err["msg"]).removeprefix("Value error, ")


def _source_of(
    loc: Sequence[Any],
    given: Mapping[str, Any],
    env: Mapping[str, str],
    secrets_dir: Path | str | None,
    toml: Path | None,
) -> str:
    """Where a bad value came from, by the sources' order: an option, the environment, a secret
    file, the TOML file."""
    if not loc:
        return f" (in {toml})" if toml else ""
    field = str(loc[0])
    variable = PREFIX + field.upper()
    if field in given:  # the command line's options; other values given in code are not named
        return f" (--{field.replace('_', '-')})" if field in _OPTIONS else ""
    if any(k.upper() == variable for k in env):
        return f" (environment variable {variable})"
    if secrets_dir is not None and (Path(secrets_dir) / variable).exists():
        return f" (secret file {Path(secrets_dir) / variable})"
    return f" (in {toml})" if toml else ""


def get_settings(
    config_file: Path | str | None = None,
    *,
    secrets_dir: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings (never at import time). ``overrides`` win over every other source;
    ``None`` values in them are ignored so CLI options left unset fall through. ``environ``: the
    environment to read (default: the process's)."""
    env = os.environ if environ is None else environ
    named = config_file is not None  # by the caller (the command line's --config)
    if config_file is None and env.get("FEDQI_AGGREGATOR_CONFIG"):
        config_file = env["FEDQI_AGGREGATOR_CONFIG"]
    path = Path(config_file) if config_file is not None else None
    if path is not None and not path.is_file():
        if named:  # a bad argument (exit 2), as for any option naming a missing file
            raise BadRequestError(f"--config {path}: no such settings file")
        raise ConfigError(
            f"settings file {path} does not exist (environment variable FEDQI_AGGREGATOR_CONFIG)"
        )
    if secrets_dir is None and env.get("FEDQI_AGGREGATOR_SECRETS_DIR"):
        secrets_dir = env["FEDQI_AGGREGATOR_SECRETS_DIR"]
    if secrets_dir is not None and not Path(secrets_dir).is_dir():
        raise ConfigError(f"secrets directory {secrets_dir} does not exist")
    _refuse_unknown_variables(env)
    values = {k: v for k, v in overrides.items() if v is not None}
    token = _CALL.set((path, dict(env)))
    try:
        return Settings(config_file=path, _secrets_dir=secrets_dir, **values)
    except ValidationError as exc:
        errors = exc.errors()
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {_in_words(e)}"
            f"{_source_of(e['loc'], values, env, secrets_dir, path)}"
            for e in errors
        )
        # Every bad value an option of the command line's: a bad argument (exit 2), as the
        # exit-code table says; a bad value from the environment, a secret or the file is
        # configuration (exit 1).
        from_options = all(
            e["loc"] and str(e["loc"][0]) in values and str(e["loc"][0]) in _OPTIONS for e in errors
        )
        error = BadRequestError if from_options else ConfigError
        raise error(f"invalid aggregator settings: {problems}") from None
    except Exception as exc:  # a TOML syntax error surfaces from the source
        raise ConfigError(
            f"cannot read aggregator settings{' from ' + str(path) if path else ''}: {exc}"
        ) from None
    finally:
        _CALL.reset(token)
