"""Who is looking: the viewer, what it may identify, and the pseudonyms of everyone else.

Identification follows :func:`aggregator.users.service.can_read_practice`: admin sees every
practice, a network lead the practices of their group (PCN), a practice or IG user their own.
Every other practice appears under a pseudonym (stable per viewer, not reversible) with no
name, ODS code or submission id. A practice's own view (practice and IG users:
:attr:`Viewer.coarse`) has pseudonyms of its own per peer-group dimension, so a peer's
pseudonym in the PCN funnel is not its pseudonym in the network funnel (docs/disclosure.md,
"Pseudonyms").
"""

from __future__ import annotations

import base64
import hmac
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, TypedDict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db.models import Practice, User
from ..errors import ForbiddenError, NotFoundError
from ..users.service import ROLE_NOUNS, can_read_practice, shows_individually
from . import stats


@dataclass(frozen=True, slots=True)
class PracticeInfo:
    """What the views need of a practice (``can_read_practice`` reads ``ods`` and ``group``)."""

    ods: str
    name: str
    group: str
    list_size: int
    imd_decile: int
    visibility: str = "named"


class PracticeLabel(TypedDict):
    """How a view names a practice: its ODS code and name if the viewer may identify it, else
    its pseudonym in both."""

    id: str
    name: str
    identified: bool
    self: bool
    pcn: str | None


@lru_cache(maxsize=500_000)
def pseudonym_of(secret: bytes, viewer_id: int, ods: str, scope: str = "") -> str:
    """A peer's pseudonym for one viewer. Without a scope the same value as
    :func:`aggregator.users.service.pseudonym_for` (a test holds them equal), with the one-shot
    C HMAC and a cache: a funnel pseudonymises thousands of peers per request. A scope (a
    practice's peer-group views) gives other pseudonyms."""
    msg = f"{viewer_id}\x00{ods}" + (f"\x00{scope}" if scope else "")
    mac = hmac.digest(secret, msg.encode(), "sha256")
    return "P-" + base64.b32encode(mac[:5]).decode("ascii")


_PRACTICES: dict[str, Any] = {"key": None, "value": {}}
_PRACTICES_LOCK = threading.Lock()


def practices(session: Session) -> dict[str, PracticeInfo]:
    """Every practice, cached per process and reloaded when the table changes (a practice
    added, renamed or regrouped changes the count or the fingerprint of its columns)."""
    key = tuple(
        session.execute(
            select(
                func.count(),
                func.max(Practice.created_at),
                func.sum(
                    func.length(Practice.name)
                    + func.length(Practice.group)
                    + Practice.list_size
                    + Practice.imd_decile
                ),
                # a practice's visibility changes with a submission that sets a new
                # visibility_since (a fresh UUID)
                func.sum(func.length(Practice.visibility)),
                func.count(Practice.visibility_since),
                func.min(Practice.visibility_since),
                func.max(Practice.visibility_since),
            )
        ).one()
    )
    with _PRACTICES_LOCK:
        if _PRACTICES["key"] == key:
            return _PRACTICES["value"]  # type: ignore[no-any-return]
    rows = session.execute(
        select(
            Practice.ods,
            Practice.name,
            Practice.group,
            Practice.list_size,
            Practice.imd_decile,
            Practice.visibility,
        )  # fmt: skip
    ).all()
    value = {r[0]: PracticeInfo(*r) for r in rows}
    with _PRACTICES_LOCK:
        _PRACTICES.update(key=key, value=value)
    return value


_IDENTIFIED: dict[tuple[Any, ...], tuple[dict[str, PracticeInfo], frozenset[str]]] = {}


