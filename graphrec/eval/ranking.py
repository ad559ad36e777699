"""Ranking kernels: row-wise top-K over wide score rows, the CSR rows of a run of users, and
the two chunk rankers of full-ranking evaluation (a score function's [b, I] scores, or user
and item factors scored by tiled GEMMs into one reused buffer).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from graphrec.errors import DataError

NEG_INF = float("-inf")

def default_batch_users(num_items: int, device: torch.device | str = "cpu") -> int:
    """Users per evaluation chunk: a [b, num_items] float32 score block of at most 32 MiB on
    CPU, 1 GiB on CUDA.

    On CPU the block stays under glibc's largest dynamic mmap threshold (32 MiB): a bigger one
    is mmap-ed afresh for every chunk and page-faulted in (Gowalla, 2 cores: 1.2M page faults,
    about 4 s of system CPU time over the run at 1024 users per chunk, none at 204; the whole
    evaluation was 3-10 % faster at 204 than at 1024 or 4096 in paired runs of
    ``experiments/bench_eval.py``). A small block also mostly stays in the L3 cache for the
    masking and top-K passes. CUDA's caching allocator has no such cost; bigger is better there.
    """
    budget = 1 << 28 if torch.device(device).type == "cuda" else 1 << 23  # float32 entries
    return max(1, budget // max(num_items, 1))



def topk_rows(scores: torch.Tensor, k: int, block: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top-k, sorted by descending score: ``(values [b, k], indices [b, k] int64)``.

    Same contract as ``scores.topk(k, dim=1)``. On CPU with a wide row it first takes the
    maximum of each block of ``block`` columns and keeps only the k best blocks: every top-k
    entry lies in one of them, since a block holding the j-th best entry has a maximum at least
    that large, and at most k blocks can have such a maximum (with ties, the values returned
    are still exactly the top-k values). One streaming ``amax`` pass plus a top-k over
    ``k * block`` candidates takes about half the time of ``torch.topk`` for K=20 over 41k
    items on CPU (``experiments/bench_eval.py --compare-topk``); on CUDA ``torch.topk`` is
    used. Tied scores may come back with other indices than ``torch.topk`` would give.
    """
    num_cols = scores.shape[1]
    num_blocks = num_cols // block
    if scores.device.type != "cpu" or num_blocks < 4 * k or scores.stride(1) != 1:
        return scores.topk(k, dim=1)
    main = num_blocks * block
    blocks = scores.as_strided((scores.shape[0], num_blocks, block), (scores.stride(0), block, 1))
    _, best_blocks = blocks.amax(dim=2).topk(k, dim=1)
    candidates = (best_blocks.unsqueeze(2) * block + torch.arange(block)).reshape(
        scores.shape[0], k * block
    )
    if main < num_cols:  # the ragged last block is always a candidate
        rest = torch.arange(main, num_cols).expand(scores.shape[0], num_cols - main)
        candidates = torch.cat([candidates, rest], dim=1)
    values, position = scores.gather(1, candidates).topk(k, dim=1)
    return values, candidates.gather(1, position)


