"""Publishing catalogues and looking them up for ingestion."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from protocol.catalogue import Catalogue
from protocol.envelope import Envelope, sign_envelope
from protocol.keys import SigningKey

from ..db.models import Catalogue as CatalogueRow
from ..errors import BadRequestError, ConfigError, ConflictError, NotFoundError


def load_catalogue_file(path: Path | None) -> Catalogue:
    """The catalogue in ``path``, or the default one shipped in ``protocol/catalogues``."""
    if path is None:
        try:
            text = (
                resources.files("protocol.catalogues").joinpath("default.json").read_text("utf-8")
            )
        except FileNotFoundError:
            raise ConfigError(
                "the default catalogue protocol/catalogues/default.json is not installed; "
                "pass --catalogue FILE"
            ) from None
        where = "protocol/catalogues/default.json"
    else:
        try:
            text = path.read_text("utf-8")
        except OSError as exc:  # a file named on the command line: bad input, not configuration
            raise BadRequestError(f"cannot read catalogue {path}: {exc.strerror}") from None
        where = str(path)
    try:
        return Catalogue.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        error = ConfigError if path is None else BadRequestError
        raise error(f"catalogue {where} is invalid at {loc}: {err['msg']}") from None


def publish(
    session: Session, catalogue: Catalogue, key: SigningKey, now: dt.datetime
) -> CatalogueRow:
    """Sign and store a catalogue version (an id and version are published once)."""
    if session.get(CatalogueRow, (catalogue.id, catalogue.version)) is not None:
        raise ConflictError(
            f"catalogue {catalogue.id} version {catalogue.version} is already published",
            code="catalogue-exists",
        )
    env = sign_envelope("catalogue", catalogue.to_bytes(), [key])
    row = CatalogueRow(
        id=catalogue.id,
        version=catalogue.version,
        sha256=catalogue.sha256(),
        envelope=env.to_bytes(),
        published_at=now,
    )
    session.add(row)
    session.flush()
    return row


def latest(session: Session) -> CatalogueRow:
    row = session.scalars(
        select(CatalogueRow)
        .order_by(CatalogueRow.published_at.desc(), CatalogueRow.version.desc())
        .limit(1)
    ).first()
    if row is None:
        raise NotFoundError("no catalogue has been published", code="no-catalogue")
    return row


@dataclass(frozen=True)
class KnownCatalogue:
    catalogue: Catalogue
    sha256: str
    #: indicator id -> the (age_band, sex) strata it reports
    strata: dict[str, frozenset[tuple[str, str]]]


class CatalogueCache:
    """Published catalogues, parsed once per process (a published version never changes)."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int], KnownCatalogue] = {}
        self._lock = threading.Lock()

    def cached(self, cat_id: str, version: int) -> KnownCatalogue | None:
        """The catalogue if this cache holds it already (no database read)."""
        return self._known.get((cat_id, version))

    def get(self, session: Session, cat_id: str, version: int) -> KnownCatalogue | None:
        hit = self._known.get((cat_id, version))
        if hit is not None:
            return hit
        row = session.get(CatalogueRow, (cat_id, version))
        if row is None:
            return None
        cat = Catalogue.from_bytes(Envelope.from_bytes(bytes(row.envelope)).payload_bytes())
        known = KnownCatalogue(
            catalogue=cat,
            sha256=row.sha256,
            strata={ind.id: frozenset(cat.strata_for(ind)) for ind in cat.indicators},
        )
        with self._lock:
            self._known[(cat_id, version)] = known
        return known

    def load_published(self, session: Session) -> int:
        """Hold the latest published version of each catalogue (what agents submit against;
        an older version is read when first asked for). Returns how many."""
        latest = session.execute(
            select(CatalogueRow.id, func.max(CatalogueRow.version)).group_by(CatalogueRow.id)
        ).all()
        for cat_id, version in latest:
            self.get(session, cat_id, version)
        return len(latest)
