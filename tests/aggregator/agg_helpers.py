"""A minimal practice agent for the aggregator's tests: keys, enrol/rotate/submission envelopes
built with the protocol package (the real agent lives in agent/, which these tests don't use)."""

from __future__ import annotations

import base64
import os
import random
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from protocol.catalogue import Catalogue
from protocol.disclosure import RawCell, apply_policy, policy_sha256
from protocol.envelope import sign_envelope
from protocol.keys import SigningKey
from protocol.submission import (
    CatalogueRef,
    Cell,
    CodelistRef,
    Enrol,
    IndicatorProvenance,
    Period,
    Provenance,
    Rotate,
    Submission,
)
from tests.ports import on_a_free_port, started, wait_answering

AUD = "fedqi-test"
SERVE = Path(sys.executable).parent / "fedqi-aggregator"


def default_catalogue() -> Catalogue:
    text = resources.files("protocol.catalogues").joinpath("default.json").read_text("utf-8")
    return Catalogue.model_validate_json(text)


def nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


def make_cells(
    catalogue: Catalogue, indicators: list[str] | None = None, *, seed: int = 1
) -> tuple[Cell, ...]:
    """Disclosure-controlled cells for every stratum of the given indicators, from random counts."""
    rng = random.Random(seed)
    raw: list[RawCell] = []
    for ind in catalogue.indicators:
        if indicators is not None and ind.id not in indicators:
            continue
        strata = catalogue.strata_for(ind)[1:]
        parts = []
        for band, sex in strata:
            d = rng.randint(0, 120)
            n = rng.randint(0, d)
            e = rng.randint(0, d - n)
            parts.append((band, sex, d, n, e))
            raw.append(RawCell(ind.id, band, sex, d, n, e))
        if parts:
            raw.append(
                RawCell(ind.id, "all", "all", *(sum(p[i] for p in parts) for i in (2, 3, 4)))
            )
        else:
            raw.append(RawCell(ind.id, "all", "all", 100, 40, 5))
    return apply_policy(raw, catalogue.disclosure)


def provenance(catalogue: Catalogue, cells: tuple[Cell, ...]) -> Provenance:
    ids = sorted({c.indicator for c in cells})
    inds = []
    for i in ids:
        try:
            ind = catalogue.indicator(i)
        except KeyError:
            inds.append(IndicatorProvenance(id=i, version=1, codelists=()))
            continue
        refs = tuple(
            CodelistRef(id=c, sha256=catalogue.codelist(c).sha256())
            for c in sorted(ind.codelist_ids())
        )
        inds.append(IndicatorProvenance(id=i, version=ind.version, codelists=refs))
    return Provenance(
        agent_version="0.1.0",
        extract_time=int(time.time()),
        source="sqlite",
        disclosure_policy=policy_sha256(catalogue.disclosure),
        indicators=tuple(inds),
    )


@dataclass
class SimAgent:
    ods: str
    catalogue: Catalogue
    aud: str = AUD
    key: SigningKey = field(default_factory=SigningKey.generate)
    seq: int = 0

    def enrol(self, token: str, *, iat: int | None = None, key: SigningKey | None = None) -> bytes:
        key = key or self.key
        msg = Enrol(
            aud=self.aud,
            practice=self.ods,
            token=token,
            jwk=key.public.jwk(),
            agent_version="0.1.0",
            iat=iat or int(time.time()),
            nonce=nonce(),
        )
        return sign_envelope("enrol", msg.to_bytes(), [key]).to_bytes()

    def rotate(self, new_key: SigningKey, *, iat: int | None = None) -> bytes:
        self.seq += 1
        msg = Rotate(
            aud=self.aud,
            practice=self.ods,
            old_kid=self.key.kid,
            new_jwk=new_key.public.jwk(),
            seq=self.seq,
            iat=iat or int(time.time()),
            nonce=nonce(),
        )
        return sign_envelope("rotate", msg.to_bytes(), [self.key, new_key]).to_bytes()

    def submission_model(
        self,
        *,
        period: Period | None = None,
        cells: tuple[Cell, ...] | None = None,
        seq: int | None = None,
        submission_id: str | None = None,
        iat: int | None = None,
        supersedes: str | None = None,
        reason: str | None = None,
        aud: str | None = None,
        practice: str | None = None,
        kid: str | None = None,
        catalogue_sha256: str | None = None,
        seed: int = 1,
    ) -> Submission:
        if seq is None:
            self.seq += 1
            seq = self.seq
        cells = (
            cells
            if cells is not None
            else make_cells(self.catalogue, ["HYP_REG", "DM_REG"], seed=seed)
        )
        return Submission(
            aud=aud or self.aud,
            practice=practice or self.ods,
            kid=kid or self.key.kid,
            submission_id=submission_id or str(uuid.uuid4()),
            seq=seq,
            iat=iat or int(time.time()),
            nonce=nonce(),
            period=period or Period.month(2026, 9),
            catalogue=CatalogueRef(
                id=self.catalogue.id,
                version=self.catalogue.version,
                sha256=catalogue_sha256 or self.catalogue.sha256(),
            ),
            supersedes=supersedes,
            reason=reason,
            provenance=provenance(self.catalogue, cells),
            cells=tuple(sorted(cells, key=lambda c: c.key)),
        )

    def sign(
        self, payload: bytes, key: SigningKey | None = None, kind: str = "submission"
    ) -> bytes:
        return sign_envelope(kind, payload, [key or self.key]).to_bytes()

    def submission(self, **kw) -> bytes:  # type: ignore[no-untyped-def]
        return self.sign(self.submission_model(**kw).to_bytes())


