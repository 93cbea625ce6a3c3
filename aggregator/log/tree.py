"""The Merkle tree over the ``log_nodes`` table (protocol.merkle's node layout).

protocol.merkle asks for nodes one at a time; a database wants them in one query. So every
operation runs twice: a dry run with a recording ``get_node`` (returning placeholder hashes) lists
the nodes needed, one query fetches them, and the real run reads from that map. Appends and proofs
read O(log n) rows in one round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from protocol import merkle

from ..db.bulk import insert_rows
from ..db.models import LogNode, table_of

T = TypeVar("T")
_PLACEHOLDER = b"\x00" * merkle.HASH_BYTES


def _with_nodes(session: Session, op: Callable[[merkle.GetNode], T]) -> T:
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return _PLACEHOLDER

    op(record)
    return op(_getter(fetch_nodes(session, wanted)))


def _getter(nodes: dict[tuple[int, int], bytes]) -> merkle.GetNode:
    def get(level: int, index: int) -> bytes:
        try:
            return nodes[(level, index)]
        except KeyError:
            raise LookupError(f"log node ({level}, {index}) is missing from the database") from None

    return get


def fetch_nodes(session: Session, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    keys = list(keys)
    out: dict[tuple[int, int], bytes] = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        rows = session.execute(
            select(LogNode.level, LogNode.idx, LogNode.hash).where(
                tuple_(LogNode.level, LogNode.idx).in_(chunk)
            )
        )
        for level, idx, h in rows:
            out[(level, idx)] = bytes(h)
    return out


def append_many_and_prove(
    session: Session, first_index: int, leaves: list[bytes]
) -> tuple[bytes, list[list[bytes]]]:
    """Store the nodes of ``leaves`` appended at ``first_index``, ``first_index + 1``, ... and
    return the root at the new size and each leaf's inclusion proof in that tree: one query
    reads every stored node the appends and proofs need (the key set does not depend on the
    hashes, so a dry run with placeholders finds it), one statement stores the new nodes."""
    size = first_index + len(leaves)

    def run(get: merkle.GetNode) -> tuple[list[tuple[int, int, bytes]], bytes, list[list[bytes]]]:
        made: dict[tuple[int, int], bytes] = {}

        def get_any(level: int, index: int) -> bytes:
            hit = made.get((level, index))
            return hit if hit is not None else get(level, index)

        new: list[tuple[int, int, bytes]] = []
        for k, leaf in enumerate(leaves):
            for lv, i, h in merkle.nodes_after_append(first_index + k, leaf, get_any):
                made[(lv, i)] = h
                new.append((lv, i, h))

        def range_hash(s: int, e: int) -> bytes:
            return merkle.range_hash_from_nodes(s, e, get_any)

        proofs = [
            merkle.inclusion_proof(first_index + k, size, range_hash) for k in range(len(leaves))
        ]
        return new, range_hash(0, size), proofs

    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return _PLACEHOLDER

    run(record)
    new_nodes, root_hash, proofs = run(_getter(fetch_nodes(session, wanted)))
    insert_rows(session, table_of(LogNode), ("level", "idx", "hash"), new_nodes)
    return root_hash, proofs


def root(session: Session, size: int) -> bytes:
    if size == 0:
        return merkle.EMPTY_ROOT
    return _with_nodes(session, lambda get: merkle.range_hash_from_nodes(0, size, get))


def inclusion_proof(session: Session, index: int, size: int) -> list[bytes]:
    return _with_nodes(
        session,
        lambda get: merkle.inclusion_proof(
            index, size, lambda s, e: merkle.range_hash_from_nodes(s, e, get)
        ),
    )


def inclusion_proofs(session: Session, indices: Iterable[int], size: int) -> dict[int, list[bytes]]:
    """:func:`inclusion_proof` of each leaf index in the tree of ``size``, with every node they
    need read in one query (a page of the payload audit proves 200 leaves)."""
    wanted = sorted(set(indices))
    return _with_nodes(
        session,
        lambda get: {
            i: merkle.inclusion_proof(i, size, lambda s, e: merkle.range_hash_from_nodes(s, e, get))
            for i in wanted
        },
    )


def consistency_proof(session: Session, old_size: int, new_size: int) -> list[bytes]:
    return _with_nodes(
        session,
        lambda get: merkle.consistency_proof(
            old_size, new_size, lambda s, e: merkle.range_hash_from_nodes(s, e, get)
        ),
    )
