"""RFC 9162 (Certificate Transparency v2) Merkle tree hashes and proofs.

Hashes are raw 32-byte SHA-256 digests::

    leaf_hash(d)    = SHA-256(0x00 || d)
    node_hash(l, r) = SHA-256(0x01 || l || r)
    MTH({})         = SHA-256()
    MTH(D[n])       = node_hash(MTH(D[0:k]), MTH(D[k:n]))   k = largest power of 2 < n

Proof generation takes a :data:`RangeHash` (``MTH(D[start:end])``) so proofs can be served from
any store of hashes; verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step.

Stored node layout (shared by :class:`MemoryTree` and the aggregator's node table): node
``(level, index)`` is the root of the *perfect* subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``. Level 0 holds the leaf hashes (index = leaf index);
``(level + 1, i) = node_hash((level, 2i), (level, 2i + 1))``. A node is stored once its subtree is
complete and never changes afterwards, so a log stores exactly the rows :func:`nodes_after_append`
returns for each new leaf (one row, plus one per completed parent: at most log2(n) + 1) and builds
its range hash with :func:`range_hash_from_nodes`, which reads O(log n) nodes for every range a
proof or a root needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from .errors import ProofError

HASH_BYTES = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

RangeHash = Callable[[int, int], bytes]
"""``range_hash(start, end)`` returns ``MTH(D[start:end])`` for ``0 <= start < end``."""

GetNode = Callable[[int, int], bytes]
"""``get_node(level, index)`` returns a stored node hash (see the module docstring)."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of 2 smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over the given leaf hashes (``EMPTY_ROOT`` for none)."""
    if not hashes:
        return EMPTY_ROOT
    # Fold perfect subtrees left to right on a stack (RFC 9162 section 2.1.2), then combine the
    # remaining ones right to left.
    stack: list[tuple[int, bytes]] = []  # (size, hash), sizes strictly decreasing
    for h in hashes:
        size, cur = 1, h
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            size, cur = size + left_size, node_hash(left, cur)
        stack.append((size, cur))
    root = stack[-1][1]
    for _, left in reversed(stack[:-1]):
        root = node_hash(left, root)
    return root


