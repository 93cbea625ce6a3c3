"""The agent home on disk: the practice's Ed25519 signing keys and the pinned trust anchors.

Layout (directories 0700, secret files 0600, written atomically: temp file, fsync, rename)::

    <home>/agent.toml          the config file
    <home>/keys/<kid>.key      one Ed25519 private key per file (base64url of the 32 raw bytes)
    <home>/keys/active         the kid of the key that signs
    <home>/keys/pending        the kid of a rotation in progress (signed by old and new)
    <home>/trust.json          what enrolment pinned: the log key and the catalogue key
    <home>/catalogue.dsse.json the last catalogue envelope fetched (verified again on every load)
    <home>/outbox.sqlite       the durable, append-only outbox (agent.outbound.outbox)

Keys are never overwritten or deleted: a rotated-out key stays in ``keys/`` (it no longer signs).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.errors import ConfigError, first_problem
from agent.home.settings import no_home
from protocol.keys import SigningKey, VerifyingKey
from protocol.submission import Audience, Jwk, OdsCode

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600, durably and atomically; with ``exclusive``,
    refuse if ``path`` exists (a key is never overwritten)."""
    if exclusive and path.exists():
        raise ConfigError(f"{path} already exists; refusing to overwrite it")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if path appeared meanwhile
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory to fsync it; NTFS journals renames
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Keystore:
    """The practice's signing keys in ``<home>/keys``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.dir = home / "keys"

    def _key_path(self, kid: str) -> Path:
        return self.dir / f"{kid}.key"

    def has_active(self) -> bool:
        return (self.dir / "active").exists()

    def create(self) -> SigningKey:
        """Generate the agent's first key; refuses if one exists."""
        if self.has_active():
            raise ConfigError(
                f"{self.dir / 'active'} exists: this agent home already has a key; "
                "refusing to overwrite it (use rotate-key to replace a key)"
            )
        ensure_private_dir(self.home)
        ensure_private_dir(self.dir)
        key = SigningKey.generate()
        self._store(key)
        write_private(self.dir / "active", key.kid.encode(), exclusive=True)
        return key

    def _store(self, key: SigningKey) -> None:
        raw = base64.urlsafe_b64encode(key.private_bytes()).rstrip(b"=") + b"\n"
        write_private(self._key_path(key.kid), raw, exclusive=True)

    def load(self, kid: str) -> SigningKey:
        path = self._key_path(kid)
        try:
            text = path.read_text(encoding="ascii").strip()
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            key = SigningKey.from_private_bytes(raw)
        except FileNotFoundError:
            raise ConfigError(f"{path}: key file is missing") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read the key: {exc}") from None
        if key.kid != kid:
            raise ConfigError(f"{path}: the key in the file has kid {key.kid}, not {kid}")
        mode = path.stat().st_mode & 0o777
        # POSIX modes only: on Windows the agent home's ACL (ProgramData, service account) is
        # what protects the key, and st_mode does not reflect it.
        if os.name == "posix" and mode & 0o077:
            raise ConfigError(
                f"{path}: key file mode is {mode:o}; it must be readable by its owner only "
                "(chmod 600)"
            )
        return key

    def active(self) -> SigningKey:
        pointer = self.dir / "active"
        if not pointer.exists():
            raise ConfigError(f"no signing key in {self.dir}: run `fedqi-agent init` first")
        return self.load(pointer.read_text(encoding="ascii").strip())

    def pending(self) -> SigningKey | None:
        pointer = self.dir / "pending"
        if not pointer.exists():
            return None
        return self.load(pointer.read_text(encoding="ascii").strip())

    def start_rotation(self) -> SigningKey:
        """The new key of a rotation: the pending one if a rotation was interrupted, so a retry
        resends the identical stored message."""
        pending = self.pending()
        if pending is not None:
            return pending
        key = SigningKey.generate()
        self._store(key)
        write_private(self.dir / "pending", key.kid.encode())
        return key

    def finish_rotation(self) -> SigningKey:
        pending = self.pending()
        if pending is None:
            raise ConfigError("no key rotation is in progress")
        write_private(self.dir / "active", pending.kid.encode())
        (self.dir / "pending").unlink()
        _fsync_dir(self.dir)
        return pending

    def kids(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.key"))


class PinnedKey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str  # the C2SP key name for a log key; a label for the catalogue key
    jwk: Jwk

    def verifying_key(self) -> VerifyingKey:
        return VerifyingKey.from_jwk(self.jwk)


class Trust(BaseModel):
    """What enrolment pinned. Everything the aggregator says later is checked against it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    aud: Audience
    practice: OdsCode
    aggregator_url: str
    log_origin: str
    log_key: PinnedKey
    catalogue_key: PinnedKey | None = None


TRUST_FILE = "trust.json"


def load_trust(home: Path) -> Trust:
    path = home / TRUST_FILE
    if not home.is_dir():
        raise no_home(home)
    if not path.exists():
        raise ConfigError(f"{path} is missing: this agent is not enrolled; run `fedqi-agent enrol`")
    try:
        return Trust.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise ConfigError(f"{path}: unreadable trust anchors: {first_problem(exc)}") from None


def load_trust_matching(home: Path, practice: str | None, aud: str | None) -> Trust:
    """The pinned trust, refusing a config that names another practice or network than the one
    this agent enrolled as (a copied config would otherwise sign for the wrong practice)."""
    trust = load_trust(home)
    for name, configured, enrolled in (
        ("practice", practice, trust.practice),
        ("aud", aud, trust.aud),
    ):
        if configured is not None and configured != enrolled:
            raise ConfigError(
                f"setting {name!r} is {configured!r} but this agent enrolled as {enrolled!r} "
                f"({home / TRUST_FILE})"
            )
    return trust


def save_trust(home: Path, trust: Trust) -> None:
    data = json.dumps(trust.model_dump(mode="json"), indent=2, sort_keys=True).encode()
    write_private(home / TRUST_FILE, data + b"\n")