@dataclass
class Viewer:
    """A user looking at the benchmarks, with every practice and the network's peer bands
    (:class:`stats.PeerBands`, from the aggregator's settings via the runtime)."""

    user: User
    secret: bytes
    bands: stats.PeerBands
    practices: dict[str, PracticeInfo] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, user: User, secret: bytes, bands: stats.PeerBands) -> Viewer:
        return cls(user, secret, bands, practices(session))

    # A viewer lives for one request; what it may see is computed once (a funnel asks for each
    # of thousands of practices, and the user is a database object, slow to read).

    @cached_property
    def own(self) -> str | None:
        return self.user.practice_ods if self.user.role in ("practice", "ig_officer") else None

    def identifies(self, ods: str) -> bool:
        return ods in self.identified

    @cached_property
    def identified(self) -> frozenset[str]:
        """The practices this viewer may identify (can_read_practice over every practice),
        computed once per practice list and viewer: a funnel asks for each of thousands."""
        u = self.user
        key = (id(self.practices), u.id, u.role, u.group, u.practice_ods)
        hit = _IDENTIFIED.get(key)
        if hit is None or hit[0] is not self.practices:
            found = frozenset(ods for ods, p in self.practices.items() if can_read_practice(u, p))  # type: ignore[arg-type]
            if len(_IDENTIFIED) > 10_000:
                _IDENTIFIED.clear()
            hit = _IDENTIFIED[key] = (self.practices, found)
        return hit[1]

    def shows(self, ods: str) -> bool:
        """Whether practice ``ods`` is shown on its own (identified or pseudonymised) to this
        viewer: not when it chose totals_only, except in its own view."""
        return ods not in self._not_shown

    @cached_property
    def _not_shown(self) -> frozenset[str]:
        u = self.user
        return frozenset(
            ods
            for ods, p in self.practices.items()
            if not shows_individually(u, p)  # type: ignore[arg-type]
        )

    def require(self, ods: str) -> PracticeInfo:
        p = self.practices.get(ods)
        if p is None and self.user.role == "admin":
            # an admin may see every practice, so "no such practice" tells them nothing new
            raise NotFoundError(
                f"practice {ods}: unknown practice (none is registered with that ODS code)",
                code="unknown-practice",
            )
        if p is None or not can_read_practice(self.user, p):  # type: ignore[arg-type]
            # The same answer whether or not the practice exists: no probing for ODS codes.
            raise ForbiddenError(
                f"practice {ods}: not visible to {ROLE_NOUNS.get(self.user.role, self.user.role)}",
                code="practice-forbidden",
            )
        return p

    def unknown_in(self, included: int, rated: Iterable[str]) -> int:
        """How many of a pool's ``included`` practices this viewer cannot identify, given the
        practices with a rate in it (``rated``; those it identifies are subtracted)."""
        identified = self.identified
        return max(0, included - sum(1 for ods in rated if ods in identified))

    @property
    def identifies_all(self) -> bool:
        """Whether this viewer may identify every practice (an admin, where every practice is
        named): every pool it sees is of practices it sees, so it sees pools exactly."""
        return self.own is None and len(self.identified) == len(self.practices)

    @cached_property
    def coarse(self) -> bool:
        """Whether peers are shown coarsened: in a practice's own view (practice and IG users)."""
        return self.own is not None

    def pseudonym(self, ods: str, dimension: str = "network") -> str:
        """A peer's pseudonym; in a practice's view, one per peer-group dimension, so a peer
        seen in the PCN (or IMD, or size) funnel cannot be looked up in the network funnel."""
        scope = dimension if self.coarse and dimension != "network" else ""
        return pseudonym_of(self.secret, self.user.id, ods, scope)

    def label(self, ods: str) -> PracticeLabel:
        if self.identifies(ods):
            p = self.practices[ods]
            return {
                "id": ods,
                "name": p.name,
                "identified": True,
                "self": ods == self.own,
                "pcn": p.group,
            }
        alias = self.pseudonym(ods)
        return {"id": alias, "name": alias, "identified": False, "self": False, "pcn": None}

    def attributes(self) -> dict[str, stats.PracticeAttributes]:
        return {
            ods: stats.PracticeAttributes(ods, p.group, p.imd_decile, p.list_size)
            for ods, p in self.practices.items()
        }

    def group_of(
        self, attributes: stats.PracticeAttributes, dimension: stats.PeerDimension
    ) -> str | None:
        """A practice's peer group along ``dimension``, with this network's size bands."""
        return attributes.group(dimension, self.bands)