def inclusion_proof(index: int, size: int, range_hash: RangeHash) -> list[bytes]:
    """The RFC 9162 section 2.1.3.1 audit path for leaf ``index`` in the tree of ``size``."""
    if not 0 <= index < size:
        raise ValueError(f"inclusion proof needs 0 <= index < size, got index {index}, size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(range_hash(lo + k, hi))
            hi = lo + k
        else:
            path.append(range_hash(lo, lo + k))
            lo = lo + k
    path.reverse()  # collected root-down; the proof lists siblings leaf-up
    return path


def consistency_proof(old_size: int, new_size: int, range_hash: RangeHash) -> list[bytes]:
    """The RFC 9162 section 2.1.4.1 proof that the tree of ``old_size`` is a prefix of the tree
    of ``new_size``. Empty when ``old_size`` is 0 or equals ``new_size``."""
    if not 0 <= old_size <= new_size:
        raise ValueError(
            f"consistency proof needs 0 <= old_size <= new_size, got {old_size}, {new_size}"
        )
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    lo, hi = 0, new_size
    whole_old_tree = True  # the RFC's b: still on the path that is the old tree's own root
    while True:
        m = old_size - lo
        if m == hi - lo:
            if not whole_old_tree:
                proof.append(range_hash(lo, hi))
            break
        k = _split(hi - lo)
        if m <= k:
            proof.append(range_hash(lo + k, hi))
            hi = lo + k
        else:
            proof.append(range_hash(lo, lo + k))
            lo = lo + k
            whole_old_tree = False
    proof.reverse()
    return proof


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_BYTES:
        raise ProofError(f"{what} is {len(value)} bytes, a SHA-256 hash is {HASH_BYTES}")


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf hash) is at ``index`` in the tree of ``size`` with ``root``
    (RFC 9162 section 2.1.3.2). Raises :class:`ProofError` naming the failed check."""
    if index < 0 or size < 0:
        raise ProofError(f"negative index {index} or size {size}")
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError(
                f"inclusion proof for leaf {index} in size {size} has too many elements"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof for leaf {index} in size {size} has too few elements")
    if r != root:
        raise ProofError(f"inclusion proof for leaf {index} in size {size} does not match the root")


def verify_consistency(  # noqa: C901 (RFC 9162 section 2.1.4.2, step by step as the RFC writes it)
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``old_size`` with ``old_root`` is a prefix of the tree of
    ``new_size`` with ``new_root`` (RFC 9162 section 2.1.4.2). Raises :class:`ProofError`.

    Outside the RFC's ``0 < old_size < new_size``: equal sizes need an empty proof and equal
    roots; old size 0 needs an empty proof and the empty tree's root.
    """
    if old_size < 0 or new_size < 0:
        raise ProofError(f"negative tree size {old_size} or {new_size}")
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
    if old_size == new_size:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(f"roots differ for the same tree size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise ProofError("consistency proof from the empty tree must be empty")
        if old_root != EMPTY_ROOT:
            raise ProofError("old root is not the empty tree's root for size 0")
        return
    if not proof:
        raise ProofError(f"consistency proof from {old_size} to {new_size} is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of 2: the old root is a node of the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(
                f"consistency proof from {old_size} to {new_size} has too many elements"
            )
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof from {old_size} to {new_size} has too few elements")
    if fr != old_root:
        raise ProofError(
            f"consistency proof from {old_size} to {new_size} does not match the old root"
        )
    if sr != new_root:
        raise ProofError(
            f"consistency proof from {old_size} to {new_size} does not match the new root"
        )


def nodes_after_append(
    leaf_index: int, leaf: bytes, get_node: GetNode
) -> list[tuple[int, int, bytes]]:
    """The ``(level, index, hash)`` nodes to store after appending ``leaf`` (a leaf hash) at
    ``leaf_index``: the leaf itself, then every parent whose subtree it completes.
    ``get_node`` is asked only for nodes already stored (left siblings)."""
    if leaf_index < 0:
        raise ValueError(f"negative leaf index {leaf_index}")
    _check_hash(leaf, "leaf hash")
    out = [(0, leaf_index, leaf)]
    level, index, cur = 0, leaf_index, leaf
    while index & 1:  # a right child: its parent is now complete
        cur = node_hash(get_node(level, index - 1), cur)
        level, index = level + 1, index >> 1
        out.append((level, index, cur))
    return out


def range_hash_from_nodes(start: int, end: int, get_node: GetNode) -> bytes:
    """``MTH(D[start:end])`` from stored perfect-subtree nodes.

    Reads one node per set bit of ``end - start`` for the aligned ranges that roots and proofs
    use; an arbitrary range is split as MTH splits it, so it is correct but may read more.
    """
    if not 0 <= start < end:
        raise ValueError(f"range hash needs 0 <= start < end, got {start}, {end}")
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        return get_node(n.bit_length() - 1, start // n)
    k = _split(n)
    return node_hash(
        range_hash_from_nodes(start, start + k, get_node),
        range_hash_from_nodes(start + k, end, get_node),
    )


class MemoryTree:
    """An append-only Merkle tree held in memory, storing the node layout of the module
    docstring: appends and proofs cost O(log n) hashes."""

    def __init__(self) -> None:
        self._nodes: dict[tuple[int, int], bytes] = {}
        self._size = 0

    @classmethod
    def from_leaf_hashes(cls, hashes: Sequence[bytes]) -> MemoryTree:
        tree = cls()
        for h in hashes:
            tree.append(h)
        return tree

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> int:
        """Append a leaf hash; return its index."""
        index = self._size
        for level, i, h in nodes_after_append(index, leaf_hash, self.get_node):
            self._nodes[(level, i)] = h
        self._size += 1
        return index

    def get_node(self, level: int, index: int) -> bytes:
        try:
            return self._nodes[(level, index)]
        except KeyError:
            raise KeyError(f"no stored node ({level}, {index})") from None

    def leaf(self, index: int) -> bytes:
        return self.get_node(0, index)

    def range_hash(self, start: int, end: int) -> bytes:
        if end > self._size:
            raise ValueError(f"range end {end} is beyond the tree size {self._size}")
        return range_hash_from_nodes(start, end, self.get_node)

    def root(self, size: int | None = None) -> bytes:
        size = self._size if size is None else size
        if not 0 <= size <= self._size:
            raise ValueError(f"size {size} is outside the tree (0..{self._size})")
        return EMPTY_ROOT if size == 0 else self.range_hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self._size if size is None else size
        if size > self._size:
            raise ValueError(f"size {size} is beyond the tree size {self._size}")
        return inclusion_proof(index, size, self.range_hash)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new_size = self._size if new_size is None else new_size
        if new_size > self._size:
            raise ValueError(f"size {new_size} is beyond the tree size {self._size}")
        return consistency_proof(old_size, new_size, self.range_hash)
