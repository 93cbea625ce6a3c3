"""RFC 9162 Merkle tree: the CT reference vectors, generated-proof properties, bit flips."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ProofError
from protocol.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    nodes_after_append,
    range_hash_from_nodes,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

EXAMPLES = 2000 if os.environ.get("FEDQI_LONG") == "1" else 60
PROPERTY = settings(max_examples=EXAMPLES, derandomize=True, deadline=None)

# The Certificate Transparency reference set (shared/reference/protocol.md section 4).
LEAVES = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
A = "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
B = "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"
C = "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"
D = "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"
E = "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"
F = "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"
ROOT4 = ROOTS[4]


def _hx(values: list[bytes]) -> list[str]:
    return [v.hex() for v in values]


@pytest.fixture
def reference_tree() -> MemoryTree:
    return MemoryTree.from_leaf_hashes([leaf_hash(d) for d in LEAVES])


@pytest.mark.parametrize("size", sorted(ROOTS))
def test_roots_match_ct_reference(size: int, reference_tree: MemoryTree) -> None:
    assert reference_tree.root(size).hex() == ROOTS[size]
    assert root_from_leaf_hashes([leaf_hash(d) for d in LEAVES[:size]]).hex() == ROOTS[size]


def test_empty_tree_root_is_hash_of_nothing() -> None:
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert MemoryTree().root() == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(("index", "expected"), [(0, [A, B, C]), (5, [D, E, ROOT4])])
def test_inclusion_proofs_match_ct_reference(
    index: int, expected: list[str], reference_tree: MemoryTree
) -> None:
    proof = reference_tree.inclusion_proof(index, 8)
    assert _hx(proof) == expected
    verify_inclusion(index, 8, leaf_hash(LEAVES[index]), proof, bytes.fromhex(ROOTS[8]))


@pytest.mark.parametrize(
    ("old", "new", "expected"), [(1, 8, [A, B, C]), (6, 8, [F, E, ROOT4]), (2, 5, [B, D])]
)
def test_consistency_proofs_match_ct_reference(
    old: int, new: int, expected: list[str], reference_tree: MemoryTree
) -> None:
    proof = reference_tree.consistency_proof(old, new)
    assert _hx(proof) == expected
    verify_consistency(old, new, bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new]), proof)


def test_module_functions_agree_with_memory_tree(reference_tree: MemoryTree) -> None:
    hashes = [leaf_hash(d) for d in LEAVES]

    def slow_range_hash(start: int, end: int) -> bytes:
        return root_from_leaf_hashes(hashes[start:end])

    for size in range(1, 9):
        for index in range(size):
            assert inclusion_proof(index, size, slow_range_hash) == reference_tree.inclusion_proof(
                index, size
            )
        for old in range(size + 1):
            assert consistency_proof(old, size, slow_range_hash) == (
                reference_tree.consistency_proof(old, size)
            )


def test_nodes_after_append_stores_completed_parents() -> None:
    store: dict[tuple[int, int], bytes] = {}
    written = []
    for i in range(8):
        rows = nodes_after_append(i, leaf_hash(LEAVES[i]), lambda lv, ix: store[(lv, ix)])
        written.append([(lv, ix) for lv, ix, _ in rows])
        store.update({(lv, ix): h for lv, ix, h in rows})
    assert written[6] == [(0, 6)]
    assert written[7] == [(0, 7), (1, 3), (2, 1), (3, 0)]
    assert store[(3, 0)].hex() == ROOTS[8]
    assert store[(1, 0)] == node_hash(leaf_hash(LEAVES[0]), leaf_hash(LEAVES[1]))
    assert range_hash_from_nodes(0, 7, lambda lv, ix: store[(lv, ix)]).hex() == ROOTS[7]
    # An unaligned range is still MTH over it.
    assert range_hash_from_nodes(1, 6, lambda lv, ix: store[(lv, ix)]) == root_from_leaf_hashes(
        [leaf_hash(d) for d in LEAVES[1:6]]
    )


def test_proof_ranges_read_logarithmic_nodes() -> None:
    tree = MemoryTree.from_leaf_hashes([leaf_hash(i.to_bytes(4, "big")) for i in range(1000)])
    reads = 0
    inner = tree.get_node

    def counting(level: int, index: int) -> bytes:
        nonlocal reads
        reads += 1
        return inner(level, index)

    proof = inclusion_proof(777, 1000, lambda s, e: range_hash_from_nodes(s, e, counting))
    verify_inclusion(777, 1000, tree.leaf(777), proof, tree.root())
    assert reads <= 2 * (1000).bit_length()


# --- properties --------------------------------------------------------------------------------


def _tree(size: int) -> MemoryTree:
    return MemoryTree.from_leaf_hashes([leaf_hash(i.to_bytes(4, "big")) for i in range(size)])


def _flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def inclusion_cases(draw: st.DrawFn) -> tuple[MemoryTree, int]:
    size = draw(st.integers(1, 300))
    return _tree(size), draw(st.integers(0, size - 1))


@st.composite
def consistency_cases(draw: st.DrawFn) -> tuple[MemoryTree, int, int]:
    new = draw(st.integers(1, 300))
    old = draw(st.integers(0, new))
    return _tree(new), old, new


@PROPERTY
@given(inclusion_cases())
def test_every_inclusion_proof_verifies(case: tuple[MemoryTree, int]) -> None:
    tree, index = case
    verify_inclusion(index, tree.size, tree.leaf(index), tree.inclusion_proof(index), tree.root())


@PROPERTY
@given(consistency_cases())
def test_every_consistency_proof_verifies(case: tuple[MemoryTree, int, int]) -> None:
    tree, old, new = case
    verify_consistency(old, new, tree.root(old), tree.root(new), tree.consistency_proof(old, new))


@PROPERTY
@given(inclusion_cases(), st.data())
def test_any_bit_flip_breaks_an_inclusion_proof(
    case: tuple[MemoryTree, int], data: st.DataObject
) -> None:
    tree, index = case
    size, leaf, proof, root = tree.size, tree.leaf(index), tree.inclusion_proof(index), tree.root()
    targets = ["leaf", "root"] + [f"proof{i}" for i in range(len(proof))]
    target = data.draw(st.sampled_from(targets))
    bit = data.draw(st.integers(0, 255))
    if target == "leaf":
        leaf = _flip(leaf, bit)
    elif target == "root":
        root = _flip(root, bit)
    else:
        i = int(target[5:])
        proof = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf, proof, root)


def _inclusion_shape(index: int, size: int) -> tuple[str, ...]:
    """Which side each sibling of the audit path is on, leaf up, from the RFC's PATH recursion
    (independent of the verifier's bit arithmetic)."""
    sides: list[str] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if index < lo + k:
            sides.append("right")
            hi = lo + k
        else:
            sides.append("left")
            lo += k
    return tuple(reversed(sides))


def _consistency_shape(old: int, new: int) -> tuple[object, ...]:
    """The RFC's SUBPROOF recursion (0 < old < new) as a shape: sibling sides, and whether the
    proof starts from the old root itself (b still true) or from a stored subtree hash."""
    sides: list[str] = []
    lo, hi, whole = 0, new, True
    while old - lo != hi - lo:
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if old - lo <= k:
            sides.append("right")
            hi = lo + k
        else:
            sides.append("left")
            lo += k
            whole = False
    return (whole, tuple(reversed(sides)))


@PROPERTY
@given(inclusion_cases(), st.data())
def test_changed_index_or_size_breaks_an_inclusion_proof(
    case: tuple[MemoryTree, int], data: st.DataObject
) -> None:
    tree, index = case
    size, leaf, proof, root = tree.size, tree.leaf(index), tree.inclusion_proof(index), tree.root()
    new_index, new_size = data.draw(
        st.tuples(st.integers(0, 2 * size), st.integers(0, 2 * size)).filter(
            lambda t: t != (index, size)
        )
    )
    # RFC 9162 proofs bind the leaf, the root and the path's shape, not the index and size as
    # numbers: (1, 2), (2, 3) and (4, 5) all have one left sibling. A changed (index, size) is
    # accepted exactly when its shape is the same; fedqi binds the numbers through the signed
    # receipt and checkpoint.
    if new_index < new_size and _inclusion_shape(new_index, new_size) == _inclusion_shape(
        index, size
    ):
        verify_inclusion(new_index, new_size, leaf, proof, root)
    else:
        with pytest.raises(ProofError):
            verify_inclusion(new_index, new_size, leaf, proof, root)


def test_inclusion_shape_aliases_are_real() -> None:
    tree = _tree(5)
    proof = tree.inclusion_proof(4)  # one left sibling: MTH(D[0:4])
    verify_inclusion(4, 5, tree.leaf(4), proof, tree.root())
    verify_inclusion(2, 3, tree.leaf(4), proof, tree.root())
    with pytest.raises(ProofError):
        verify_inclusion(3, 5, tree.leaf(4), proof, tree.root())


@PROPERTY
@given(consistency_cases(), st.data())
def test_any_bit_flip_breaks_a_consistency_proof(
    case: tuple[MemoryTree, int, int], data: st.DataObject
) -> None:
    tree, old, new = case
    old_root, new_root, proof = tree.root(old), tree.root(new), tree.consistency_proof(old, new)
    # Every tree extends the empty tree, so from size 0 the new root is not constrained.
    roots = ["old_root"] if old == 0 else ["old_root", "new_root"]
    targets = roots + [f"proof{i}" for i in range(len(proof))]
    target = data.draw(st.sampled_from(targets))
    bit = data.draw(st.integers(0, 255))
    if target == "old_root":
        old_root = _flip(old_root, bit)
    elif target == "new_root":
        new_root = _flip(new_root, bit)
    else:
        i = int(target[5:])
        proof = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
    with pytest.raises(ProofError):
        verify_consistency(old, new, old_root, new_root, proof)


@PROPERTY
@given(consistency_cases(), st.data())
def test_changed_sizes_break_a_consistency_proof(
    case: tuple[MemoryTree, int, int], data: st.DataObject
) -> None:
    tree, old, new = case
    old_root, new_root, proof = tree.root(old), tree.root(new), tree.consistency_proof(old, new)
    other_old, other_new = data.draw(
        st.tuples(st.integers(0, 2 * new), st.integers(0, 2 * new)).filter(
            lambda t: t != (old, new)
        )
    )
    # As for inclusion: only a change to the same proof shape can be accepted; outside the
    # RFC's 0 < old < new only the empty-tree and equal-size rules apply.
    if other_old > other_new:
        accepted = False
    elif other_old == other_new:
        accepted = not proof and old_root == new_root
    elif other_old == 0:
        accepted = not proof and old_root == EMPTY_ROOT
    elif old in (0, new):
        accepted = False  # an empty proof never verifies 0 < old < new
    else:
        accepted = _consistency_shape(other_old, other_new) == _consistency_shape(old, new)
    if accepted:
        verify_consistency(other_old, other_new, old_root, new_root, proof)
    else:
        with pytest.raises(ProofError):
            verify_consistency(other_old, other_new, old_root, new_root, proof)


# --- edge cases --------------------------------------------------------------------------------


def test_inclusion_rejects_index_outside_tree() -> None:
    tree = _tree(4)
    with pytest.raises(ProofError, match="not below tree size"):
        verify_inclusion(4, 4, tree.leaf(3), tree.inclusion_proof(3), tree.root())


def test_inclusion_rejects_extra_and_missing_proof_elements() -> None:
    tree = _tree(5)
    proof = tree.inclusion_proof(2)
    with pytest.raises(ProofError, match="too many"):
        verify_inclusion(2, 5, tree.leaf(2), [*proof, proof[0]], tree.root())
    with pytest.raises(ProofError, match="too few"):
        verify_inclusion(2, 5, tree.leaf(2), proof[:-1], tree.root())


def test_inclusion_rejects_wrong_hash_length() -> None:
    tree = _tree(3)
    with pytest.raises(ProofError, match="proof\\[0\\] is 31 bytes"):
        verify_inclusion(0, 3, tree.leaf(0), [b"\0" * 31, b"\0" * 32], tree.root())


def test_consistency_with_equal_sizes_needs_equal_roots_and_no_proof() -> None:
    tree = _tree(5)
    verify_consistency(5, 5, tree.root(), tree.root(), [])
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(5, 5, tree.root(), tree.root(), [tree.leaf(0)])
    with pytest.raises(ProofError, match="roots differ"):
        verify_consistency(5, 5, tree.root(4), tree.root(), [])


def test_consistency_from_empty_tree() -> None:
    tree = _tree(5)
    verify_consistency(0, 5, EMPTY_ROOT, tree.root(), [])
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(0, 5, EMPTY_ROOT, tree.root(), [tree.leaf(0)])
    with pytest.raises(ProofError, match="empty tree's root"):
        verify_consistency(0, 5, tree.root(1), tree.root(), [])


def test_consistency_rejects_shrinking_tree_and_empty_proof() -> None:
    tree = _tree(6)
    with pytest.raises(ProofError, match="larger than new size"):
        verify_consistency(6, 3, tree.root(6), tree.root(3), [])
    with pytest.raises(ProofError, match="is empty"):
        verify_consistency(3, 6, tree.root(3), tree.root(6), [])


def test_generation_rejects_bad_arguments() -> None:
    tree = _tree(4)
    with pytest.raises(ValueError, match="index"):
        tree.inclusion_proof(4)
    with pytest.raises(ValueError, match="beyond the tree size"):
        tree.consistency_proof(2, 5)
    with pytest.raises(ValueError, match="old_size <= new_size"):
        consistency_proof(3, 2, tree.range_hash)
