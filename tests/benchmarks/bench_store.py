"""Store helpers for the benchmark tests: a migrated SQLite file and (where a server answers) a fresh
PostgreSQL database, with helpers that write practices, submissions and cells directly (the
service reads only those tables; the end-to-end tests go through the real ingest path)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass

from aggregator.db.models import Cell, Envelope, Practice, PracticeKey, Submission
from aggregator.db.session import Database

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _make(model: type, **values: object) -> object:
    # The core's tables may grow columns; fill only those that exist (tests of the real ingest
    # path live in test_end_to_end.py).
    cols = set(model.__table__.columns.keys())  # type: ignore[attr-defined]
    keys = {a.key: a.columns[0].name for a in model.__mapper__.column_attrs}  # type: ignore[attr-defined]
    return model(**{k: v for k, v in values.items() if keys.get(k, k) in cols})


@dataclass
class Store:
    db: Database
    seq: int = 0

    def practice(
        self,
        ods: str,
        pcn: str = "PCN1",
        list_size: int = 8000,
        imd: int = 5,
        name: str | None = None,
    ) -> None:
        with self.db.session() as s:
            s.add(
                Practice(
                    ods=ods,
                    name=name or f"Practice {ods}",
                    group=pcn,
                    list_size=list_size,
                    imd_decile=imd,
                    created_at=NOW,
                )
            )
            s.add(
                PracticeKey(
                    kid=ods.ljust(43, "k"),
                    practice_ods=ods,
                    public_key=_signing_key().public.public_bytes(),
                    status="active",
                    last_seq=0,
                    created_at=NOW,
                )
            )

    def submit(
        self,
        ods: str,
        period: tuple[dt.date, dt.date],
        cells: dict[str, tuple],
        *,
        supersedes: str | None = None,
        strata: dict[str, list[tuple[str, str, int, int]]] | None = None,
        catalogue: tuple[str, int] = ("test", 1),
    ) -> str:
        """cells: indicator -> (numerator, denominator[, num_status, den_status]). Marks the
        groups stale through the hook, as ingest does, in the same transaction."""
        from aggregator.benchmarks.service import on_submission_stored

        self.seq += 1
        sid = str(uuid.uuid4())
        rows = []
        for ind, spec in cells.items():
            num, den = spec[0], spec[1]
            ns = spec[2] if len(spec) > 2 else ("zero" if num == 0 else "exact")
            ds = spec[3] if len(spec) > 3 else ("zero" if den == 0 else "exact")
            stratified = [
                [band, sex, d2, "exact" if d2 else "zero", n2, "exact" if n2 else "zero", 0, "zero"]
                for band, sex, n2, d2 in (strata or {}).get(ind, [])
            ]  # fmt: skip
            rows.append((ind, num, ns, den, ds, stratified))
        # The benchmark refresh checks every practice's counts against its signed payload
        # (aggregator.log.checks.signed_totals): store a real envelope carrying these cells.
        body = _envelope(sid, ods, self.seq, period, catalogue, supersedes, rows)
        sha = hashlib.sha256(body).hexdigest()
        with self.db.session() as s:
            s.add(
                _make(
                    Envelope, sha256=sha, kind="submission", practice_ods=ods, body=body,
                    received_at=NOW, receipt=b"", leaf_index=self.seq,
                )
            )  # fmt: skip
            s.flush()
            if supersedes:
                old = s.get(Submission, supersedes)
                assert old is not None
                old.effective, old.superseded_by = False, sid
            row = _make(
                Submission,
                submission_id=sid, practice_ods=ods, kid=ods.ljust(43, "k"), seq=self.seq, iat=0,
                period_start=period[0], period_end=period[1], catalogue_id=catalogue[0],
                catalogue_version=catalogue[1], catalogue_sha256="0" * 64, supersedes=supersedes,
                reason="data_correction" if supersedes else None, envelope_sha256=sha,
                payload_sha256=sha, leaf_index=self.seq, receipt=b"", received_at=NOW + dt.timedelta(seconds=self.seq),
                effective=True, superseded_by=None,
            )  # fmt: skip
            s.add(row)
            s.flush()
            for ind, num, ns, den, ds, stratified in rows:
                s.add(Cell(submission_id=sid, indicator=ind, numerator=num, numerator_status=ns, denominator=den,
                           denominator_status=ds, exclusions=0, exclusions_status="zero", strata=json.dumps(stratified)))  # fmt: skip
            s.flush()
            on_submission_stored(s, row)
        return sid


_KEY = None


def _signing_key():  # type: ignore[no-untyped-def]
    """The one key every test practice signs with (the refresh verifies each envelope with the
    key stored for the practice)."""
    from protocol.keys import SigningKey

    global _KEY
    if _KEY is None:
        _KEY = SigningKey.generate()
    return _KEY


def _envelope(sid, ods, seq, period, catalogue, supersedes, rows) -> bytes:  # type: ignore[no-untyped-def]
    """A signed submission envelope carrying ``rows`` (indicator, num, status, den, status,
    strata) as its cells."""
    import base64
    import secrets

    from protocol.envelope import sign_envelope
    from protocol.submission import (
        CatalogueRef,
        Count,
        Period,
        Provenance,
        Stratum,
    )
    from protocol.submission import Cell as PCell
    from protocol.submission import Submission as PSubmission

    def count(v, st):  # type: ignore[no-untyped-def]
        return Count(status=st, value=v)

    cells = []
    for ind, num, ns, den, ds, stratified in rows:
        cells.append(PCell(indicator=ind, stratum=Stratum(), numerator=count(num, ns),
                           denominator=count(den, ds), exclusions=count(0, "zero")))  # fmt: skip
        for band, sex, d2, d2s, n2, n2s, e2, e2s in stratified:
            cells.append(PCell(indicator=ind, stratum=Stratum(age_band=band, sex=sex),
                               numerator=count(n2, n2s), denominator=count(d2, d2s),
                               exclusions=count(e2, e2s)))  # fmt: skip
    sub = PSubmission(
        aud="fedqi-test", practice=ods, kid=ods.ljust(43, "k"), submission_id=sid, seq=seq, iat=1,
        nonce=base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode(),
        period=Period(start=period[0], end=period[1]),
        catalogue=CatalogueRef(id=catalogue[0], version=catalogue[1], sha256="0" * 64),
        supersedes=supersedes, reason="data_correction" if supersedes else None,
        provenance=Provenance(agent_version="0.1.0", disclosure_policy="0" * 64, extract_time=1,
                              indicators=(), source="csv"),
        cells=tuple(sorted(cells, key=lambda c: c.key)),
    )  # fmt: skip
    return sign_envelope("submission", sub.to_bytes(), [_signing_key()]).to_bytes()


def month(y: int, m: int) -> tuple[dt.date, dt.date]:
    start = dt.date(y, m, 1)
    nxt = dt.date(y + (m == 12), m % 12 + 1, 1)
    return start, nxt - dt.timedelta(days=1)
