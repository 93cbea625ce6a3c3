"""The few sparse-matrix operations the disclosure guard needs, on numpy arrays alone.

The guard's relations are sparse rows of small integer coefficients. It needs them stacked, some
rows and columns picked out, a product with a vector, the column-wise arrays HiGHS takes, and
the connected parts of the rows and columns. SciPy's sparse matrices do all of this, but
importing ``scipy.sparse`` and ``scipy.sparse.csgraph`` costs about 0.3 s of CPU, a fifth of a
whole ``fedqi-agent preview`` (docs/benchmarks.md, "The guard without SciPy's sparse
matrices"), for operations a few lines of numpy each. SciPy stays a dependency: the guard loads
``scipy.optimize.milp`` for the rare integer program its linear relaxation does not settle
(:meth:`Csr.to_scipy` hands that the matrix), and ``tests/agent/test_guard_sparse.py`` checks
every operation here against ``scipy.sparse`` on random matrices.

Storage follows SciPy's compressed sparse rows: ``indptr`` (one more than the rows), then each
row's column ``indices`` and ``data`` in storage order. As in SciPy, a matrix made from
coordinates has its duplicates summed and each row's columns sorted; one made from the three
arrays keeps them as given; explicit zeros are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class Csr:
    """A sparse matrix in compressed sparse row form (see the module docstring)."""

    __slots__ = ("data", "indices", "indptr", "shape", "_rows")

    def __init__(
        self,
        data: npt.ArrayLike,
        indices: npt.ArrayLike,
        indptr: npt.ArrayLike,
        shape: tuple[int, int],
    ) -> None:
        self.data: FloatArray = np.asarray(data, dtype=np.float64)
        self.indices: IntArray = np.asarray(indices, dtype=np.int64)
        self.indptr: IntArray = np.asarray(indptr, dtype=np.int64)
        self.shape = (int(shape[0]), int(shape[1]))
        if len(self.indptr) != self.shape[0] + 1 or len(self.data) != len(self.indices):
            raise ValueError(
                "Csr: indptr must have one entry more than the rows, data one per index"
            )
        if len(self.indices) != int(self.indptr[-1]):
            raise ValueError("Csr: indptr's last entry must be the number of stored entries")
        if len(self.indices) and (
            int(self.indices.min()) < 0 or int(self.indices.max()) >= self.shape[1]
        ):
            raise ValueError("Csr: a column index is outside the matrix")
        self._rows: IntArray | None = None

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> Csr:
        return cls(
            np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(shape[0] + 1, dtype=np.int64), shape
        )

    @classmethod
    def from_coo(
        cls, data: npt.ArrayLike, row: npt.ArrayLike, col: npt.ArrayLike, shape: tuple[int, int]
    ) -> Csr:
        """From coordinates: duplicates summed, each row's columns in order."""
        d = np.asarray(data, dtype=np.float64)
        r = np.asarray(row, dtype=np.int64)
        c = np.asarray(col, dtype=np.int64)
        m, n = int(shape[0]), int(shape[1])
        if len(r) and (int(r.min()) < 0 or int(r.max()) >= m):
            raise ValueError("Csr: a row index is outside the matrix")
        if len(c) and (int(c.min()) < 0 or int(c.max()) >= n):
            raise ValueError("Csr: a column index is outside the matrix")
        width = max(n, 1)  # entries as row * width + column: sorting them orders rows, then columns
        uniq, inverse = np.unique(r * width + c, return_inverse=True)
        summed = np.bincount(inverse.reshape(-1), weights=d, minlength=len(uniq))
        indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(uniq // width, minlength=m), out=indptr[1:])
        return cls(summed, uniq % width, indptr, (m, n))

    @property
    def nnz(self) -> int:
        return len(self.data)

    def row_of_entries(self) -> IntArray:
        """The row of each stored entry."""
        if self._rows is None:
            self._rows = np.repeat(np.arange(self.shape[0], dtype=np.int64), np.diff(self.indptr))
        return self._rows

    def coo(self) -> tuple[IntArray, IntArray, FloatArray]:
        """(row, column, value) of each stored entry, in storage order."""
        return self.row_of_entries(), self.indices, self.data

    def __matmul__(self, x: FloatArray) -> FloatArray:
        v = np.asarray(x, dtype=np.float64)
        if v.shape != (self.shape[1],):
            raise ValueError(f"Csr: a vector of {self.shape[1]} values is needed, not {v.shape}")
        out: FloatArray = np.bincount(
            self.row_of_entries(), weights=self.data * v[self.indices], minlength=self.shape[0]
        ).astype(np.float64, copy=False)
        return out

    def __abs__(self) -> Csr:
        return Csr(np.abs(self.data), self.indices, self.indptr, self.shape)

    def widened(self, columns: int) -> Csr:
        """The same rows with more (empty) columns."""
        if columns < self.shape[1]:
            raise ValueError("Csr: widened cannot drop columns")
        return Csr(self.data, self.indices, self.indptr, (self.shape[0], columns))

    def take_rows(self, rows: npt.ArrayLike) -> Csr:
        """The rows ``rows`` (in that order), each in its storage order."""
        pick = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(pick) and (int(pick.min()) < 0 or int(pick.max()) >= self.shape[0]):
            raise ValueError("Csr: a row index is outside the matrix")
        starts = self.indptr[pick]
        counts = self.indptr[pick + 1] - starts
        indptr = np.zeros(len(pick) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        pos = np.arange(int(indptr[-1]), dtype=np.int64) + np.repeat(starts - indptr[:-1], counts)
        return Csr(self.data[pos], self.indices[pos], indptr, (len(pick), self.shape[1]))

    def take_columns(self, columns: npt.ArrayLike) -> Csr:
        """The columns ``columns`` (strictly increasing), renumbered from 0 in that order."""
        cols = np.asarray(columns, dtype=np.int64).reshape(-1)
        if len(cols) and (
            int(cols.min()) < 0 or int(cols.max()) >= self.shape[1] or np.any(np.diff(cols) <= 0)
        ):
            raise ValueError("Csr: columns must be strictly increasing and inside the matrix")
        where = np.full(self.shape[1], -1, dtype=np.int64)
        where[cols] = np.arange(len(cols), dtype=np.int64)
        new = where[self.indices]
        keep = new >= 0
        indptr = np.zeros(self.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.row_of_entries()[keep], minlength=self.shape[0]), out=indptr[1:])
        return Csr(self.data[keep], new[keep], indptr, (self.shape[0], len(cols)))

    def columnwise(self) -> tuple[IntArray, IntArray, FloatArray]:
        """(start, row index, value) by columns, rows in order within each column: compressed
        sparse columns, as HiGHS takes a matrix."""
        # the entries lie row by row, so a stable sort by column keeps each column's rows in
        # order (whatever the order of the columns within a row)
        order = np.argsort(self.indices, kind="stable")
        rows = self.row_of_entries()
        start = np.zeros(self.shape[1] + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.indices, minlength=self.shape[1]), out=start[1:])
        return start, rows[order], self.data[order]

    def to_scipy(self) -> object:
        """The same matrix as SciPy's ``csr_array`` (imports SciPy: for its integer program)."""
        from scipy.sparse import csr_array

        return csr_array((self.data, self.indices, self.indptr), shape=self.shape)


