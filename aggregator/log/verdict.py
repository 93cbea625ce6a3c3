"""Cell verdicts: what the ingest proved about a stored ``cells`` row, sealed so that an edit to
the database cannot forge it.

Every benchmark refresh must show only counts a practice signed. Proving that from the envelope
costs about 2.4 ms a submission (hash, Ed25519 signature, parsing 98 KB; docs/benchmarks.md),
half of a national month's refresh, and it had to be paid again by every new process. But the
ingest has already proved it: a row is written only after its submission passed every check.
So the ingest seals each row: a MAC (HMAC-SHA-256, cut to 16 bytes) over the row's values and
what binds them to their submission (its id, practice, key id, envelope SHA-256 and period),
under a key derived from the log's signing key (HKDF-SHA-256). The key is never stored in the
database, so someone who can write to the database but does not hold the log key cannot make a
verdict for values that were not signed. The refresh recomputes the MAC over the row it reads
(:func:`holds`); where it holds, the row is the one that passed the checks, and the envelope is
not read. Where a row has no verdict (written before verdicts) or its verdict does not hold (an
edit, or a new log key), the refresh runs the envelope checks as before
(:func:`aggregator.log.checks.signed_cells`) and seals the row if it passes them, so a row
stored before verdicts has its envelope read once, not on every refresh; a row that fails them
is not sealed. ``log verify`` still checks every envelope.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.keys import SigningKey

#: HKDF's info for the verdict key; a new version means a new key (old verdicts then fail and
#: their rows are checked against their envelopes).
INFO = b"fedqi aggregator cell verdict v1"
#: Bytes of the HMAC-SHA-256 kept: 128 bits.
SIZE = 16


def derive_key(log_key: SigningKey) -> bytes:
    """The verdict key of a log key (32 bytes; held in memory only)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(
        log_key.private_bytes()
    )


Binding = tuple[str, str, str, str, str, str]


def _fields(fields: Sequence[object]) -> bytes:
    # Each field as its length and its text, so no two lists of fields give the same bytes;
    # None is "~" (never a count, status or id on its own, and distinct from "0" and "").
    parts = []
    for f in fields:
        s = "~" if f is None else str(f)
        parts.append(f"{len(s)}:{s}")
    return "|".join(parts).encode()


@lru_cache(maxsize=8_192)
def _prefix(binding: Binding) -> bytes:
    # A refresh checks one row per submission in each of a period's groups, one group after
    # another: kept for a national month of submissions, each binding is encoded once, not
    # once per indicator.
    return _fields(binding) + b"||"


class Sealer:
    """Seals rows of one submission: ``binding`` is (submission id, practice, key id, envelope
    SHA-256, period start, period end) as ISO dates, encoded once for all its rows."""

    __slots__ = ("_key", "_prefix")

    def __init__(self, key: bytes, binding: Binding) -> None:
        self._key = key
        self._prefix = _prefix(binding)

    def seal(self, row: Sequence[object]) -> bytes:
        """The verdict of one ``cells`` row: its indicator, counts, statuses and strata
        (:func:`aggregator.db.cells.cell_rows` without the submission id)."""
        return hmac.digest(self._key, self._prefix + _fields(row), "sha256")[:SIZE]

    def holds(self, verdict: bytes | None, row: Sequence[object]) -> bool:
        """Whether ``verdict`` is this row's seal (compared in constant time)."""
        if verdict is None or len(verdict) != SIZE:
            return False
        return hmac.compare_digest(bytes(verdict), self.seal(row))

    def seal_counts(self, counts: bytes) -> bytes:
        """The verdict of a submission's counts value (``submissions.counts``,
        :mod:`aggregator.db.counts`): the whole value, under a mark no row's fields begin
        with (a row's first field starts with its length), so no row's seal is a value's."""
        return hmac.digest(self._key, self._prefix + b"#counts|" + counts, "sha256")[:SIZE]

    def holds_counts(self, verdict: bytes | None, counts: bytes | None) -> bool:
        """Whether ``verdict`` is the seal of this counts value (constant-time compare)."""
        if verdict is None or counts is None or len(verdict) != SIZE:
            return False
        return hmac.compare_digest(bytes(verdict), self.seal_counts(bytes(counts)))


def holds(key: bytes, verdict: bytes | None, binding: Binding, row: Sequence[object]) -> bool:
    """Whether ``verdict`` is the seal of this row under ``key``."""
    return Sealer(key, binding).holds(verdict, row)
