"""Which catalogue the agent computes: a local file, or the network's signed one.

The network's catalogue is fetched from the aggregator as a DSSE envelope (kind ``catalogue``),
verified with the catalogue key pinned at enrolment, and cached in the agent home; the cache is
verified again on every load, so a file edited on disk is refused, not trusted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.errors import ConfigError, UnverifiedAnswerError
from agent.home.keystore import TRUST_FILE, Trust, load_trust, write_private
from agent.home.settings import AgentSettings
from protocol.catalogue import Catalogue
from protocol.envelope import Envelope, verify_envelope
from protocol.errors import ProtocolError

CACHE_FILE = "catalogue.dsse.json"


def load_catalogue(settings: AgentSettings, *, client: Any = None) -> Catalogue:
    """The catalogue to compute.

    * ``catalogue.path`` set: that file (the practice chose it).
    * enrolled: the network's catalogue; fetched fresh when ``client`` is given (falling back to
      the verified cache if the aggregator cannot be reached), else from the cache.
    * neither: the default catalogue shipped with the agent (for preview / explain before
      enrolment), in an agent home that exists: with none, the one message saying so
      (``no_home``), not a catalogue the home was never given.
    """
    if settings.catalogue.path is not None:
        return read_catalogue_file(settings.catalogue.path)
    settings.require_home()
    if not (settings.home / TRUST_FILE).exists():
        from agent.library import load_default_catalogue

        return load_default_catalogue()
    trust = load_trust(settings.home)
    cache = settings.home / CACHE_FILE
    if client is not None:
        from agent.errors import TransportError

        try:
            data = client.get_bytes("/v1/catalogue", tries=first_fetch_tries(settings))
        except TransportError:
            if not cache.exists():
                raise
        else:
            catalogue = verify_catalogue(data, trust, where="the aggregator's /v1/catalogue")
            write_private(cache, data)
            return catalogue
    if not cache.exists():
        raise ConfigError(
            f"{cache} is missing: the network catalogue has not been fetched yet "
            "(run `fedqi-agent enrol` or any command that contacts the aggregator)"
        )
    return verify_catalogue(cache.read_bytes(), trust, where=str(cache))


def first_fetch_tries(settings: AgentSettings) -> int | None:
    """The tries of a command's first request to the aggregator where that request stands for
    the network catalogue's fetch: with a verified cache to fall back on, one (an aggregator
    that is down is told at once, and the submission is signed, stored and queued without
    waiting through retries); else (no cache, or a ``catalogue.path`` that is not fetched at
    all) None, the configured retries."""
    if settings.catalogue.path is None and (settings.home / CACHE_FILE).exists():
        return 1
    return None


def verify_catalogue(data: bytes, trust: Trust, *, where: str) -> Catalogue:
    if trust.catalogue_key is None:
        raise ConfigError("no catalogue key is pinned in trust.json: enrol the agent again")
    try:
        env = Envelope.from_bytes(data)
        payload = verify_envelope(env, [trust.catalogue_key.verifying_key()], kind="catalogue")
    except ProtocolError as exc:
        raise UnverifiedAnswerError(
            f"{where}: the catalogue does not verify against the pinned catalogue key "
            f"{trust.catalogue_key.name!r}: {exc}"
        ) from None
    try:
        return Catalogue.from_bytes(payload)
    except ProtocolError as exc:
        # Signed, but not a catalogue this agent may compute from (not canonical, or e.g. a
        # codelist whose codes do not match its codes_sha256): nothing is computed from it.
        raise UnverifiedAnswerError(
            f"{where}: the signed catalogue is refused, nothing is computed from it: {exc}"
        ) from None


def read_catalogue_file(path: Path) -> Catalogue:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Catalogue.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"catalogue.path {path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"catalogue.path {path}: not JSON: line {exc.lineno}: {exc.msg}"
        ) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"catalogue.path {path}: {loc}: {err['msg']}") from None
