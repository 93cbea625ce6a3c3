"""agent/outbound/sparse.py, the guard's sparse matrices, against SciPy's on random matrices.

The guard builds its relations with these few operations instead of importing ``scipy.sparse``
(0.3 s of CPU at start-up); each must give what ``scipy.sparse`` gives, entry for entry and in
the same storage order where the guard relies on it (HiGHS takes the column-wise arrays).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import csr_array
from scipy.sparse import vstack as sp_vstack
from scipy.sparse.csgraph import connected_components

from agent.outbound.sparse import Csr, bipartite_components, vstack


@st.composite
def coo(draw: st.DrawFn, max_rows: int = 12, max_cols: int = 12) -> tuple:
    m = draw(st.integers(0, max_rows))
    n = draw(st.integers(1, max_cols))
    k = draw(st.integers(0, 40)) if m else 0
    rows = draw(st.lists(st.integers(0, m - 1), min_size=k, max_size=k)) if m else []
    cols = draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k))
    data = draw(st.lists(st.integers(-3, 3), min_size=k, max_size=k))
    return (
        np.array(data, dtype=float),
        np.array(rows, dtype=np.int64),
        np.array(cols, dtype=np.int64),
        (m, n),
    )


def ours_and_scipy(case: tuple) -> tuple[Csr, csr_array]:
    data, rows, cols, shape = case
    return Csr.from_coo(data, rows, cols, shape), csr_array((data, (rows, cols)), shape=shape)


def same(a: Csr, b: csr_array) -> None:
    assert a.shape == b.shape
    dense = np.zeros(a.shape)
    r, c, d = a.coo()
    np.add.at(dense, (r, c), d)
    assert np.array_equal(dense, b.toarray())
    assert np.array_equal(a.indptr, b.indptr)
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data, b.data)


@settings(max_examples=200, deadline=None)
@given(coo())
def test_from_coo_sums_duplicates_and_orders_each_row_as_scipy(case: tuple) -> None:
    ours, theirs = ours_and_scipy(case)
    theirs.sum_duplicates()
    same(ours, theirs)


@settings(max_examples=200, deadline=None)
@given(coo(), st.data())
def test_products_rows_columns_and_stacking_match_scipy(case: tuple, data: st.DataObject) -> None:
    ours, theirs = ours_and_scipy(case)
    theirs.sum_duplicates()
    m, n = ours.shape
    x = np.array(data.draw(st.lists(st.integers(-50, 50), min_size=n, max_size=n)), dtype=float)
    assert np.array_equal(ours @ x, theirs @ x)
    assert np.array_equal(abs(ours) @ x, abs(theirs) @ x)
    rows = np.array(
        data.draw(st.lists(st.integers(0, m - 1), max_size=8)) if m else [], dtype=np.int64
    )
    same(ours.take_rows(rows), theirs[rows])
    cols = np.array(sorted(data.draw(st.sets(st.integers(0, n - 1)))), dtype=np.int64)
    same(ours.take_columns(cols), theirs[:, cols].tocsr())
    start, index, value = ours.columnwise()
    csc = theirs.tocsc()
    assert (start.tolist(), index.tolist(), value.tolist()) == (
        csc.indptr.tolist(), csc.indices.tolist(), csc.data.tolist()
    )  # fmt: skip
    assert np.array_equal(ours.to_scipy().toarray(), theirs.toarray())
    other, other_sp = ours_and_scipy(data.draw(coo(max_cols=n).filter(lambda c: c[3][1] == n)))
    other_sp.sum_duplicates()
    same(vstack([ours, other]), csr_array(sp_vstack([theirs, other_sp])))
    wide = ours.widened(n + 2)
    assert wide.shape == (m, n + 2)
    assert np.array_equal(wide @ np.append(x, [7.0, 9.0]), theirs @ x)


@settings(max_examples=200, deadline=None)
@given(coo())
def test_bipartite_components_are_scipys_connected_components(case: tuple) -> None:
    ours, _ = ours_and_scipy(case)
    m, n = ours.shape
    r, c, _ = ours.coo()
    graph = csr_array((np.ones(len(r)), (r, c + m)), shape=(m + n, m + n))
    count, theirs = connected_components(graph, directed=False)
    labels = bipartite_components(ours)
    assert len(set(labels.tolist())) == count
    # the same partition: two nodes share a part in one exactly when they do in the other
    assert np.array_equal(labels[:, None] == labels[None, :], theirs[:, None] == theirs[None, :])
    # numbered by each part's first node
    firsts = [int(np.flatnonzero(labels == k)[0]) for k in range(count)]
    assert firsts == sorted(firsts)


def test_a_long_chain_is_one_part() -> None:
    # a path through 2,000 rows and columns: many rounds of hooking for a naive propagation
    k = 2_000
    rows = np.repeat(np.arange(k), 2)[1:]
    cols = np.repeat(np.arange(k), 2)[:-1]
    a = Csr.from_coo(np.ones(len(rows)), rows, cols, (k, k))
    assert set(bipartite_components(a).tolist()) == {0}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Csr([1.0], [0], [0, 1, 1], (1, 1)), "one entry more than the rows"),
        (lambda: Csr([1.0], [3], [0, 1], (1, 2)), "column index is outside"),
        (lambda: Csr([1.0, 2.0], [0, 1], [0, 1], (1, 2)), "last entry"),
        (lambda: Csr.from_coo([1.0], [2], [0], (2, 2)), "row index is outside"),
        (lambda: Csr.from_coo([1.0], [0], [0], (1, 1)).take_columns([0, 0]), "strictly increasing"),
        (lambda: Csr.from_coo([1.0], [0], [0], (1, 1)).take_rows([1]), "row index is outside"),
        (lambda: Csr.from_coo([1.0], [0], [0], (1, 2)) @ np.zeros(3), "a vector of 2 values"),
        (lambda: vstack([Csr.empty((1, 2)), Csr.empty((1, 3))]), "differ in width"),
    ],
)
def test_misshapen_input_is_refused_with_what_is_wrong(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()