def isin_sorted(sorted_keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """[same as queries] bool: which queries occur in the ascending 1-D ``sorted_keys``."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(queries, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, queries).clamp_(max=sorted_keys.numel() - 1)
    return sorted_keys[pos] == queries



class UserRows:
    """CSR rows of an ascending list of users, laid out so that the rows of any run
    ``users[start:stop]`` form one contiguous slice: per chunk it is a slice, not a gather."""

    def __init__(
        self, indptr: np.ndarray, indices: np.ndarray, users: np.ndarray, device: torch.device
    ):
        indptr = np.asarray(indptr, dtype=np.int64)
        starts = indptr[users]
        lengths = indptr[users + 1] - starts
        ptr = np.zeros(users.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        position = np.repeat(np.arange(users.size, dtype=np.int64), lengths)
        gather = np.repeat(starts - ptr[:-1], lengths) + np.arange(ptr[-1], dtype=np.int64)
        self.ptr = ptr
        self.lengths = torch.from_numpy(lengths).to(device)
        self.position = torch.from_numpy(position).to(device)
        self.cols = torch.from_numpy(np.asarray(indices, dtype=np.int64)[gather]).to(device)

    def chunk(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(local_row, cols)`` of users ``[start, stop)``, local_row counted from ``start``."""
        lo, hi = int(self.ptr[start]), int(self.ptr[stop])
        return self.position[lo:hi] - start, self.cols[lo:hi]

    def keys(self, start: int, stop: int, num_cols: int) -> torch.Tensor:
        """Flat keys ``local_row * num_cols + col``, ascending when each row is sorted."""
        local_row, cols = self.chunk(start, stop)
        return local_row * num_cols + cols



class ScoreFnRanker:
    """Ranks a chunk from ``score_fn``'s [b, I] scores (masked in place) with :func:`topk_rows`."""

    def __init__(self, score_fn: Callable[[torch.Tensor], torch.Tensor], num_items: int,
                 device: torch.device):
        self.score_fn, self.num_items, self.device = score_fn, num_items, device
        self.scores = torch.empty(0)

    def rank(self, users: torch.Tensor, seen: tuple[torch.Tensor, torch.Tensor],
             kmax: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score_fn(users)
        if scores.shape != (users.shape[0], self.num_items):
            raise DataError(
                f"score_fn returned shape {tuple(scores.shape)}, "
                f"expected ({users.shape[0]}, {self.num_items}) = (users, num_items)"
            )
        if not scores.is_floating_point():
            scores = scores.float()
        scores = scores.to(self.device)  # a no-op when already there
        if scores._base is not None:  # never write -inf into the caller's tensor
            scores = scores.clone()
        scores[seen] = NEG_INF  # mask seen, or recall is inflated
        self.scores = scores
        return topk_rows(scores, kmax)

    def scores_at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Masked scores of the last ranked chunk at (local row, item), broadcast."""
        return self.scores[rows, cols]


# Factor path on CPU: users per chunk and items per GEMM tile. Measured with one MKL thread on
# a 2-core AMD EPYC with Gowalla-sized dim-64 factors: a [b, 64] x [64, w] product writing a
# contiguous [b, w] tile ran at about 50 GFLOP/s for b in 256..1024 and w in 1024..2048, about
# 20 for one [204, 40981] product, and slower still into a strided slice of a row-major
# [b, I] matrix; w = 4096 was 5-20 % slower than 2048, 8192 slower again.
CPU_FACTOR_USERS = 512
CPU_FACTOR_TILE = 2048
CPU_FACTOR_BUFFER = 1 << 25  # float entries (128 MiB float32): caps users for huge catalogs
_FACTOR_BLOCK = 64  # items per block for the block-maximum pruning, as in topk_rows


class FactorRanker:
    """Exact top-K of ``user_emb[users] @ item_emb.T`` (+ tail boost), seen items masked.

    All scores of a chunk are kept in one reused buffer laid out tile-major: the [b, w] tile
    of items ``[i0, i0 + w)`` is the contiguous run ``buffer[b * i0 : b * (i0 + w)]``, so each
    GEMM writes a contiguous output (fast; see ``CPU_FACTOR_TILE``) and nothing is allocated
    per chunk. Items are padded with -inf columns to a multiple of the block size, so every
    ``block`` consecutive items of a row are one contiguous run of the buffer. The top-K then
    follows :func:`topk_rows`: the maximum of every block, the ``K`` best blocks of each row
    (every top-K item lies in one), and a top-K over their items. A per-tile ``torch.topk``
    with a merge across tiles was measured and cost as much as the GEMM itself.

    With ``tail_boost`` b, item i's score is ``u.v_i + b * std_u * w_i``, ``std_u`` the
    unbiased standard deviation of the user's raw scores over all items (:func:`boost_tail`),
    which is ``sqrt(u^T C u)`` with ``C`` the unbiased covariance of the item factors: computed
    once, and the boost rides in the GEMM as an extra factor (``b * std_u`` against the item
    weights ``w``, :func:`tail_boost_weights`).
    """

    def __init__(self, user_emb: torch.Tensor, item_emb: torch.Tensor,
                 weights: torch.Tensor | None, tail_boost: float, batch_users: int,
                 item_tile: int, device: torch.device):
        dtype = torch.promote_types(user_emb.dtype, item_emb.dtype)
        if not dtype.is_floating_point:
            dtype = torch.float32
        self.user_emb = user_emb.to(device, dtype)
        items = item_emb.to(device, dtype)
        self.num_items = items.shape[0]
        # The block must divide the tile, so that no block straddles two tiles; one tile is
        # just padded to whole blocks.
        one_tile = item_tile >= self.num_items
        self.block = _FACTOR_BLOCK if one_tile else math.gcd(item_tile, _FACTOR_BLOCK)
        self.padded = -(-self.num_items // self.block) * self.block
        self.tile = self.padded if one_tile else item_tile
        self.cov = None
        if tail_boost != 0.0:
            self.boost = tail_boost
            self.cov = torch.cov(items.T.to(torch.float64))  # [d, d], unbiased like torch.std
            items = torch.cat([items, weights.to(dtype).unsqueeze(1)], dim=1)
        self.items = torch.zeros(self.padded, items.shape[1], dtype=dtype, device=device)
        self.items[: self.num_items] = items
        self.buffer = torch.empty(batch_users * self.padded, dtype=dtype, device=device)
        self.rows = 0  # users in the chunk now in the buffer

    def _offset(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Buffer positions of (local row, item) pairs, broadcast; int64."""
        start = cols - cols % self.tile
        width = (self.padded - start).clamp(max=self.tile)
        return self.rows * start + rows * width + (cols - start)

    def rank(self, users: torch.Tensor, seen: tuple[torch.Tensor, torch.Tensor],
             kmax: int) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.user_emb[users]
        if self.cov is not None:
            u64 = u.to(torch.float64)
            std = ((u64 @ self.cov) * u64).sum(dim=1).clamp(min=0).sqrt()
            u = torch.cat([u, (self.boost * std).to(u.dtype).unsqueeze(1)], dim=1)
        b = self.rows = u.shape[0]
        flat = self.buffer[: b * self.padded]
        for start in range(0, self.padded, self.tile):
            width = min(self.tile, self.padded - start)
            out = flat[b * start : b * (start + width)].view(b, width)
            torch.mm(u, self.items[start : start + width].T, out=out)
        if self.padded > self.num_items:  # padding items are never recommended
            last = self.padded - 1 - (self.padded - 1) % self.tile
            flat[b * last :].view(b, self.padded - last)[:, self.num_items - last :] = NEG_INF
        local_row, cols = seen
        flat[self._offset(local_row, cols)] = NEG_INF  # mask seen, or recall is inflated

        block = self.block
        blocks = flat.view(-1, block)  # tile-major: tile, then row, then block in the tile
        block_max = blocks.amax(dim=1)
        block_max = torch.cat([
            block_max[b * start // block : b * (start + self.tile) // block].view(b, -1)
            for start in range(0, self.padded, self.tile)
        ], dim=1)  # [b, padded / block] in item order
        _, best = block_max.topk(min(kmax, block_max.shape[1]), dim=1)
        rows = torch.arange(b, device=flat.device).unsqueeze(1)
        candidates = blocks.index_select(0, (self._offset(rows, best * block) // block).view(-1))
        candidates = candidates.view(b, -1)
        candidate_items = (best.unsqueeze(2) * block
                           + torch.arange(block, device=flat.device)).view(b, -1)
        values, position = candidates.topk(kmax, dim=1)
        # A padding item can only come back as a -inf filler; keep its index in range.
        items = candidate_items.gather(1, position).clamp_(max=self.num_items - 1)
        return values, items

    def scores_at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Masked (and boosted) scores of the last ranked chunk at (local row, item), broadcast."""
        return self.buffer[self._offset(rows, cols)]


