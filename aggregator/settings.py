"""The aggregator's settings, declared once as data.

Sources, highest priority first: values passed to :func:`get_settings` (the CLI's options),
environment variables ``FEDQI_AGGREGATOR_<FIELD>``, secret files in ``secrets_dir`` (one file per
field, named like the environment variable), then a TOML file (``--config`` or
``FEDQI_AGGREGATOR_CONFIG``). Unknown keys are errors, so a typo fails loudly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError

DEFAULT_DB = "sqlite:///fedqi-aggregator.db"
MAX_BODY_BYTES = 256 * 1024


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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings, file_secret_settings]
        toml = _TOML_FILE.get("path")
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


# pydantic-settings builds sources from class-level config; the TOML path is per call.
_TOML_FILE: dict[str, Path | None] = {"path": None}


def get_settings(
    config_file: Path | str | None = None,
    *,
    secrets_dir: Path | str | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings (never at import time). ``overrides`` win over every other source;
    ``None`` values in them are ignored so CLI options left unset fall through."""
    if config_file is None and os.environ.get("FEDQI_AGGREGATOR_CONFIG"):
        config_file = os.environ["FEDQI_AGGREGATOR_CONFIG"]
    path = Path(config_file) if config_file is not None else None
    if path is not None and not path.is_file():
        raise ConfigError(f"settings file {path} does not exist")
    if secrets_dir is None and os.environ.get("FEDQI_AGGREGATOR_SECRETS_DIR"):
        secrets_dir = os.environ["FEDQI_AGGREGATOR_SECRETS_DIR"]
    if secrets_dir is not None and not Path(secrets_dir).is_dir():
        raise ConfigError(f"secrets directory {secrets_dir} does not exist")
    values = {k: v for k, v in overrides.items() if v is not None}
    _TOML_FILE["path"] = path
    try:
        return Settings(config_file=path, _secrets_dir=secrets_dir, **values)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid aggregator settings{where}: {problems}") from None
    except Exception as exc:  # a TOML syntax error surfaces from the source
        raise ConfigError(
            f"cannot read aggregator settings{' from ' + str(path) if path else ''}: {exc}"
        ) from None
    finally:
        _TOML_FILE["path"] = None
