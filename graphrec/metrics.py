"""Full-ranking top-K evaluation (the LightGCN protocol), chunked over users.

Every evaluated user is ranked against the whole catalog: scores for all items are computed,
the user's seen items (training, plus validation at test time) are set to ``-inf``, and the
top-K list is compared with the user's held-out items. Users without held-out items are
skipped; every metric is a mean over the evaluated users (or over the stated subset).

Why hand-written rather than ``torch_geometric.metrics.LinkPred*`` (checked against PyG 2.8):
those classes take only a ``[b, K]`` index matrix, so (1) a top-K slot that holds a masked
(``-inf``) item, which happens when a user has fewer than K unseen items, would count as a
recommendation for coverage and could count as a hit, and there is no way to mark it invalid;
(2) ``tail_share``, per-user tail denominators and cold-only ranking are not there, and each
extra restricted recall would rebuild the hit matrix; (3) the hit test itself is the same
``searchsorted`` on flattened keys that PyG uses, computed here once per chunk and shared by all
K and all metrics. ``tests/test_metrics.py`` checks that recall, ndcg, precision and hit agree
with PyG's classes where both apply, and ``experiments/bench_eval.py --compare-pyg`` times both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from graphrec.data import Csr
from graphrec.errors import ConfigError, DataError
from graphrec.graph import csr_row_positions

__all__ = [
    "TAIL_SHAPES",
    "boost_tail",
    "check_tail_boost",
    "default_batch_users",
    "evaluate_ranking",
    "evaluate_scores",
    "gather_rows",
    "gini",
    "head_item_mask",
    "self_information",
    "tail_boost_weights",
    "topk_rows",
]

_NEG_INF = float("-inf")


def head_item_mask(train_item_degree: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """Mark the ``head_share`` most popular items as head.

    ``train_item_degree``: [I] int or float, interactions per item in the training split.
    Returns [I] bool, True for the ``round(head_share * I)`` items of highest degree; ties are
    broken by the lower item index, so the result is deterministic. Tail items are ``~head``.
    """
    degree = np.asarray(train_item_degree)
    if degree.ndim != 1:
        raise DataError(
            f"train_item_degree: expected a 1-D [num_items] array, got shape {degree.shape}"
        )
    if not 0.0 <= head_share <= 1.0:
        raise ConfigError(f"--head-share {head_share}: expected a fraction in [0, 1]")
    num_head = int(round(head_share * degree.shape[0]))
    order = np.argsort(-degree, kind="stable")  # stable: equal degrees keep index order
    mask = np.zeros(degree.shape[0], dtype=bool)
    mask[order[:num_head]] = True
    return mask


def check_tail_boost(boost: float) -> None:
    if not 0.0 <= boost <= 10.0:  # this way round so NaN fails too
        raise ConfigError(f"--tail-boost {boost:g}: expected a number in [0, 10]")


TAIL_SHAPES = ("degree", "flat")
"""How the tail boost is shared among tail items (:func:`tail_boost_weights`)."""


def tail_boost_weights(train_item_degree: np.ndarray, shape: str = "degree",
                       head_share: float = 0.2) -> np.ndarray:
    """[I] float32: the share of the tail boost each item gets.

    Head items (:func:`head_item_mask`) get 0. Tail items get, with ``shape``:

    - "degree": their training degree over the smallest head item's degree, so items just
      below the head get nearly the whole boost and items nobody has interacted with none;
    - "flat": 1.

    On MovieLens "degree" reaches the same tail recall for about half the recall cost of
    "flat": tail items that some users took are the ones other users' held-out interactions
    fall on (experiments/RESULTS.md).
    """
    if shape not in TAIL_SHAPES:
        raise ConfigError(f"--tail-shape {shape!r}: expected one of {', '.join(TAIL_SHAPES)}")
    degree = np.asarray(train_item_degree, dtype=np.float64)
    head = head_item_mask(degree, head_share)
    if shape == "flat":
        return (~head).astype(np.float32)
    edge = degree[head].min() if head.any() else degree.max(initial=0.0)
    return np.where(head, 0.0, np.minimum(degree / max(edge, 1.0), 1.0)).astype(np.float32)


def boost_tail(scores: torch.Tensor, weights: torch.Tensor, boost: float) -> torch.Tensor:
    """``scores`` [b, I] (unmasked) plus ``boost`` times each row's standard deviation times
    each item's weight (``weights`` [I], :func:`tail_boost_weights`; a bool tail mask is the
    flat shape): a tail item of weight w moves up by ``boost * w`` score spreads.

    A serving-time lever on the long tail, scale-free across users (experiments/RESULTS.md).
    """
    if boost == 0.0:
        return scores
    return scores + boost * scores.std(dim=1, keepdim=True) * weights.to(scores.dtype)


def gini(counts: torch.Tensor) -> float:
    """Gini index of how often each item is recommended: 0 when every item is recommended
    equally often, -> 1 when a few items take every slot. ``counts``: [I] >= 0."""
    x = counts.to(torch.float64).sort().values
    n, total = x.numel(), float(x.sum())
    if n == 0 or total == 0:
        return 0.0
    rank = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    return float(((2 * rank - n - 1) * x).sum()) / (n * total)


def self_information(train_item_degree: np.ndarray, num_users: int) -> np.ndarray:
    """[I] float64 ``-log2 p_i`` with ``p_i = (degree_i + 1) / (num_users + 1)``: the novelty
    of recommending item i (rarely seen items are more novel; +1 keeps unseen items finite)."""
    degree = np.asarray(train_item_degree, dtype=np.float64)
    return -np.log2((degree + 1.0) / (num_users + 1.0))


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


def _isin_sorted(sorted_keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """[same as queries] bool: which queries occur in the ascending 1-D ``sorted_keys``."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(queries, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, queries).clamp_(max=sorted_keys.numel() - 1)
    return sorted_keys[pos] == queries


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = list(ks)
    if not ks:
        raise ConfigError("--k: no cutoff given (expected one or more positive integers)")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ConfigError(f"--k {k!r}: expected a positive integer")
    return sorted({int(k) for k in ks})


