"""A server process keeps the active keys it has verified with (KeyCache), so verifying a
submission needs no database read; the write checks the key against the database again, so a
key revoked elsewhere (the CLI, another process) is still refused, with nothing stored."""

from __future__ import annotations

import time

import pytest
from agg_helpers import enrolled
from sqlalchemy import event

from aggregator.errors import AggregatorError
from aggregator.submissions.commit import Verified
from aggregator.submissions.service import IngestLimits, KeyCache, ingest, verify
from protocol.submission import Period

LIMITS = IngestLimits(cap=256 * 1024, iat_future=300, iat_past=7 * 86400)


def _ingest(rt, body: bytes, keys: KeyCache):  # type: ignore[no-untyped-def]
    return ingest(
        rt.db.read,
        rt.db.session,
        rt.signer,
        rt.catalogues,
        body,
        now=time.time(),
        limits=LIMITS,
        committer=rt.committer,
        keys=keys,
    )


def test_a_known_key_and_catalogue_are_verified_without_a_database_read(network) -> None:  # type: ignore[no-untyped-def]
    agent = enrolled(network, "A81001")
    rt = network.runtime()
    keys = KeyCache()
    assert _ingest(rt, agent.submission(period=Period.month(2026, 1)), keys).created
    assert keys.get(agent.key.kid) is not None and keys.get(agent.key.kid).last_seq == 1  # type: ignore[union-attr]

    statements: list[str] = []
    event.listen(rt.db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    body = agent.submission(period=Period.month(2026, 2))
    out = verify(rt.db.read, rt.signer, rt.catalogues, body, now=time.time(), limits=LIMITS, keys=keys)  # fmt: skip
    assert isinstance(out, Verified)
    assert statements == []
    # without the cache the same verification reads the key
    verify(rt.db.read, rt.signer, rt.catalogues, body, now=time.time(), limits=LIMITS)
    assert any("practice_keys" in s for s in statements)


def test_a_key_revoked_by_the_cli_after_it_was_cached_is_refused_with_nothing_stored(
    network,
) -> None:  # type: ignore[no-untyped-def]
    agent = enrolled(network, "A81001")
    rt = network.runtime()
    keys = KeyCache()
    assert _ingest(rt, agent.submission(period=Period.month(2026, 1)), keys).created
    assert keys.get(agent.key.kid) is not None

    assert (
        network.cli("key", "revoke", agent.key.kid, "--key-dir", str(network.settings.key_dir)) == 0
    )
    before = network.counts()
    with pytest.raises(AggregatorError) as caught:
        _ingest(rt, agent.submission(period=Period.month(2026, 2)), keys)
    assert (caught.value.status_code, caught.value.code) == (403, "key-revoked")
    assert network.counts() == before
    assert keys.get(agent.key.kid) is None  # dropped: the next one is refused before its signature


def test_a_stale_cached_seq_still_gets_the_right_answers(network) -> None:  # type: ignore[no-untyped-def]
    """Another process accepted seq 1 after this one cached the key at seq 0: an identical
    retry still gets its stored receipt, and a lower seq is still refused, by the write."""
    agent = enrolled(network, "A81001")
    rt = network.runtime()
    stale = KeyCache()
    warm = agent.submission(period=Period.month(2026, 1), seq=1)
    first = verify(rt.db.read, rt.signer, rt.catalogues, warm, now=time.time(), limits=LIMITS, keys=stale)  # fmt: skip
    assert isinstance(first, Verified) and stale.get(agent.key.kid).last_seq == 0  # type: ignore[union-attr]

    elsewhere = network.runtime()
    accepted = _ingest(elsewhere, warm, KeyCache())
    assert accepted.created

    again = _ingest(rt, warm, stale)
    assert (again.created, again.receipt) == (False, accepted.receipt)
    before = network.counts()
    with pytest.raises(AggregatorError) as caught:
        _ingest(rt, agent.submission(period=Period.month(2026, 2), seq=1), stale)
    assert caught.value.code == "seq-not-increasing"
    assert caught.value.extensions == {"kid": agent.key.kid, "last_seq": 1}  # the stored seq
    assert network.counts() == before


def test_a_seq_refused_on_a_stale_cached_seq_names_the_stored_last_seq(network) -> None:  # type: ignore[no-untyped-def]
    """This process cached the key at seq 5; another accepted up to seq 10; a message with seq 3
    is refused by the check before the write, on the cached seq, and its last_seq member is the
    stored 10, not the cached 5 (a sender going above 5 would be refused again)."""
    agent = enrolled(network, "A81001")
    rt, elsewhere = network.runtime(), network.runtime()
    stale = KeyCache()
    assert _ingest(rt, agent.submission(period=Period.month(2026, 1), seq=5), stale).created
    assert stale.get(agent.key.kid).last_seq == 5  # type: ignore[union-attr]
    assert _ingest(
        elsewhere, agent.submission(period=Period.month(2026, 2), seq=10), KeyCache()
    ).created

    before = network.counts()
    with pytest.raises(AggregatorError) as caught:
        _ingest(rt, agent.submission(period=Period.month(2026, 3), seq=3), stale)
    assert caught.value.code == "seq-not-increasing"
    assert caught.value.extensions == {"kid": agent.key.kid, "last_seq": 10}
    assert "last accepted seq 10" in caught.value.message
    assert network.counts() == before


def test_warm_loads_the_active_keys_and_latest_catalogues_so_a_first_submission_reads_nothing(
    network,
) -> None:  # type: ignore[no-untyped-def]
    """A serve process warms its caches at start (Runtime.warm): every active key with its
    stored last seq, none revoked; then a practice's first submission is verified without a
    database read, and a key revoked after the warm-up is still refused by the write."""
    first, second, gone = (enrolled(network, ods) for ods in ("A81001", "A81002", "A81003"))
    rt = network.runtime()
    assert _ingest(rt, first.submission(period=Period.month(2026, 1)), KeyCache()).created
    assert (
        network.cli("key", "revoke", gone.key.kid, "--key-dir", str(network.settings.key_dir)) == 0
    )

    warm = network.runtime()
    warm.warm()
    held = {kid: warm.keys.get(kid) for kid in (first.key.kid, second.key.kid, gone.key.kid)}
    assert held[gone.key.kid] is None
    assert (held[first.key.kid].practice_ods, held[first.key.kid].last_seq) == ("A81001", 1)  # type: ignore[union-attr]
    assert (held[second.key.kid].practice_ods, held[second.key.kid].last_seq) == ("A81002", 0)  # type: ignore[union-attr]

    statements: list[str] = []
    event.listen(warm.db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    body = second.submission(period=Period.month(2026, 1))
    out = verify(warm.db.read, warm.signer, warm.catalogues, body, now=time.time(), limits=LIMITS, keys=warm.keys)  # fmt: skip
    assert isinstance(out, Verified)
    assert statements == []

    assert (
        network.cli("key", "revoke", second.key.kid, "--key-dir", str(network.settings.key_dir))
        == 0
    )
    before = network.counts()
    with pytest.raises(AggregatorError) as caught:
        _ingest(warm, second.submission(period=Period.month(2026, 2)), warm.keys)
    assert (caught.value.status_code, caught.value.code) == (403, "key-revoked")
    assert network.counts() == before
