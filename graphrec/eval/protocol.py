"""The evaluation protocol: full-ranking top-K metrics (the LightGCN protocol), chunked over
users, and the evaluation of a trained model directory on its graph's split.

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
K and all metrics. ``tests/eval/test_metrics.py`` checks that recall, ndcg, precision and hit agree
with PyG's classes where both apply, and ``experiments/bench_eval.py --compare-pyg`` times both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from graphrec.data.csr import Csr, indptr_from_rows, unique_pairs
from graphrec.distributed import SOLO, Group
from graphrec.errors import ConfigError, DataError, check_cutoffs, check_positive_int
from graphrec.eval.metrics import MetricAccumulator
from graphrec.eval.ranking import (
    CPU_FACTOR_BUFFER,
    CPU_FACTOR_TILE,
    CPU_FACTOR_USERS,
    FactorRanker,
    ScoreFnRanker,
    UserRows,
    default_batch_users,
)
from graphrec.popularity import check_tail_boost


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


@dataclass
class RankingResult:
    """:func:`evaluate_ranking` with ``per_user=True``: the metrics, and each per-user
    metric's value for every evaluated user.

    ``users`` [n] int64: the evaluated users (those with a target), ascending; ``values``:
    key (``recall@20``, ``cold_recall@20``, ...) -> [n] float64, NaN where the metric does not
    apply to the user (``tail_recall`` without a tail target, ``cold_*`` without a cold one).
    The mean of the non-NaN values of a key is ``metrics[key]``. Catalog metrics (coverage,
    gini) have no per-user value; ``item_counts`` holds what they read: K -> [I] int64, in how
    many top-K lists each item appears."""

    metrics: dict[str, float]
    users: np.ndarray
    values: dict[str, np.ndarray]
    item_counts: dict[int, np.ndarray]


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
    per_user: bool = False,
    group: Group = SOLO,
) -> dict[str, float] | RankingResult:
    """Full-ranking top-K metrics over every user with at least one target item; with
    ``per_user``, a :class:`RankingResult` that also holds every user's values.

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

    Every metric of the registry (:data:`graphrec.eval.metrics.METRICS`: recall, ndcg,
    precision, hit, coverage, gini, novelty, ild, tail_recall, tail_share; recall and ndcg
    again as ``cold_*`` on the ranking among cold items only, every non-cold score at -inf)
    is reported at every K; each metric's formula is its function's docstring there.
    Tail keys appear when ``head_items`` is given, cold keys when ``cold_items`` has a True,
    novelty with ``item_information`` and ild with ``item_vectors``.
    Also ``num_users`` and, with them, ``num_tail_users`` and ``num_cold_users``.

    ``batch_users``: users scored per chunk; ``None`` picks :func:`default_batch_users` for
    ``score_fn``, and for ``factors`` 512 on CPU (fewer when 512 rows of scores exceed
    128 MiB) or :func:`default_batch_users` on CUDA.
    ``group``: processes sharing the work (graphrec.distributed): each ranks its contiguous
    share of the evaluated users and the running sums are added up over the group, so every
    process returns the metrics of all users (not with ``per_user``).
    Runs under ``torch.inference_mode()``; the caller puts the model in ``eval()`` mode.
    """
    ks = check_cutoffs("ks", ks)
    device = torch.device(device)
    if (score_fn is None) == (factors is None):
        raise ConfigError(
            "evaluate_ranking: pass exactly one of score_fn and factors=(user_emb, item_emb), "
            f"got {'both' if factors is not None else 'neither'}"
        )
    batch_users, item_tile = _chunking(factors is not None, device, num_items, batch_users,
                                       item_tile)
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
    if per_user and not group.solo:
        raise ConfigError("per-user values are kept in one process", parameter="per_user",
                          value=True)
    users = _EvaluatedUsers(seen, target, num_items, head_items, cold_items, device)
    boost_dev = users.tail
    if boost_weights is not None:
        weights = np.asarray(boost_weights, dtype=np.float32)
        if weights.shape != (num_items,) or not np.isfinite(weights).all():
            raise ConfigError(f"boost_weights: expected [{num_items}] finite floats, "
                              f"got shape {weights.shape}")
        boost_dev = torch.from_numpy(weights).to(device)
    info, vectors = _item_inputs(item_information, item_vectors, num_items, device)
    if factors is not None:
        user_emb, item_emb = _check_factors(factors, target.num_rows, num_items)
    n = users.evaluated.size
    acc = MetricAccumulator(ks, num_items, device, users.tail, users.num_cold, info, vectors,
                            per_user=n if per_user else 0)
    positions = torch.arange(n, device=device) if per_user else None
    with torch.inference_mode():
        if factors is None:
            ranker = ScoreFnRanker(score_fn, num_items, device)
        else:
            ranker = FactorRanker(user_emb, item_emb, boost_dev, tail_boost,
                                  min(batch_users, n), item_tile, device)
        first, last = group.share(n)
        for start in range(first, last, batch_users):
            stop = min(start + batch_users, last)
            values, items = ranker.rank(
                users.on_device[start:stop], users.seen.chunk(start, stop), acc.kmax
            )
            acc.update_ranked(
                values,
                items,
                users.targets.keys(start, stop, num_items),
                users.targets.lengths[start:stop],
                users.num_tail[start:stop] if users.num_tail is not None else None,
                positions[start:stop] if per_user else None,
            )
            if users.num_cold:
                lo, hi = np.searchsorted(users.cold_users, [start, stop])
                if hi > lo:
                    local = (users.cold_users_dev[lo:hi] - start).unsqueeze(1)
                    acc.update_cold(
                        ranker.scores_at(local, users.cold_cols.unsqueeze(0)),
                        users.cold_targets.keys(lo, hi, users.num_cold),
                        users.cold_targets.lengths[lo:hi],
                        users.cold_users_dev[lo:hi] if per_user else None,
                    )
    acc.reduce(group)
    metrics = acc.result()
    if not per_user:
        return metrics
    return RankingResult(metrics, users.evaluated.copy(), acc.user_values(metrics),
                         {k: c.cpu().numpy() for k, c in acc.counts.items()})


def evaluate_variants(
    variants_fn: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    count: int,
    seen: Csr,
    target: Csr,
    num_items: int,
    ks: Sequence[int] = (20,),
    batch_users: int | None = None,
    device: torch.device | str = "cpu",
) -> list[dict[str, float]]:
    """The accuracy metrics of :func:`evaluate_ranking` (no head, cold or item inputs) for
    ``count`` scorings at once: ``variants_fn(user_idx [b])`` returns ``count`` fresh
    [b, num_items] score tensors, one per variant (masked in place). One pass over the users,
    so what the variants share (a filter's linear term, a blend's two models) is computed
    once per chunk: a validation grid for the price of about one evaluation."""
    ks = check_cutoffs("ks", ks)
    check_positive_int("count", count)
    device = torch.device(device)
    batch_users, _ = _chunking(False, device, num_items, batch_users, None)
    users = _EvaluatedUsers(seen, target, num_items, None, None, device)
    accs = [MetricAccumulator(ks, num_items, device, None, 0, None, None)
            for _ in range(count)]
    n = users.evaluated.size
    with torch.inference_mode():
        for start in range(0, n, batch_users):
            stop = min(start + batch_users, n)
            batch = users.on_device[start:stop]
            mask = users.seen.chunk(start, stop)
            variants = list(variants_fn(batch))
            if len(variants) != count:
                raise DataError(f"variants_fn returned {len(variants)} score tensors, "
                                f"expected {count}")
            keys = users.targets.keys(start, stop, num_items)
            for acc, scores in zip(accs, variants, strict=True):
                ranker = ScoreFnRanker(lambda _u, s=scores: s, num_items, device)
                values, items = ranker.rank(batch, mask, accs[0].kmax)
                acc.update_ranked(values, items, keys, users.targets.lengths[start:stop], None)
    return [acc.result() for acc in accs]


def _chunking(use_factors: bool, device: torch.device, num_items: int,
              batch_users: int | None, item_tile: int | None) -> tuple[int, int]:
    """Users per chunk and items per GEMM tile: the given ones, checked, or the defaults."""
    if use_factors and device.type == "cpu":
        default_users = max(1, min(CPU_FACTOR_USERS, CPU_FACTOR_BUFFER // max(num_items, 1)))
        default_tile = CPU_FACTOR_TILE
    else:
        default_users = default_batch_users(num_items, device)
        default_tile = max(num_items, 1)  # one tile
    batch_users = check_positive_int("batch_users",
                                     default_users if batch_users is None else batch_users)
    item_tile = check_positive_int("item_tile", default_tile if item_tile is None else item_tile)
    return batch_users, item_tile


class _EvaluatedUsers:
    """The users with at least one target, ascending, and their rows on ``device``: seen items
    (masked), targets (de-duplicated), per-user tail-target counts with a head split, and the
    cold-only targets of the users that have one."""

    def __init__(self, seen: Csr, target: Csr, num_items: int, head_items: np.ndarray | None,
                 cold_items: np.ndarray | None, device: torch.device):
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
        rows, cols = unique_pairs(target, num_items)
        target_indptr = indptr_from_rows(rows, num_users)
        evaluated = np.flatnonzero(np.diff(target_indptr) > 0)  # users with a held-out item
        if evaluated.size == 0:
            raise DataError(
                "target: no user has a held-out item, so there is nothing to evaluate")
        self.evaluated = evaluated
        self.on_device = torch.from_numpy(evaluated).to(device)
        self.targets = UserRows(target_indptr, cols, evaluated, device)
        self.seen = UserRows(seen.indptr, seen.indices, evaluated, device)
        self.tail = self.num_tail = None
        if head is not None:
            self.tail = torch.from_numpy(~head).to(device)
            tail_counts = np.bincount(rows[~head[cols]], minlength=num_users).astype(np.int64)
            self.num_tail = torch.from_numpy(tail_counts[evaluated]).to(device)
        self.num_cold = int(cold.sum()) if cold is not None else 0
        if self.num_cold:
            self.cold_cols = torch.from_numpy(np.flatnonzero(cold)).to(device)
            cold_position = np.full(num_items, -1, dtype=np.int64)
            cold_position[cold] = np.arange(self.num_cold)
            in_cold = cold[cols]
            cold_indptr = indptr_from_rows(rows[in_cold], num_users)
            # positions (in ``evaluated``) of the users with a cold target, ascending
            self.cold_users = np.flatnonzero(np.diff(cold_indptr)[evaluated] > 0)
            self.cold_users_dev = torch.from_numpy(self.cold_users).to(device)
            self.cold_targets = UserRows(cold_indptr, cold_position[cols[in_cold]],
                                         evaluated[self.cold_users], device)


def _item_inputs(item_information: np.ndarray | None,
                 item_vectors: np.ndarray | torch.Tensor | None, num_items: int,
                 device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Self-information [I] float64 and unit-row item vectors [I, t] on ``device`` (or None)."""
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
    return info, vectors


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
