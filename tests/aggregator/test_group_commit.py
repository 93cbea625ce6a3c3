"""Group commit (aggregator.submissions.commit): submissions that reach the sequencer together
share one transaction, and each still gets exactly the answer it would get alone."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest
from agg_helpers import enrolled
from sqlalchemy import select
from verify import verify_receipt

from aggregator.db import models
from aggregator.db.cells import protocol_cells
from aggregator.errors import AggregatorError
from aggregator.submissions.commit import Committer, Ingested, _Slot, store_batch
from aggregator.submissions.service import IngestLimits, ingest, verify
from protocol.envelope import Envelope, open_payload
from protocol.submission import Period, Receipt

LIMITS = IngestLimits(cap=256 * 1024, iat_future=300, iat_past=7 * 86400)


def _verified(rt, body: bytes):  # type: ignore[no-untyped-def]
    out = verify(rt.db.read, rt.signer, rt.catalogues, body, now=time.time(), limits=LIMITS)
    assert not isinstance(out, Ingested)
    return out


def _receipt(rt, raw: bytes) -> Receipt:  # type: ignore[no-untyped-def]
    return open_payload(
        Envelope.from_bytes(raw), [rt.signer.key.public], kind="receipt", model=Receipt
    )


def test_one_batch_answers_each_submission_as_if_alone(network) -> None:  # type: ignore[no-untyped-def]
    a, b = enrolled(network, "A81001"), enrolled(network, "A81002")
    rt = network.runtime()
    a1_model = a.submission_model(period=Period.month(2026, 1))
    a1 = a.sign(a1_model.to_bytes())
    reused = a.submission(period=Period.month(2026, 2), submission_id=a1_model.submission_id, seq=5)
    low_seq = a.submission(period=Period.month(2026, 3), seq=1)
    b1_model = b.submission_model(period=Period.month(2026, 1))
    b1 = b.sign(b1_model.to_bytes())
    b_again = b.submission(period=Period.month(2026, 1))  # a second plain one for that period
    b_fix = b.submission(
        period=Period.month(2026, 1), supersedes=b1_model.submission_id, reason="data_correction"
    )
    # Each passes the stateless checks (nothing is stored yet); the batch decides the rest.
    items = [_verified(rt, x) for x in (a1, a1, reused, low_seq, b1, b_again, b_fix)]
    before = network.counts()
    with rt.db.session() as s:
        out = store_batch(s, rt.signer, items)
    codes = [
        o.code if isinstance(o, AggregatorError) else ("new" if o.created else "same") for o in out
    ]
    assert codes == [
        "new",
        "same",  # the same bytes twice in one batch: the first one's receipt
        "submission-id-reused",
        "seq-not-increasing",
        "new",
        "period-already-submitted",
        "new",  # a correction of a submission earlier in the same batch
    ]
    assert out[0].receipt == out[1].receipt  # type: ignore[union-attr]
    # the 409 names the period's current submission, here one accepted earlier in the batch
    assert out[5].extensions == {"current_submission_id": b1_model.submission_id}  # type: ignore[union-attr]
    # the write's own replay refusals carry their members too: the stored envelope, here one
    # accepted earlier in the batch, and the key's last seq as the batch has moved it (a1)
    assert out[2].extensions == {"envelope_sha256": items[0].sha}  # type: ignore[union-attr]
    assert out[3].extensions == {"kid": a.key.kid, "last_seq": 1}  # type: ignore[union-attr]
    after = network.counts()
    assert after["submissions"] - before["submissions"] == 3
    assert after["log_size"] - before["log_size"] == 3
    assert after["checkpoints"] - before["checkpoints"] == 1  # one checkpoint per batch
    receipts = [_receipt(rt, o.receipt) for o in out if isinstance(o, Ingested) and o.created]
    assert [r.leaf_index for r in receipts] == list(range(before["log_size"], after["log_size"]))
    assert {r.tree_size for r in receipts} == {after["log_size"]}
    with network.database.read() as s:
        first = s.get(models.Submission, b1_model.submission_id)
        assert first is not None and not first.effective
        assert first.superseded_by is not None
        keys = {k.practice_ods: k.last_seq for k in s.scalars(select(models.PracticeKey))}
        stored = {
            c.key: tuple((x.value, x.status) for x in (c.denominator, c.numerator, c.exclusions))
            for c in protocol_cells(
                s.scalars(
                    select(models.Cell).where(models.Cell.submission_id == a1_model.submission_id)
                )
            )
        }
    assert keys == {"A81001": 1, "A81002": 3}
    sent = {
        c.key: tuple((x.value, x.status) for x in (c.denominator, c.numerator, c.exclusions))
        for c in a1_model.cells
    }
    assert stored == sent  # every value and status, nulls for suppressed counts included
    assert any(x[0] is None for cell in sent.values() for x in cell)


def test_waiting_submissions_share_a_transaction_and_every_receipt_verifies(server) -> None:  # type: ignore[no-untyped-def]
    network = server.network
    agents = [enrolled(network, f"A8100{i}") for i in range(1, 9)]
    bodies = [ag.submission(period=Period.month(2026, 1)) for ag in agents]
    rt = network.runtime()
    gate = threading.Event()
    entered = threading.Event()
    first = {"held": False}

    @contextmanager
    def gated_session():  # type: ignore[no-untyped-def]
        if not first["held"]:  # hold the first batch until the others are waiting
            first["held"] = True
            entered.set()
            assert gate.wait(30)
        with rt.db.session() as s:
            yield s

    committer = Committer(gated_session, rt.signer)
    results: dict[int, Ingested] = {}

    def send(i: int) -> None:
        results[i] = ingest(
            rt.db.read, rt.db.session, rt.signer, rt.catalogues, bodies[i],
            now=time.time(), limits=LIMITS, committer=committer,
        )  # fmt: skip

    threads = [threading.Thread(target=send, args=(0,))]
    threads[0].start()
    assert entered.wait(30)
    threads += [threading.Thread(target=send, args=(i,)) for i in range(1, len(bodies))]
    for t in threads[1:]:
        t.start()
    deadline = time.time() + 30
    while len(committer._pending) < len(bodies) - 1 and time.time() < deadline:
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(30)
    assert sorted(results) == list(range(len(bodies)))
    assert committer.batches == 2 and committer.committed == len(bodies)
    sizes = set()
    for i, body in enumerate(bodies):
        assert results[i].created
        r = verify_receipt(server.client, results[i].receipt, body)
        sizes.add(r.tree_size)
    assert len(sizes) == 2  # the first alone, then the seven that waited, in one checkpoint


def test_a_failed_batch_is_retried_one_by_one(network) -> None:  # type: ignore[no-untyped-def]
    agents = [enrolled(network, f"A8100{i}") for i in range(1, 4)]
    rt = network.runtime()
    bodies = [ag.submission(period=Period.month(2026, 1)) for ag in agents]
    items = [_verified(rt, b) for b in bodies]
    calls = {"n": 0}

    @contextmanager
    def flaky_session():  # type: ignore[no-untyped-def]
        calls["n"] += 1
        with rt.db.session() as s:
            yield s
            if calls["n"] == 1:  # the batch's transaction fails at the end: rolled back
                raise RuntimeError("connection lost")

    committer = Committer(flaky_session, rt.signer)
    before = network.counts()
    batch = [_Slot(v) for v in items]
    committer._run(batch)
    assert calls["n"] == 1 + len(items)
    assert all(isinstance(s.outcome, Ingested) and s.outcome.created for s in batch)
    after = network.counts()
    assert after["submissions"] - before["submissions"] == len(items)
    assert after["log_size"] - before["log_size"] == len(items)


@pytest.mark.parametrize("max_batch", [1, 3])
def test_batches_respect_max_batch(network, max_batch: int) -> None:  # type: ignore[no-untyped-def]
    agents = [enrolled(network, f"A8100{i}") for i in range(1, 7)]
    rt = network.runtime()
    committer = Committer(rt.db.session, rt.signer, max_batch=max_batch)
    committer._pending = [
        _Slot(_verified(rt, ag.submission(period=Period.month(2026, 1)))) for ag in agents
    ]
    waiter = _verified(rt, agents[0].submission(period=Period.month(2026, 2)))
    out = committer.commit(waiter)  # leads: takes the waiting ones first, max_batch at a time
    assert out.created
    assert committer.batches == -(-(len(agents) + 1) // max_batch)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_processes_take_turns_on_a_file_lock(network) -> None:  # type: ignore[no-untyped-def]
    """Two committers (as two server processes) with the same lock file: while one holds its
    turn, the other's batch waits for it rather than polling SQLite's lock."""
    rt = network.runtime()
    assert rt.committer.lock_path is not None and rt.committer.lock_path.endswith("-sequencer.lock")
    agent = enrolled(network, "A81001")
    other = Committer(rt.db.session, rt.signer, lock_path=rt.committer.lock_path)
    item = _verified(rt, agent.submission(period=Period.month(2026, 1)))
    done = threading.Event()
    with rt.committer._turn():
        t = threading.Thread(target=lambda: (other.commit(item), done.set()))
        t.start()
        assert not done.wait(0.5)  # blocked on the file lock
        assert other.batches == 0
    assert done.wait(30)
    t.join(30)
    assert other.batches == 1