def enrolled(network, ods: str) -> SimAgent:  # type: ignore[no-untyped-def]
    """A practice added to ``network`` (the tests' Network) with an agent enrolled through the
    service, as the enrol endpoint does."""
    from aggregator.practices import service as practices

    network.add_practice(ods)
    agent = SimAgent(ods=ods, catalogue=default_catalogue())
    rt = network.runtime()
    practices.enrol(
        rt.db.session,
        rt.signer,
        agent.enrol(network.token(ods)),
        now=time.time(),
        cap=1 << 20,
        iat_future=300,
        iat_past=86400,
    )
    return agent


def wait_ready(
    proc: subprocess.Popen[bytes],
    url: str,
    timeout: float = 120.0,
    also: Callable[[], bool] = lambda: True,
) -> None:
    """Wait until ``url`` answers ``/readyz`` with 200 (and ``also()`` holds) while ``proc``, a
    ``serve`` process, runs: its stderr is the failure message if it exits first (PortInUse if
    it says its port was taken). The default is for a loaded 2-core machine, where serve takes
    15 s to import and bind with one worker and 20 to 30 s with two (2.5 s idle)."""
    wait_answering(proc, f"{url}/readyz", what=f"serve at {url}", timeout=timeout, also=also)


def serve_on_a_free_port(  # type: ignore[no-untyped-def]
    network,
    *args: str,
    env: Mapping[str, str] | None = None,
    also: Callable[[subprocess.Popen[bytes], int], bool] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """``fedqi-aggregator serve`` on ``network``'s database and keys (and ``args``, ``env``) as
    its own process on a free loopback port, once it answers ``/readyz`` (and ``also(process,
    port)`` holds): the process and its port. A port taken before serve binds it is replaced by
    another (tests/ports.py); the caller stops the process."""

    def start(port: int) -> tuple[subprocess.Popen[bytes], int]:
        proc = subprocess.Popen(
            [str(SERVE), "serve", "--db", network.db, "--key-dir", str(network.settings.key_dir),
             "--port", str(port), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        started(proc, f"{url}/readyz", what=f"serve at {url}",
                also=lambda: also is None or also(proc, port))  # fmt: skip
        return proc, port

    return on_a_free_port(start)


class OneCopyLosesTheDatabase:
    """``settings`` (an aggregator ``Settings``) as the command that holds them reads them, but
    of the copies sent to other processes (``rebuild-benchmarks --jobs``), the first one
    unpickled waits until another process has recomputed a benchmark group, then names a
    database that does not exist: its process fails as one whose database went away, while
    the others are draining. ``claim`` is a path no file is at yet: the first copy takes it."""

    def __init__(self, settings, claim: Path) -> None:  # type: ignore[no-untyped-def]
        self._settings = settings
        self._claim = claim

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._settings, name)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return _settings_copy, (self._settings, str(self._claim))


def _settings_copy(settings, claim: str):  # type: ignore[no-untyped-def]
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return settings
    _wait_for_a_recomputed_group(settings.db)
    return settings.model_copy(update={"db": f"{settings.db}_gone"})


def _wait_for_a_recomputed_group(url: str, timeout: float = 60) -> None:
    from sqlalchemy import func, select

    from aggregator.benchmarks.models import BenchStale
    from aggregator.db.session import Database

    db = Database(url)
    try:
        count = select(func.count()).select_from(BenchStale)
        with db.read() as s:
            queued = s.scalar(count)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with db.read() as s:
                if s.scalar(count) != queued:
                    return
            time.sleep(0.05)
    finally:
        db.dispose()