def vstack(blocks: Sequence[Csr]) -> Csr:
    """The blocks' rows one after another (every block as wide as the first)."""
    if not blocks:
        raise ValueError("vstack: no blocks")
    n = blocks[0].shape[1]
    if any(b.shape[1] != n for b in blocks):
        raise ValueError("vstack: the blocks differ in width")
    indptr = [np.zeros(1, dtype=np.int64)]
    offset = 0
    for b in blocks:
        indptr.append(b.indptr[1:] + offset)
        offset += b.nnz
    return Csr(
        np.concatenate([b.data for b in blocks]),
        np.concatenate([b.indices for b in blocks]),
        np.concatenate(indptr),
        (sum(b.shape[0] for b in blocks), n),
    )


def bipartite_components(a: Csr) -> IntArray:
    """Connected parts of the graph whose nodes are ``a``'s rows (0 .. m-1) then its columns
    (m .. m+n-1), with an edge for each stored entry. Returns each node's part, numbered from 0
    in the order of each part's first node. Hooking and pointer jumping in numpy: each round joins
    every edge's two parts under the smaller root, then points every node at its root."""
    m, n = a.shape
    label = np.arange(m + n, dtype=np.int64)
    u, cols, _ = a.coo()
    v = cols + m
    while True:
        lu, lv = label[u], label[v]
        differ = lu != lv
        if not differ.any():
            break
        lo = np.minimum(lu[differ], lv[differ])
        np.minimum.at(label, lu[differ], lo)
        np.minimum.at(label, lv[differ], lo)
        while True:  # point at roots
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
    _, numbered = np.unique(label, return_inverse=True)
    out: IntArray = numbered.reshape(-1).astype(np.int64, copy=False)
    return out
