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

import numpy as np
import torch

from graphrec.data.csr import Csr, indptr_from_rows, unique_pairs
from graphrec.errors import ConfigError, DataError, check_positive_int
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


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = list(ks)
    if not ks:
        raise ConfigError("no cutoff given", parameter="ks",
                          expected="one or more positive integers")
    return sorted({check_positive_int("ks", k) for k in ks})


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
        default_users = max(1, min(CPU_FACTOR_USERS, CPU_FACTOR_BUFFER // max(num_items, 1)))
        default_tile = CPU_FACTOR_TILE
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

    rows, cols = unique_pairs(target, num_items)
    target_indptr = indptr_from_rows(rows, num_users)
    evaluated = np.flatnonzero(np.diff(target_indptr) > 0)  # users with a held-out item
    if evaluated.size == 0:
        raise DataError("target: no user has a held-out item, so there is nothing to evaluate")
    evaluated_dev = torch.from_numpy(evaluated).to(device)
    targets = UserRows(target_indptr, cols, evaluated, device)
    seen_rows = UserRows(seen.indptr, seen.indices, evaluated, device)
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
        cold_indptr = indptr_from_rows(rows[in_cold], num_users)
        # positions (in ``evaluated``) of the users with a cold target, ascending
        cold_users = np.flatnonzero(np.diff(cold_indptr)[evaluated] > 0)
        cold_users_dev = torch.from_numpy(cold_users).to(device)
        cold_targets = UserRows(
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
    acc = MetricAccumulator(ks, num_items, device, tail_dev, num_cold, info, vectors)
    with torch.inference_mode():
        if factors is None:
            ranker = ScoreFnRanker(score_fn, num_items, device)
        else:
            ranker = FactorRanker(user_emb, item_emb, boost_dev, tail_boost,
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
