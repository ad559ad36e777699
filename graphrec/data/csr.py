"""Compressed sparse rows: per-user item lists and the few vectorised helpers over them.

Every row pointer in graphrec is built by :func:`indptr_from_rows`, every de-duplicated
(row, column) list by :func:`unique_pairs`, and every gather of several rows by
:func:`gather_rows`; nothing here loops over rows in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def indptr_from_rows(rows: np.ndarray, num_rows: int, dtype: type = np.int64) -> np.ndarray:
    """Row pointers [num_rows + 1] of entries whose row ids are ``rows`` [nnz] (any order):
    ``indptr[r + 1] - indptr[r]`` is how often ``r`` occurs."""
    indptr = np.zeros(num_rows + 1, dtype=dtype)
    np.cumsum(np.bincount(rows, minlength=num_rows), out=indptr[1:])
    return indptr


@dataclass(frozen=True)
class Csr:
    """Per-user item lists in compressed sparse row form.

    ``indptr``: [num_users + 1] int64; ``indices``: [nnz] int64 item indices, sorted within
    each row. Row ``u`` holds ``indices[indptr[u]:indptr[u + 1]]``.
    """

    indptr: np.ndarray
    indices: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def row_lengths(self) -> np.ndarray:
        """[num_rows] int64 number of items per row."""
        return np.diff(self.indptr)

    def row(self, u: int) -> np.ndarray:
        return self.indices[self.indptr[u] : self.indptr[u + 1]]

    def row_index(self) -> np.ndarray:
        """[nnz] int64 row of each entry."""
        return np.repeat(np.arange(self.num_rows, dtype=np.int64), self.row_lengths())

    @classmethod
    def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, num_rows: int) -> Csr:
        """Build from parallel [nnz] int arrays; duplicate pairs are kept as given."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        width = int(cols.max()) + 1 if len(cols) else 1
        if len(cols) and cols.min() >= 0 and num_rows * width < 2**62:
            # One sort of row * width + col: a third of lexsort's time at 1M pairs.
            indices = np.sort(rows * width + cols) % width
        else:
            indices = cols[np.lexsort((cols, rows))]
        return cls(indptr=indptr_from_rows(rows, num_rows), indices=indices)


def unique_pairs(csr: Csr, num_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) [n] int64 of ``csr``'s entries sorted by row then column, repeated pairs
    dropped (each pair encoded once as ``row * num_cols + col``)."""
    keys = np.unique(csr.row_index() * num_cols + np.asarray(csr.indices, dtype=np.int64))
    return keys // num_cols, keys % num_cols


def csr_row_positions(indptr: torch.Tensor, rows: torch.Tensor,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the entries of several CSR rows sit, without a Python loop per row.

    ``indptr``: [R + 1] int32 or int64; ``rows``: [b] int64. Returns
    ``(local_row, position, ends)``:
    entry j of the selection is ``indices[position[j]]`` of row ``rows[local_row[j]]`` (both
    [n] int64, in row-then-CSR order), and ``ends`` [b] is one past each selected row's last
    entry in the selection (the row pointers of the selection, less the leading 0).
    """
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    ends = torch.cumsum(lengths, 0)
    total = int(ends[-1]) if len(ends) else 0
    local_row = torch.repeat_interleave(
        torch.arange(rows.numel(), device=rows.device), lengths, output_size=total
    )
    # position = starts[row] + (j - first[row]) with first = ends - lengths.
    shift = (starts - ends + lengths)[local_row]
    return local_row, shift.add_(torch.arange(total, device=rows.device)), ends


def gather_rows(
    indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries of several CSR rows, without a Python loop per row.

    ``indptr``: [R + 1] int64; ``indices``: [nnz] int64; ``rows``: [b] int64 row ids.
    Returns ``(local_row, cols)``, both [n] int64: ``local_row[j]`` is the position in ``rows``
    of the row entry ``j`` came from, and entries keep their row-then-CSR order.
    """
    local_row, position, _ = csr_row_positions(indptr, rows)
    return local_row, indices[position]
