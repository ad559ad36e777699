"""Serving-time scoring: masking what a user already has, list-length and weight checks,
and MMR re-ranking for diversity (the tail boost is ``graphrec.popularity.boost_tail``)."""

from __future__ import annotations

import torch
from torch import Tensor

from graphrec.data.csr import Csr, gather_rows
from graphrec.errors import check_positive_int, check_range


def check_k(k: int) -> None:
    """Raise ConfigError unless ``k`` is a positive list length."""
    check_positive_int("k", k)


def check_diversity(diversity: float) -> None:
    """Raise ConfigError unless ``diversity`` (the MMR weight λ) is in [0, 1]."""
    check_range("diversity", diversity, 0.0, 1.0)


def mmr_pool_size(k: int) -> int:
    """How many of the most relevant items MMR re-ranks for a list of ``k``."""
    return max(5 * k, 50)


def mmr_rerank(scores: Tensor, candidates: Tensor, item_vecs: Tensor, k: int,
               diversity: float) -> Tensor:
    """Greedy maximal marginal relevance (Carbonell & Goldstein, SIGIR 1998).

    Picks ``min(k, C)`` of the candidates one at a time, each maximising

        (1 - λ) · rel(i) - λ · max_{j already picked} cos(v_i, v_j)

    with λ = ``diversity``. rel is the score min-max normalised over the candidates, so λ
    means the same whatever the score scale. The first pick is the most relevant candidate,
    ties go to the more relevant one, and λ = 0 gives the plain relevance order.

    scores: [I] float, relevance of every item; candidates: [C] int64 item_idx (finite
    scores, any order); item_vecs: [I, d] float, normalised here (a zero row is dissimilar
    to everything). Returns [min(k, C)] int64 item_idx in pick order.
    """
    check_diversity(diversity)
    k = min(k, len(candidates))
    rel = scores[candidates].float()
    order = torch.sort(rel, descending=True, stable=True).indices
    candidates, rel = candidates[order], rel[order]
    if diversity == 0.0 or k == 0:
        return candidates[:k]
    gain = (1.0 - diversity) * (rel - rel[-1]) / (rel[0] - rel[-1]).clamp_min(1e-12)
    vecs = torch.nn.functional.normalize(item_vecs[candidates].float(), dim=1)
    max_sim = vecs @ vecs[0]  # [C], similarity to the closest item picked so far
    taken = torch.zeros(len(candidates), dtype=torch.bool, device=candidates.device)
    taken[0] = True
    picked = [0]
    for _ in range(k - 1):  # k greedy steps, each vectorised over all candidates
        i = int(torch.argmax((gain - diversity * max_sim).masked_fill(taken, float("-inf"))))
        picked.append(i)
        taken[i] = True
        max_sim = torch.maximum(max_sim, vecs @ vecs[i])
    return candidates[torch.tensor(picked, device=candidates.device)]


def mask_known(scores: Tensor, users: Tensor, known: Csr) -> None:
    """Set scores [b, I] of each user's known items to -inf in place (flat index, no loop)."""
    rows, cols = gather_rows(torch.as_tensor(known.indptr), torch.as_tensor(known.indices),
                             users.cpu())
    scores[rows.to(scores.device), cols.to(scores.device)] = float("-inf")
