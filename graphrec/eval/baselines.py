"""Reference scorers evaluated with the same code as the model: most-popular and item-kNN.

Both expose ``score(user_idx [b] int64) -> [b, num_items] float32`` on ``user_idx``'s device,
so ``graphrec.eval.evaluate_ranking(model.score, ...)`` evaluates them unchanged.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from graphrec.data.csr import Csr, csr_row_positions, indptr_from_rows, unique_pairs
from graphrec.errors import ConfigError, DataError

__all__ = ["ItemKNN", "MostPopular"]


def _binary_pairs(train: Csr, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of ``train`` with repeated pairs dropped, sorted by user then item."""
    if train.indices.size and (train.indices.min() < 0 or train.indices.max() >= num_items):
        raise DataError(
            f"train: item indices span [{int(train.indices.min())}, {int(train.indices.max())}], "
            f"expected [0, {num_items})"
        )
    return unique_pairs(train, num_items)


def _csr_from_sorted(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int], device
) -> torch.Tensor:
    """torch sparse CSR from entries already sorted by row."""
    indptr = indptr_from_rows(rows, shape[0])
    return _sparse_csr(
        torch.from_numpy(indptr),
        torch.from_numpy(np.ascontiguousarray(cols, dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)),
        shape,
    ).to(device)