def _check_csr(csr: Csr, name: str, num_items: int) -> None:
    indptr = np.asarray(csr.indptr)
    if indptr.ndim != 1 or indptr.shape[0] < 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise DataError(f"{name}: indptr must be a non-decreasing 1-D array starting at 0")
    if csr.indices.shape[0] != indptr[-1]:
        raise DataError(
            f"{name}: indptr ends at {int(indptr[-1])} but there are {csr.indices.shape[0]} indices"
        )
    if csr.indices.size and (csr.indices.min() < 0 or csr.indices.max() >= num_items):
        raise DataError(
            f"{name}: item indices span [{int(csr.indices.min())}, {int(csr.indices.max())}], "
            f"expected [0, {num_items})"
        )


def _check_item_mask(mask: np.ndarray | None, name: str, num_items: int) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != (num_items,) or mask.dtype != np.bool_:
        raise DataError(
            f"{name}: expected a [num_items={num_items}] bool array, "
            f"got shape {mask.shape} dtype {mask.dtype}"
        )
    return mask


def _canonical_pairs(csr: Csr, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of ``csr`` sorted by row then item, duplicates dropped."""
    keys = np.unique(csr.row_index() * num_items + np.asarray(csr.indices, dtype=np.int64))
    return keys // num_items, keys % num_items


class _UserRows:
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


def _indptr(rows: np.ndarray, num_rows: int) -> np.ndarray:
    indptr = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=num_rows), out=indptr[1:])
    return indptr


class _Accumulator:
    """Per-K running sums over evaluated users; :meth:`result` turns them into means."""

    def __init__(
        self,
        ks: list[int],
        num_items: int,
        device: torch.device,
        tail: torch.Tensor | None,
        num_cold: int,
        self_information: torch.Tensor | None = None,
        item_vectors: torch.Tensor | None = None,
    ):
        self.ks = ks
        self.num_items = num_items
        self.tail = tail
        self.num_cold = num_cold
        self.self_information = self_information
        self.item_vectors = item_vectors
        self.kmax = kmax = min(max(ks), num_items)  # K is clipped to the catalog
        positions = torch.arange(kmax, device=device, dtype=torch.float64)
        self.discount = 1.0 / torch.log2(positions + 2.0)  # [kmax]: 1 / log2(rank + 2)
        self.ideal_dcg = torch.cumsum(self.discount, 0)  # [kmax]: IDCG with j + 1 hits
        self.sums: dict[str, torch.Tensor] = {}
        # How often each item is recommended, per K: coverage and the Gini index.
        self.counts = {k: torch.zeros(num_items, dtype=torch.int64, device=device) for k in ks}
        self.saw_nan = torch.zeros((), dtype=torch.bool, device=device)
        self.num_users = 0
        self.num_cold_users = 0

    def _add(self, name: str, value: torch.Tensor) -> None:
        value = value.to(torch.float64).sum()
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    def _hits(
        self, values: torch.Tensor, items: torch.Tensor, keys: torch.Tensor, num_cols: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Which top-K slots hold a real (not masked) item, and which of those are hits."""
        self.saw_nan |= torch.isnan(values).any()
        # A user with fewer than kmax unseen items gets -inf fillers; they are not
        # recommendations, so they neither hit nor count towards coverage or tail share.
        valid = values > _NEG_INF
        rows = torch.arange(values.shape[0], device=values.device).unsqueeze(1)
        hits = _isin_sorted(keys, rows * num_cols + items) & valid
        return valid, hits

    def _recall_ndcg(self, prefix: str, k: int, hits: torch.Tensor, num_targets: torch.Tensor):
        kk = hits.shape[1]
        num_hits = hits.sum(dim=1).to(torch.float64)
        self._add(f"{prefix}recall@{k}", num_hits / num_targets)
        dcg = (hits.to(torch.float64) * self.discount[:kk]).sum(dim=1)
        idcg = self.ideal_dcg[num_targets.clamp(max=kk) - 1]
        self._add(f"{prefix}ndcg@{k}", dcg / idcg)
        return num_hits

    def update_ranked(
        self,
        values: torch.Tensor,
        items: torch.Tensor,
        target_keys: torch.Tensor,
        num_targets: torch.Tensor,
        num_tail_targets: torch.Tensor | None,
    ) -> None:
        """Add one chunk, already ranked: ``values`` [b, kmax] descending scores (-inf for a
        filler slot), ``items`` [b, kmax] int64 in [0, I); ``target_keys`` ascending
        ``local_row * I + item``; ``num_targets`` [b] int64 >= 1; ``num_tail_targets`` [b]
        int64 (or None without head/tail split)."""
        kmax = self.kmax
        valid, hits = self._hits(values, items, target_keys, self.num_items)
        is_tail = self.tail[items] & valid if self.tail is not None else None
        for k in self.ks:
            kk = min(k, kmax)
            h = hits[:, :kk]
            num_hits = self._recall_ndcg("", k, h, num_targets)
            self._add(f"precision@{k}", num_hits / kk)
            self._add(f"hit@{k}", num_hits > 0)
            self.counts[k].index_add_(0, items[:, :kk][valid[:, :kk]],
                                      torch.ones((), dtype=torch.int64, device=items.device)
                                      .expand(int(valid[:, :kk].sum())))
            if self.self_information is not None:
                info = (self.self_information[items[:, :kk]] * valid[:, :kk]).sum(dim=1)
                self._add(f"novelty@{k}", info / valid[:, :kk].sum(dim=1).clamp(min=1))
            if self.item_vectors is not None:
                self._add(f"ild@{k}", self._ild(items[:, :kk], valid[:, :kk]))
            if is_tail is not None and num_tail_targets is not None:
                list_len = valid[:, :kk].sum(dim=1).clamp(min=1)
                self._add(f"tail_share@{k}", is_tail[:, :kk].sum(dim=1) / list_len)
                has_tail = num_tail_targets > 0
                tail_hits = (h & is_tail[:, :kk]).sum(dim=1)[has_tail]
                self._add(f"tail_recall@{k}", tail_hits / num_tail_targets[has_tail])
        self.num_users += values.shape[0]
        if num_tail_targets is not None:
            self._add("num_tail_users", num_tail_targets > 0)  # a tensor: no device sync

    def _ild(self, items: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[b] mean pairwise cosine distance within each list (0 for lists shorter than 2)."""
        v = self.item_vectors[items] * valid.unsqueeze(2)  # [b, k, t], unit rows, 0 if invalid
        sim = torch.bmm(v, v.transpose(1, 2))  # [b, k, k]
        n = valid.sum(dim=1).to(sim.dtype)
        pairs = n * (n - 1)
        off_diagonal = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(dim=1)
        return torch.where(pairs > 0, 1.0 - off_diagonal / pairs.clamp(min=1), 0.0)

    def update_cold(
        self, cold_scores: torch.Tensor, cold_keys: torch.Tensor, num_cold_targets: torch.Tensor
    ) -> None:
        """Add the cold-only ranking of users with a cold target: ``cold_scores`` [bc, C]
        (columns = cold items, seen at -inf), keys ``local_row * C + cold_position``."""
        kmax = min(max(self.ks), self.num_cold)
        values, items = topk_rows(cold_scores, kmax)
        _, hits = self._hits(values, items, cold_keys, cold_scores.shape[1])
        for k in self.ks:
            self._recall_ndcg("cold_", k, hits[:, : min(k, kmax)], num_cold_targets)
        self.num_cold_users += cold_scores.shape[0]

    def result(self) -> dict[str, float]:
        if bool(self.saw_nan):
            raise DataError("the scores contain NaN; the model has probably diverged")
        out: dict[str, float] = {}
        num_tail_users = int(self.sums["num_tail_users"]) if "num_tail_users" in self.sums else 0
        per_key_users = {
            "tail_recall": num_tail_users,
            "cold_recall": self.num_cold_users,
            "cold_ndcg": self.num_cold_users,
        }
        names = ["recall", "ndcg", "precision", "hit", "coverage", "gini"]
        if self.self_information is not None:
            names.append("novelty")
        if self.item_vectors is not None:
            names.append("ild")
        if self.tail is not None:
            names += ["tail_recall", "tail_share"]
        if self.num_cold > 0:
            names += ["cold_recall", "cold_ndcg"]
        for k in self.ks:
            for name in names:
                key = f"{name}@{k}"
                if name == "coverage":
                    out[key] = float((self.counts[k] > 0).sum()) / self.num_items
                    continue
                if name == "gini":
                    out[key] = gini(self.counts[k])
                    continue
                count = per_key_users.get(name, self.num_users)
                out[key] = float(self.sums[key]) / count if count and key in self.sums else 0.0
        out["num_users"] = self.num_users
        if self.tail is not None:
            out["num_tail_users"] = num_tail_users
        if self.num_cold > 0:
            out["num_cold_users"] = self.num_cold_users
        return out


class _ScoreFnRanker:
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
        scores[seen] = _NEG_INF  # mask seen, or recall is inflated
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
_CPU_FACTOR_USERS = 512
_CPU_FACTOR_TILE = 2048
_CPU_FACTOR_BUFFER = 1 << 25  # float entries (128 MiB float32): caps users for huge catalogs
_FACTOR_BLOCK = 64  # items per block for the block-maximum pruning, as in topk_rows


class _FactorRanker:
    """Exact top-K of ``user_emb[users] @ item_emb.T`` (+ tail boost), seen items masked.

    All scores of a chunk are kept in one reused buffer laid out tile-major: the [b, w] tile
    of items ``[i0, i0 + w)`` is the contiguous run ``buffer[b * i0 : b * (i0 + w)]``, so each
    GEMM writes a contiguous output (fast; see ``_CPU_FACTOR_TILE``) and nothing is allocated
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
            flat[b * last :].view(b, self.padded - last)[:, self.num_items - last :] = _NEG_INF
        local_row, cols = seen
        flat[self._offset(local_row, cols)] = _NEG_INF  # mask seen, or recall is inflated

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


def evaluate_ranking(
    score_fn: Callable[[torch.Tensor], torch.Tensor] | None,
    seen: Csr,
    target: Csr,
    num_items: int,
    ks: Sequence[int] = (20,),
    head_items: np.ndarray | None = None,
    cold_items: np.ndarray | None = None,
    batch_users: int | None = None,
    device: torch.device | str = "cpu",
    item_information: np.ndarray | None = None,
    item_vectors: np.ndarray | torch.Tensor | None = None,
    *,
    factors: tuple[torch.Tensor, torch.Tensor] | None = None,
    tail_boost: float = 0.0,
    boost_weights: np.ndarray | None = None,
    item_tile: int | None = None,
) -> dict[str, float]:
    """Full-ranking top-K metrics over every user with at least one target item.

    Scores come from exactly one of ``score_fn`` and ``factors`` (pass ``None`` for the other):

    - ``score_fn``: ``user_idx`` [b] int64 on ``device`` -> scores [b, num_items] float on
      ``device``, a fresh tensor (it is masked in place; a view is copied first).
    - ``factors``: ``(user_emb [num_users, d], item_emb [num_items, d])``, scores
      ``user_emb[u] @ item_emb.T``. Same metrics as the equivalent ``score_fn`` (up to float
      rounding and tie order), faster: tiled GEMMs into one reused buffer, no [b, I] matrix
      per chunk. ``tail_boost`` (factors only; needs ``head_items``) adds
      ``tail_boost * std(scores_u) * w_i`` to item i's score, as :func:`boost_tail` does, with
      ``boost_weights`` w [num_items] (:func:`tail_boost_weights`; None: 1 on every tail item).
      ``item_tile``: items per GEMM tile (None: 2048 on CPU, the whole catalog on CUDA;
      a multiple of 64 is fastest). Cold-only ranking reads the same masked, boosted scores.

    ``seen``: items masked to ``-inf`` before ranking, or recall is inflated (training items;
    at test time training + validation, merged by the caller). ``target``: held-out items.
    Both have one row per user. Duplicate targets count once; a target that is also seen stays
    in the denominator but can never be hit. ``head_items`` / ``cold_items``: [num_items] bool.

    With ``T_u`` the user's targets, ``L_u`` their top-K list (masked items never enter it;
    K is clipped to the number of items) and ``hits_u = |L_u ∩ T_u|``, for each K:

    - ``recall@K`` = mean_u hits_u / |T_u|
    - ``ndcg@K`` = mean_u DCG_u / IDCG_u, DCG_u = sum_{r < K, L_u[r] in T_u} 1 / log2(r + 2),
      IDCG_u = sum_{r < min(|T_u|, K)} 1 / log2(r + 2)   (r = 0-based rank)
    - ``precision@K`` = mean_u hits_u / K
    - ``hit@K`` = mean_u [hits_u > 0]
    - ``coverage@K`` = |union_u L_u| / num_items
    - ``tail_share@K`` = mean_u |L_u ∩ tail| / |L_u|   (tail = ~head_items)
    - ``tail_recall@K`` = mean over users with T_u ∩ tail non-empty of
      |L_u ∩ T_u ∩ tail| / |T_u ∩ tail|
    - ``gini@K``: Gini index of how many lists each item appears in (0 = every item equally
      often; near 1 = a few items fill every list)
    - ``novelty@K`` = mean_u mean_{i in L_u} item_information[i], with ``item_information``
      [I] the items' self-information (:func:`self_information`: -log2 of training popularity)
    - ``ild@K``: intra-list diversity, mean_u of the mean pairwise cosine distance
      1 - cos(v_i, v_j) over pairs i != j in L_u, with ``item_vectors`` [I, t] (item text
      embeddings)
    - ``cold_recall@K``, ``cold_ndcg@K``: recall and ndcg of the ranking among cold items only
      (every non-cold score set to -inf), against ``T_u ∩ cold``, over users for whom that is
      non-empty

    Tail keys appear when ``head_items`` is given, cold keys when ``cold_items`` has a True,
    novelty with ``item_information`` and ild with ``item_vectors``.
    Also ``num_users`` and, with them, ``num_tail_users`` and ``num_cold_users``.

    ``batch_users``: users scored per chunk; ``None`` picks :func:`default_batch_users` for
    ``score_fn``, and for ``factors`` 512 on CPU (fewer when 512 rows of scores exceed
    128 MiB) or :func:`default_batch_users` on CUDA.
    Runs under ``torch.inference_mode()``; the caller puts the model in ``eval()`` mode.
    """
    ks = _check_ks(ks)
    device = torch.device(device)
    if (score_fn is None) == (factors is None):
        raise ConfigError(
            "evaluate_ranking: pass exactly one of score_fn and factors=(user_emb, item_emb), "
            f"got {'both' if factors is not None else 'neither'}"
        )
    if factors is not None and device.type == "cpu":
        default_users = max(1, min(_CPU_FACTOR_USERS, _CPU_FACTOR_BUFFER // max(num_items, 1)))
        default_tile = _CPU_FACTOR_TILE
    else:
        default_users = default_batch_users(num_items, device)
        default_tile = max(num_items, 1)  # one tile
    if batch_users is None:
        batch_users = default_users
    if isinstance(batch_users, bool) or not isinstance(batch_users, int) or batch_users < 1:
        raise ConfigError(f"batch_users {batch_users!r}: expected a positive integer")
    if item_tile is None:
        item_tile = default_tile
    if isinstance(item_tile, bool) or not isinstance(item_tile, int) or item_tile < 1:
        raise ConfigError(f"item_tile {item_tile!r}: expected a positive integer")
    check_tail_boost(tail_boost)
    if tail_boost != 0.0 and factors is None:
        raise ConfigError(
            f"tail_boost {tail_boost:g} applies to factors only; "
            "with score_fn, boost inside it (boost_tail)"
        )
    if tail_boost != 0.0 and head_items is None:
        raise ConfigError(f"tail_boost {tail_boost:g}: needs head_items (the tail is ~head)")
    if num_items < 1:
        raise DataError(f"num_items {num_items}: expected at least one item to rank")
    _check_csr(seen, "seen", num_items)
    _check_csr(target, "target", num_items)
    if seen.num_rows != target.num_rows:
        raise DataError(
            f"seen has {seen.num_rows} user rows but target has {target.num_rows}; "
            "expected one row per user in both"
        )
    head = _check_item_mask(head_items, "head_items", num_items)
    cold = _check_item_mask(cold_items, "cold_items", num_items)
    num_users = target.num_rows

    rows, cols = _canonical_pairs(target, num_items)
    target_indptr = _indptr(rows, num_users)
    evaluated = np.flatnonzero(np.diff(target_indptr) > 0)  # users with a held-out item
    if evaluated.size == 0:
        raise DataError("target: no user has a held-out item, so there is nothing to evaluate")
    evaluated_dev = torch.from_numpy(evaluated).to(device)
    targets = _UserRows(target_indptr, cols, evaluated, device)
    seen_rows = _UserRows(seen.indptr, seen.indices, evaluated, device)
    tail_dev = num_tail = None
    if head is not None:
        tail_dev = torch.from_numpy(~head).to(device)
        tail_counts = np.bincount(rows[~head[cols]], minlength=num_users).astype(np.int64)
        num_tail = torch.from_numpy(tail_counts[evaluated]).to(device)
    boost_dev = tail_dev
    if boost_weights is not None:
        weights = np.asarray(boost_weights, dtype=np.float32)
        if weights.shape != (num_items,) or not np.isfinite(weights).all():
            raise ConfigError(f"boost_weights: expected [{num_items}] finite floats, "
                              f"got shape {weights.shape}")
        boost_dev = torch.from_numpy(weights).to(device)
    num_cold = int(cold.sum()) if cold is not None else 0
    if num_cold:
        cold_cols = torch.from_numpy(np.flatnonzero(cold)).to(device)
        cold_position = np.full(num_items, -1, dtype=np.int64)
        cold_position[cold] = np.arange(num_cold)
        in_cold = cold[cols]
        cold_indptr = _indptr(rows[in_cold], num_users)
        # positions (in ``evaluated``) of the users with a cold target, ascending
        cold_users = np.flatnonzero(np.diff(cold_indptr)[evaluated] > 0)
        cold_users_dev = torch.from_numpy(cold_users).to(device)
        cold_targets = _UserRows(
            cold_indptr, cold_position[cols[in_cold]], evaluated[cold_users], device
        )

    info = vectors = None
    if item_information is not None:
        info = torch.as_tensor(np.asarray(item_information, dtype=np.float64), device=device)
        if info.shape != (num_items,):
            raise DataError(f"item_information: expected [{num_items}], got {tuple(info.shape)}")
    if item_vectors is not None:
        vectors = torch.as_tensor(item_vectors, device=device, dtype=torch.float32)
        if vectors.dim() != 2 or vectors.shape[0] != num_items:
            raise DataError(f"item_vectors: expected [{num_items}, t], got {tuple(vectors.shape)}")
        vectors = torch.nn.functional.normalize(vectors, dim=1)
    if factors is not None:
        user_emb, item_emb = _check_factors(factors, num_users, num_items)
    acc = _Accumulator(ks, num_items, device, tail_dev, num_cold, info, vectors)
    with torch.inference_mode():
        if factors is None:
            ranker = _ScoreFnRanker(score_fn, num_items, device)
        else:
            ranker = _FactorRanker(user_emb, item_emb, boost_dev, tail_boost,
                                   min(batch_users, evaluated.size), item_tile, device)
        for start in range(0, evaluated.size, batch_users):
            stop = min(start + batch_users, evaluated.size)
            values, items = ranker.rank(
                evaluated_dev[start:stop], seen_rows.chunk(start, stop), acc.kmax
            )
            acc.update_ranked(
                values,
                items,
                targets.keys(start, stop, num_items),
                targets.lengths[start:stop],
                num_tail[start:stop] if num_tail is not None else None,
            )
            if num_cold:
                lo, hi = np.searchsorted(cold_users, [start, stop])
                if hi > lo:
                    local = (cold_users_dev[lo:hi] - start).unsqueeze(1)
                    acc.update_cold(
                        ranker.scores_at(local, cold_cols.unsqueeze(0)),
                        cold_targets.keys(lo, hi, num_cold),
                        cold_targets.lengths[lo:hi],
                    )
    return acc.result()


def _check_factors(
    factors: tuple[torch.Tensor, torch.Tensor], num_users: int, num_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(factors, (tuple, list)) or len(factors) != 2:
        raise DataError(
            "factors: expected a pair (user_emb [num_users, d], item_emb [num_items, d])"
        )
    user_emb, item_emb = (torch.as_tensor(f) for f in factors)
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise DataError(
            f"factors: expected user_emb [num_users, d] and item_emb [num_items, d], got "
            f"{tuple(user_emb.shape)} and {tuple(item_emb.shape)}"
        )
    if user_emb.shape[0] != num_users or item_emb.shape[0] != num_items:
        raise DataError(
            f"factors: user_emb has {user_emb.shape[0]} rows and item_emb {item_emb.shape[0]}, "
            f"expected one per user ({num_users}) and one per item ({num_items})"
        )
    return user_emb, item_emb


def evaluate_scores(
    scores: torch.Tensor,
    seen: Csr,
    target: Csr,
    ks: Sequence[int] = (20,),
    head_items: np.ndarray | None = None,
    cold_items: np.ndarray | None = None,
    batch_users: int | None = None,
    item_information: np.ndarray | None = None,
    item_vectors: np.ndarray | torch.Tensor | None = None,
) -> dict[str, float]:
    """:func:`evaluate_ranking` on a precomputed score matrix ``scores`` [U, I] float
    (not modified). Handy for small data and hand-worked tests."""
    if scores.dim() != 2:
        raise DataError(f"scores: expected a [num_users, num_items] matrix, got {scores.dim()}-D")
    return evaluate_ranking(
        lambda users: scores.index_select(0, users),
        seen,
        target,
        num_items=scores.shape[1],
        ks=ks,
        head_items=head_items,
        cold_items=cold_items,
        batch_users=batch_users,
        device=scores.device,
        item_information=item_information,
        item_vectors=item_vectors,
    )
