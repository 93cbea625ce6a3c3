"""What a running aggregator holds: settings, database, signing keys, caches, clock."""

from __future__ import annotations

import datetime as dt
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request
from sqlalchemy import select

from protocol.keys import VerifyingKey

from . import keyfiles
from .benchmarks.stats import PeerBands
from .catalogues.service import CatalogueCache
from .db.migrate import check_migrated
from .db.models import Network
from .db.session import Database
from .errors import ConfigError
from .log.service import LogSigner
from .settings import Settings
from .submissions.commit import Committer
from .submissions.service import KeyCache

Clock = Callable[[], float]


def tune_gc() -> None:
    """Garbage-collector settings for a long-running server process, once it has started.

    Verifying a submission allocates thousands of short-lived objects (parsed JSON, hundreds of
    cell models), and every collection they trigger also walked the whole start-up heap
    (SQLAlchemy, pydantic schemas): about half of a submission's parse-and-validate CPU. Frozen,
    the start-up objects are skipped; a larger first-generation threshold collects less often.
    Serve processes (and bench/ingest.py's workers) call this; tests and the CLI do not."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    signer: LogSigner
    network_name: str
    catalogue_key: VerifyingKey
    pseudonym_secret: bytes
    clock: Clock = time.time
    catalogues: CatalogueCache = field(default_factory=CatalogueCache)
    keys: KeyCache = field(default_factory=KeyCache)
    committer: Committer = field(init=False)
    #: The peer groups' list-size bands, from the settings (every view is handed these).
    peer_bands: PeerBands = field(init=False)

    def __post_init__(self) -> None:
        self.peer_bands = PeerBands(self.settings.size_band_edges, self.settings.min_peers_per_band)
        url = self.db.engine.url
        lock_path = None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            lock_path = f"{url.database}-sequencer.lock"
        self.committer = Committer(self.db.session, self.signer, lock_path=lock_path)
        # The benchmark refresh checks each stored row's verdict with it (aggregator.log.verdict):
        # carried by every session of this database, held in memory only.
        self.db.sessionmaker.configure(info={"verdict_key": self.signer.verdict_key})

    def warm(self) -> None:
        """Load what every submission's verification needs before the first one arrives: the
        active practice keys and the published catalogues. Serve processes (and
        bench/ingest.py's workers) call this at start; tests and the CLI do not."""
        with self.db.read() as session:
            self.keys.load_active(session)
            self.catalogues.load_published(session)

    @property
    def aud(self) -> str:
        return self.signer.aud

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), tz=dt.UTC)

    @classmethod
    def load(
        cls, settings: Settings, *, clock: Clock = time.time, db: Database | None = None
    ) -> Runtime:
        """Open the database (it must be migrated and initialised) and load the keys."""
        db = db or Database(settings.db)
        check_migrated(db)
        with db.read() as session:
            network = session.scalars(select(Network)).first()
        if network is None:
            raise ConfigError(
                f"the aggregator database is not initialised: run `fedqi-aggregator init --db {settings.db} ...`"
            )
        log_key = keyfiles.load_log_key(settings.key_dir)
        if log_key.public.public_bytes() != bytes(network.log_public_key):
            raise ConfigError(
                f"the log key in {settings.key_dir} is not the one this network was initialised with"
            )
        if settings.pseudonym_secret is not None:
            secret = settings.pseudonym_secret.get_secret_value().encode()
        else:
            secret = keyfiles.load_pseudonym_secret(settings.key_dir)
        return cls(
            settings=settings,
            db=db,
            signer=LogSigner(
                origin=network.origin, key_name=network.log_key_name, key=log_key, aud=network.aud
            ),
            network_name=network.name,
            catalogue_key=VerifyingKey.from_public_bytes(bytes(network.catalogue_public_key)),
            pseudonym_secret=secret,
            clock=clock,
        )


def get_runtime(request: Request) -> Runtime:
    """The FastAPI dependency every router reads the running aggregator through."""
    runtime: Runtime = request.app.state.runtime
    return runtime
