"""A synthetic network served for real: the aggregator set up through its CLI, a uvicorn server on
loopback, and practices that enrol and send signed submissions through the ingest path.

Used by the benchmark API tests and the browser test. Practice rates are drawn around each
indicator's network rate with a few planted outliers, so funnels have something to show.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import httpx
import uvicorn

from aggregator.cli import main as cli
from aggregator.settings import Settings, get_settings
from aggregator.web.app import create_app
from protocol.catalogue import Catalogue
from protocol.disclosure import RawCell, apply_policy, policy_sha256
from protocol.envelope import sign_envelope
from protocol.keys import SigningKey
from protocol.submission import (
    CatalogueRef,
    CodelistRef,
    Enrol,
    IndicatorProvenance,
    Period,
    Provenance,
    Submission,
)

AUD = "fedqi-bench-test"
INDICATORS = ("DM_HBA1C", "HYP_BP_U80", "AF_ANTICOAG", "CHD_STATIN", "FLU_65")
BASE_RATES = {
    "DM_HBA1C": 0.66,
    "HYP_BP_U80": 0.62,
    "AF_ANTICOAG": 0.86,
    "CHD_STATIN": 0.82,
    "FLU_65": 0.74,
}
PERIODS = (Period.month(2026, 7), Period.month(2026, 8), Period.month(2026, 9))


def default_catalogue() -> Catalogue:
    text = resources.files("protocol.catalogues").joinpath("default.json").read_text("utf-8")
    return Catalogue.model_validate_json(text)


def _nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


@dataclass
class PracticeSpec:
    ods: str
    name: str
    pcn: str
    list_size: int
    imd_decile: int
    shift: float = 0.0  # added to every base rate (a planted outlier)
    registered: int | None = None  # patients the agent counts (default: the published list size)
    key: SigningKey = field(default_factory=SigningKey.generate)
    seq: int = 0


def practices(n: int = 12, seed: int = 3) -> list[PracticeSpec]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ods = f"B{81001 + i:05d}"
        out.append(
            PracticeSpec(
                ods=ods,
                name=f"{['Riverside', 'Hillview', 'Station Road', 'Park Lane', 'Elm Tree', 'Market Square'][i % 6]} Surgery {i + 1}",
                pcn="North PCN" if i % 2 == 0 else "South PCN",
                list_size=rng.choice([3500, 6500, 9000, 12000, 16000]),
                imd_decile=1 + (i * 3) % 10,
            )
        )
    out[0].shift = -0.25  # far below on every indicator
    if n > 3:
        out[3].shift = +0.2
    return out


#: Planted shapes for an indicator's counts: ``tiny`` gives every practice a population of 1-7
#: (so every count it sends is suppressed), ``empty`` a population of 0 (nobody counted).
SHAPES = ("normal", "tiny", "empty")


def _raw_cells(
    cat: Catalogue,
    spec: PracticeSpec,
    indicator: str,
    rate: float,
    rng: random.Random,
    shape: str = "normal",
) -> list[RawCell]:
    ind = cat.indicator(indicator)
    strata = cat.strata_for(ind)[1:]
    size = spec.list_size // 12
    raw, tot = [], [0, 0, 0]
    for i, (band, sex) in enumerate(strata):
        weight = {"0-39": 0.1, "40-59": 0.3, "60-79": 0.45, "80+": 0.15}.get(band, 0.25)
        weight *= {"F": 0.5, "M": 0.48, "U": 0.02}.get(sex, 0.33)
        if shape == "normal":
            d = max(0, int(rng.gauss(size * weight, 3)))
        else:
            d = rng.randint(1, 7) if shape == "tiny" and i == 0 else 0
        n = sum(rng.random() < rate for _ in range(d))
        e = min(d - n, int(d * 0.04))
        raw.append(RawCell(indicator, band, sex, d, n, e))
        tot = [tot[0] + d, tot[1] + n, tot[2] + e]
    return [RawCell(indicator, "all", "all", *tot), *raw]


def _whole_list_cells(
    cat: Catalogue, spec: PracticeSpec, indicator: str, rate: float, rng: random.Random
) -> list[RawCell]:
    """An indicator whose population is every registered patient: its denominator is the
    practice's registered count, spread over the strata."""
    strata = cat.strata_for(cat.indicator(indicator))[1:]
    total = spec.registered if spec.registered is not None else spec.list_size
    raw, left, tot = [], total, [0, 0]
    for i, (band, sex) in enumerate(strata):
        d = left if i == len(strata) - 1 else min(left, total // len(strata))
        left -= d
        n = sum(rng.random() < rate for _ in range(d))
        raw.append(RawCell(indicator, band, sex, d, n, 0))
        tot = [tot[0] + d, tot[1] + n]
    return [RawCell(indicator, "all", "all", tot[0], tot[1], 0), *raw]


@dataclass
class SyntheticNetwork:
    tmp: Path
    db_url: str
    specs: list[PracticeSpec]
    settings: Settings | None = None
    url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    catalogue: Catalogue = field(default_factory=default_catalogue)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    # --- setup through the CLI and the service functions the CLI uses -----------------------

    def setup(self) -> None:
        key_dir = self.tmp / "keys"
        assert cli(["db", "upgrade", "--db", self.db_url]) == 0
        assert (
            cli(
                [
                    "init",
                    "--name",
                    "Synthetic network",
                    "--aud",
                    AUD,
                    "--db",
                    self.db_url,
                    "--key-dir",
                    str(key_dir),
                ]
            )
            == 0
        )
        self.settings = get_settings(db=self.db_url, key_dir=key_dir)
        for p in self.specs:
            assert cli(["practice", "add", p.ods, "--name", p.name, "--group", p.pcn, "--list-size", str(p.list_size),
                        "--imd-decile", str(p.imd_decile), "--db", self.db_url]) == 0  # fmt: skip
        self.tokens["admin"] = self._user("admin")
        for pcn in sorted({p.pcn for p in self.specs}):
            self.tokens[f"lead:{pcn}"] = self._user("network_lead", group=pcn)
        for p in self.specs:
            self.tokens[f"practice:{p.ods}"] = self._user("practice", practice=p.ods)
            self.tokens[f"ig:{p.ods}"] = self._user("ig_officer", practice=p.ods)

    def _runtime(self):  # type: ignore[no-untyped-def]
        from aggregator.runtime import Runtime

        assert self.settings is not None
        return Runtime.load(self.settings)

    def _user(self, role: str, practice: str | None = None, group: str | None = None) -> str:
        from aggregator.users.service import add_user

        rt = self._runtime()
        with rt.db.session() as s:
            _, token = add_user(
                s,
                f"{role} {practice or group or ''}".strip(),
                role,
                practice=practice,
                group=group,
                now=rt.now(),
            )
        rt.db.dispose()
        return token

    def publish_catalogue(self, catalogue: Catalogue) -> None:
        path = self.tmp / f"catalogue-v{catalogue.version}.json"
        path.write_text(catalogue.model_dump_json())
        assert self.settings is not None
        assert (
            cli(
                [
                    "catalogue",
                    "publish",
                    str(path),
                    "--db",
                    self.db_url,
                    "--key-dir",
                    str(self.settings.key_dir),
                ]
            )
            == 0
        )
        self.catalogue = catalogue

    # --- the server ------------------------------------------------------------------------

    def start(self) -> str:
        assert self.settings is not None
        app = create_app(self.settings)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this: without it a response written in two parts waits
        # for the client's delayed ACK, about 40 ms a request on loopback.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.time() + 15
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- practices: enrol and submit, signed --------------------------------------------------

    def enrol_all(self, client: httpx.Client) -> None:
        from aggregator.practices.service import issue_enrol_token

        rt = self._runtime()
        for p in self.specs:
            with rt.db.session() as s:
                token, _ = issue_enrol_token(s, p.ods, hours=1, now=rt.now())
            msg = Enrol(aud=AUD, practice=p.ods, token=token, jwk=p.key.public.jwk(), agent_version="0.1.0",
                        iat=int(time.time()), nonce=_nonce())  # fmt: skip
            r = client.post("/v1/enrol", content=sign_envelope("enrol", msg.to_bytes(), [p.key]).to_bytes(),
                            headers={"content-type": "application/json"})  # fmt: skip
            assert r.status_code == 201, r.text
        rt.db.dispose()

    def submission(self, spec: PracticeSpec, period: Period, *, seed: int, supersedes: str | None = None,
                   indicators: tuple[str, ...] = INDICATORS, rate_shift: float = 0.0,
                   shapes: dict[str, str] | None = None,
                   whole_list: dict[str, float] | None = None) -> tuple[str, bytes]:  # fmt: skip
        """``shapes`` plants a shape (``SHAPES``) per indicator; other indicators are normal.
        An indicator with no base rate of its own is drawn around 0.7. ``whole_list``:
        indicators whose population is the whole list, with their base rate (sent besides
        ``indicators``)."""
        rng = random.Random(f"{seed}-{spec.ods}-{period.label}")
        cat = self.catalogue
        raw: list[RawCell] = []
        for ind in indicators:
            base = BASE_RATES.get(ind, 0.7)
            rate = min(0.99, max(0.02, base + spec.shift + rate_shift + rng.gauss(0, 0.03)))
            raw += _raw_cells(cat, spec, ind, rate, rng, (shapes or {}).get(ind, "normal"))
        for ind, base in (whole_list or {}).items():
            raw += _whole_list_cells(cat, spec, ind, max(0.0, base + rng.gauss(0, 0.01)), rng)
        indicators = (*indicators, *(whole_list or {}))
        cells = apply_policy(raw, cat.disclosure)
        prov = Provenance(
            agent_version="0.1.0", extract_time=int(time.time()), source="sqlite",
            disclosure_policy=policy_sha256(cat.disclosure),
            indicators=tuple(
                IndicatorProvenance(
                    id=i, version=cat.indicator(i).version,
                    codelists=tuple(CodelistRef(id=c, sha256=cat.codelist(c).sha256()) for c in sorted(cat.indicator(i).codelist_ids())),
                )
                for i in sorted(indicators)
            ),
        )  # fmt: skip
        spec.seq += 1
        sid = str(uuid.uuid4())
        sub = Submission(
            aud=AUD, practice=spec.ods, kid=spec.key.kid, submission_id=sid, seq=spec.seq, iat=int(time.time()),
            nonce=_nonce(), period=period, catalogue=CatalogueRef(id=cat.id, version=cat.version, sha256=cat.sha256()),
            supersedes=supersedes, reason="data_correction" if supersedes else None, provenance=prov, cells=cells,
        )  # fmt: skip
        return sid, sign_envelope("submission", sub.to_bytes(), [spec.key]).to_bytes()

    def submit(self, client: httpx.Client, spec: PracticeSpec, period: Period, **kw) -> str:  # type: ignore[no-untyped-def]
        sid, body = self.submission(spec, period, **kw)
        r = client.post(
            "/v1/submissions", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == 201, r.text
        return sid

    def populate(
        self, client: httpx.Client, periods: tuple[Period, ...] = PERIODS, seed: int = 1, **kw
    ) -> dict[str, dict[str, str]]:  # type: ignore[no-untyped-def]
        """Every practice submits every period (``kw`` as for ``submission``); returns
        submission ids by practice and period."""
        ids: dict[str, dict[str, str]] = {}
        for period in periods:
            for p in self.specs:
                ids.setdefault(p.ods, {})[period.label] = self.submit(
                    client, p, period, seed=seed, **kw
                )
        return ids

    def bump_indicator_version(self, indicator: str) -> Catalogue:
        """Publish the next catalogue version with ``indicator``'s version bumped."""
        data = json.loads(self.catalogue.model_dump_json())
        data["version"] += 1
        for ind in data["indicators"]:
            if ind["id"] == indicator:
                ind["version"] += 1
        new = Catalogue.model_validate(data)
        self.publish_catalogue(new)
        return new
