"""Privacy: a practice full of identifiers (NHS-number-like ids, names, postcodes, exact dates of
birth) in every column that can hold them; none of them appears in any byte of a preview, a
payload, the outbox, or the aggregator's database. Worklists (which must show them) stay local."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_helpers import Agent, AggregatorServer

from agent.sources.synth import generate_practice

NAMES = ["Margaret Featherstonehaugh", "Oluwaseun Adeyemi", "Siobhan Kowalczyk", "Rhys Pemberton"]
POSTCODES = ["SW1A 1AA", "M1 1AE", "LS1 4DY", "CF10 3NQ", "EH99 1SP"]


def _nhs_number(seed: int) -> str:
    """A 10-digit NHS-number-like identifier with a valid modulus 11 check digit."""
    n = 943_000_000 + seed * 7919
    while True:
        digits = [int(d) for d in f"{n:09d}"]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        if check == 11:
            check = 0
        if check != 10:
            return f"{n:09d}{check}"
        n += 1


@pytest.fixture(scope="module")
def identified_practice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A synthetic practice rewritten so every identifier-capable column holds identifiers."""
    path = tmp_path_factory.mktemp("identified") / "practice.db"
    generate_practice(path, patients=200, seed=5)
    db = sqlite3.connect(path)
    ids = [r[0] for r in db.execute("SELECT patient_id FROM patients ORDER BY patient_id")]
    secrets: list[str] = []
    with db:
        for i, old in enumerate(ids):
            nhs = _nhs_number(i)
            name, postcode = NAMES[i % len(NAMES)], POSTCODES[i % len(POSTCODES)]
            # An exact date of birth no period label or date in a payload can equal, before
            # every record of the patient's (the agent refuses a record dated before birth).
            dob = dt.date(1931 + i % 70, 1 + i % 12, 2 + i % 26)
            earliest = dt.date.fromisoformat(
                db.execute(
                    "SELECT min(d) FROM (SELECT registration_start AS d FROM patients "
                    "WHERE patient_id = ? UNION ALL SELECT date FROM events WHERE patient_id = ? "
                    "UNION ALL SELECT date FROM medications WHERE patient_id = ?)",
                    (old, old, old),
                ).fetchone()[0]
            )
            if dob >= earliest:
                dob = dt.date(earliest.year - 1, 1 + i % 12, 2 + i % 26)
            new_id = int(nhs)
            for table in ("events", "medications"):
                db.execute(f"UPDATE {table} SET patient_id = ? WHERE patient_id = ?", (new_id, old))
            db.execute(
                "UPDATE patients SET patient_id = ?, local_ref = ?, birth_date = ? "
                "WHERE patient_id = ?",
                (new_id, f"{nhs} {name} {postcode}"[:64], dob.isoformat(), old),
            )
            # Identifiers in every free column of the coded tables: code, value, unit.
            db.execute(
                "INSERT INTO events (patient_id, date, system, code, value, unit) "
                "VALUES (?, ?, 'snomedct', ?, ?, ?)",
                (new_id, "2025-06-01", nhs, float(nhs), postcode),
            )
            db.execute(
                "INSERT INTO medications (patient_id, date, system, code) VALUES (?, ?, 'dmd', ?)",
                (new_id, "2025-06-02", nhs),
            )
            db.execute(
                "UPDATE events SET unit = ? WHERE patient_id = ? AND unit IS NULL",
                (name.split()[0][:16], new_id),
            )
            secrets += [
                nhs,
                f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}",
                dob.isoformat(),
                dob.strftime("%d/%m/%Y"),
                dob.strftime("%Y%m%d"),
            ]
    db.close()
    secrets += NAMES + [n.split()[0] for n in NAMES] + [n.split()[1] for n in NAMES]
    secrets += POSTCODES + [p.replace(" ", "") for p in POSTCODES]
    return path, sorted(set(secrets))


def _leaks(blob: bytes, secrets: list[str]) -> list[str]:
    """Secrets found in ``blob``, also inside any base64 it carries (envelope payloads).

    A secret counts where it stands as a word of its own (any case): a leaked name, number or
    postcode sits in a JSON string, a CSV field or a line of text. A plain substring search
    also "found" a short first name such as "Rhys" inside random base64 (signatures, nonces,
    payloads: about 1 chance in 10^6 per position, so now and then in 100 KB of it)."""
    texts = [blob.decode("utf-8", errors="replace")]
    for token in re.findall(rb"[A-Za-z0-9+/]{40,}={0,2}", blob):
        with contextlib.suppress(ValueError):
            texts.append(base64.b64decode(token + b"=" * (-len(token) % 4)).decode("latin-1"))
    found = []
    for secret in secrets:
        word = re.compile(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", re.IGNORECASE)
        if any(word.search(text) for text in texts):
            found.append(secret)
    return found


def test_the_leak_search_finds_identifiers_in_text_and_in_base64() -> None:
    secrets = ["Rhys", "9434765919", "LS1 4AB"]
    payload = base64.b64encode(b'{"note":"rhys pemberton","nhs":"9434765919"}' + bytes(30))
    assert _leaks(b'{"name": "Rhys"}', secrets) == ["Rhys"]
    assert _leaks(b"id,postcode\n1,ls1 4ab\n", secrets) == ["LS1 4AB"]
    assert _leaks(b'{"payload":"' + payload + b'"}', secrets) == ["Rhys", "9434765919"]
    assert _leaks(b'{"sig":"q0RhYsZ+9w=="}', secrets) == []  # base64 that merely spells it


def test_no_identifier_leaves_in_preview_payload_outbox_or_aggregator(
    identified_practice: tuple[Path, list[str]],
    aggregator: AggregatorServer,
    agent_factory: Callable[..., Agent],
    tmp_path: Path,
) -> None:
    db_path, secrets = identified_practice
    agent = agent_factory(aggregator, source__url=str(db_path))

    # The worklist must show the identifiers (so the search below would find a leak) ...
    recall = tmp_path / "recall.csv"
    agent.ok("worklist", "HYP_BP_U80", "--period", "2026-03", "--out", str(recall))
    shown = _leaks(recall.read_bytes(), secrets)
    assert any(s.isdigit() and len(s) == 10 for s in shown), "identifiers were not seeded"

    outputs = {
        "preview": agent.ok("preview", "--period", "2026-03").encode(),
        "preview --local": agent.ok("preview", "--period", "2026-03", "--local").encode(),
        "preview --json": agent.ok("preview", "--period", "2026-03", "--json").encode(),
    }
    agent.ok("submit", "--period", "2026-03")
    agent.ok("submit", "--period", "2026-02", env={"FEDQI_AGENT_RELEASE": "hold"})
    outputs["pending"] = agent.ok("pending", "--json").encode()
    outputs["audit show"] = agent.ok("audit", "show", "2", "--json").encode()
    assert json.loads(outputs["preview --json"])["cells"]

    for name, data in outputs.items():
        assert _leaks(data, secrets) == [], name
    for path in sorted(agent.home.rglob("*")):
        if path.is_file() and path.suffix != ".key":
            assert _leaks(path.read_bytes(), secrets) == [], path
    assert _leaks(aggregator.db_file.read_bytes(), secrets) == []
    assert not any(p.name == recall.name for p in agent.home.rglob("*"))