def _sparse_csr(
    indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """``torch.sparse_csr_tensor`` without its one-time "beta" warning; the inputs are built
    here, sorted and in range, so the invariant check is skipped on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(indptr, indices, values, shape, check_invariants=False)


class MostPopular:
    """Score every item by its training degree, the same for every user.

    ``score(u, i) = |{v : i in train_v}|`` (repeated pairs counted once).
    """

    def __init__(self, train: Csr, num_items: int):
        _, items = _binary_pairs(train, num_items)
        self.item_degree = torch.from_numpy(
            np.bincount(items, minlength=num_items).astype(np.float32)
        )  # [I] float32

    def score(self, user_idx: torch.Tensor) -> torch.Tensor:
        """``user_idx`` [b] int64 -> [b, I] float32, a fresh tensor (callers mask it in place)."""
        degree = self.item_degree.to(user_idx.device)
        return degree.unsqueeze(0).repeat(user_idx.numel(), 1)


class ItemKNN:
    """Item-based k-nearest-neighbours on the binary training matrix (Sarwar et al., 2001).

    With ``X`` the binary [U, I] matrix, ``c_ij = (X^T X)_ij`` the number of users with both
    items and ``n_i = c_ii`` the item degree::

        sim(i, j) = c_ij / (sqrt(n_i) * sqrt(n_j) + shrink)     for i != j,  sim(i, i) = 0

    Each row of ``sim`` keeps its ``neighbors`` largest positive entries (ties broken
    arbitrarily), stored as an [I, I] torch sparse CSR matrix ``S``. Then
    ``score(u, i) = sum_{j in train_u} S[j, i]``, i.e. ``X[u] @ S``.

    ``X^T X`` is computed a block of ``chunk_items`` rows at a time as a sparse product, so
    memory stays at one dense [chunk_items, I] block plus the kept neighbours; the full I x I
    matrix is never built.
    """

    def __init__(
        self,
        train: Csr,
        num_items: int,
        neighbors: int = 100,
        shrink: float = 0.0,
        device: torch.device | str = "cpu",
        chunk_items: int | None = None,
    ):
        if isinstance(neighbors, bool) or not isinstance(neighbors, int) or neighbors < 1:
            raise ConfigError(parameter="neighbors", value=neighbors,
                              expected="a positive integer")
        if not shrink >= 0.0:
            raise ConfigError(parameter="shrink", value=shrink, expected="a non-negative number")
        self.num_items = num_items
        self.neighbors = neighbors
        self.shrink = float(shrink)
        self.device = torch.device(device)
        users, items = _binary_pairs(train, num_items)
        shape = (train.num_rows, num_items)
        ones = np.ones(users.size, dtype=np.float32)
        self.user_items = _csr_from_sorted(users, items, ones, shape, self.device)  # X [U, I]
        order = np.lexsort((users, items))
        item_users = _csr_from_sorted(
            items[order], users[order], ones, (num_items, shape[0]), self.device
        )  # X^T [I, U]
        degree = np.bincount(items, minlength=num_items).astype(np.float32)
        self.similarity = self._fit(item_users, torch.from_numpy(np.sqrt(degree)), chunk_items)

    def _fit(
        self, item_users: torch.Tensor, norm: torch.Tensor, chunk_items: int | None
    ) -> torch.Tensor:
        num_items, device = self.num_items, self.device
        norm = norm.to(device)
        keep = min(self.neighbors, num_items)
        if chunk_items is None:  # a dense block of about 2^25 floats (128 MiB)
            chunk_items = max(1, (1 << 25) // max(num_items, 1))
        chunk_items = min(chunk_items, num_items)
        crow, col, val = item_users.crow_indices(), item_users.col_indices(), item_users.values()
        num_users = item_users.shape[1]
        # One dense block, reused: only the entries written are reset after each chunk, so
        # there is no fresh allocation (and page faulting) or full zeroing per chunk.
        dense = torch.zeros(chunk_items, num_items, device=device)
        kept_rows, kept_cols, kept_vals = [], [], []
        for start in range(0, num_items, chunk_items):
            stop = min(start + chunk_items, num_items)
            lo, hi = int(crow[start]), int(crow[stop])
            block = _sparse_csr(
                crow[start : stop + 1] - lo, col[lo:hi], val[lo:hi], (stop - start, num_users)
            )
            counts = block @ self.user_items  # sparse [c, I] co-occurrence c_ij, i in chunk
            ccrow = counts.crow_indices()
            local = torch.repeat_interleave(
                torch.arange(stop - start, device=device), ccrow[1:] - ccrow[:-1]
            )
            j = counts.col_indices()
            # Only co-occurring pairs are stored, so both degrees are >= 1: no 0 / 0 here.
            sim = counts.values() / (norm[local + start] * norm[j] + self.shrink)
            sim = sim.masked_fill(j == local + start, 0.0)  # an item is not its own neighbour
            block_dense = dense[: stop - start]
            block_dense.index_put_((local, j), sim, accumulate=True)
            values, neighbours = block_dense.topk(keep, dim=1)
            block_dense.index_put_((local, j), torch.zeros_like(sim))
            positive = values > 0
            rows = torch.arange(start, stop, device=device).unsqueeze(1).expand_as(neighbours)
            kept_rows.append(rows[positive])
            kept_cols.append(neighbours[positive])
            kept_vals.append(values[positive])
        similarity = torch.sparse_coo_tensor(
            torch.stack([torch.cat(kept_rows), torch.cat(kept_cols)]),
            torch.cat(kept_vals),
            (num_items, num_items),
            check_invariants=False,
        ).coalesce()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return similarity.to_sparse_csr()  # S [I, I] float32, <= neighbors per row

    def score(self, user_idx: torch.Tensor) -> torch.Tensor:
        """``user_idx`` [b] int64 -> [b, I] float32 ``X[user_idx] @ S`` on ``user_idx``'s device."""
        users = user_idx.to(self.device)
        crow = self.user_items.crow_indices()
        _, position, ends = csr_row_positions(crow, users)
        items = self.user_items.col_indices()[position]
        indptr = torch.cat([ends.new_zeros(1), ends])  # the selected rows' own row pointers
        rows = _sparse_csr(
            indptr,
            items,
            torch.ones(items.numel(), dtype=torch.float32, device=self.device),
            (users.numel(), self.num_items),
        )
        return (rows @ self.similarity).to_dense().to(user_idx.device)
