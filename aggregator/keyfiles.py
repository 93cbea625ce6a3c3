"""The aggregator's secrets on disk: the log key, the catalogue signing key and the pseudonym
secret, one base64 line per file, mode 0600 in a 0700 directory."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from protocol.keys import SigningKey

from .errors import ConfigError

LOG_KEY = "log.key"
CATALOGUE_KEY = "catalogue.key"
PSEUDONYM_SECRET = "pseudonym.secret"


def _write_secret(path: Path, raw: bytes) -> None:
    if path.exists():
        raise ConfigError(f"{path} already exists; refusing to overwrite a key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(raw).decode("ascii") + "\n")


def _read_secret(path: Path, size: int | None) -> bytes:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"{path} is missing: run `fedqi-aggregator init` first (or set key_dir)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise ConfigError(f"{path} is not a base64 key file") from None
    if size is not None and len(raw) != size:
        raise ConfigError(f"{path} holds {len(raw)} bytes, expected {size}")
    return raw


def generate(key_dir: Path) -> tuple[SigningKey, SigningKey]:
    """Create the log key, catalogue key and pseudonym secret; never overwrite one."""
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in (LOG_KEY, CATALOGUE_KEY, PSEUDONYM_SECRET):
        if (key_dir / name).exists():
            raise ConfigError(f"{key_dir / name} already exists; refusing to overwrite a key")
    log_key, cat_key = SigningKey.generate(), SigningKey.generate()
    _write_secret(key_dir / LOG_KEY, log_key.private_bytes())
    _write_secret(key_dir / CATALOGUE_KEY, cat_key.private_bytes())
    _write_secret(key_dir / PSEUDONYM_SECRET, secrets.token_bytes(32))
    return log_key, cat_key


def load_log_key(key_dir: Path) -> SigningKey:
    return SigningKey.from_private_bytes(_read_secret(key_dir / LOG_KEY, 32))


def load_catalogue_key(key_dir: Path) -> SigningKey:
    return SigningKey.from_private_bytes(_read_secret(key_dir / CATALOGUE_KEY, 32))


def load_pseudonym_secret(key_dir: Path) -> bytes:
    return _read_secret(key_dir / PSEUDONYM_SECRET, None)
