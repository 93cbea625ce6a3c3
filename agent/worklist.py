"""Worklists: the practice's own patients in an indicator's denominator but not its numerator,
for recall work inside the practice.

A worklist is patient-level, so it has exactly two destinations: the screen, or a local file the
user names (written 0600). This module imports nothing that signs, stores or sends (a test
checks its imports): there is no code path from a worklist to the outbox or a payload.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import AgentUserError

FIELDS = ("patient_id", "local_ref")


@dataclass(frozen=True)
class Worklist:
    indicator: str
    title: str
    period_end: dt.date
    patients: tuple[tuple[int, str | None], ...]

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(FIELDS)
        for patient_id, local_ref in self.patients:
            writer.writerow((patient_id, local_ref or ""))
        return buf.getvalue()

    def to_json(self) -> dict[str, object]:
        return {
            "indicator": self.indicator,
            "title": self.title,
            "period_end": self.period_end.isoformat(),
            "local_only": "this list never leaves the practice",
            "patients": [{"patient_id": p, "local_ref": r} for p, r in self.patients],
        }


def write_worklist(worklist: Worklist, path: Path, *, forbidden_dir: Path | None = None) -> None:
    """Write the worklist as CSV to ``path`` (mode 0600, refusing to overwrite)."""
    target = path.expanduser().resolve()
    if forbidden_dir is not None and target.is_relative_to(forbidden_dir.resolve()):
        raise AgentUserError(
            f"--out {path}: worklists are not written inside the agent home {forbidden_dir}"
        )
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AgentUserError(f"--out {path}: the file exists; refusing to overwrite it") from None
    except OSError as exc:
        raise AgentUserError(f"--out {path}: cannot write: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(worklist.to_csv())
