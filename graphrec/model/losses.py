"""Training losses: BPR with L2 on the batch's layer-0 embeddings (LightGCN eq. 15), and the
BPR of the text head that places items from text (cold_start "bpr"). Both are built on one
BPR term, :func:`bpr_term`."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def bpr_term(u: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """mean_b softplus(u_b . (neg_b - pos_b)) = -mean_b log sigmoid(s_pos - s_neg):
    the BPR loss of user rows ``u`` [B, d] against positive and negative item rows [B, d].

    s_un - s_up = u . (e_n - e_p): one [B, d] product forward and two backward, not 2 and 4.
    """
    return nn.functional.softplus((u * (neg - pos)).sum(-1)).mean()


def bpr_loss(eu: Tensor, ei: Tensor, xu0: Tensor, xi0: Tensor, users: Tensor, pos: Tensor,
             neg: Tensor, reg: float) -> tuple[Tensor, Tensor]:
    """BPR loss with L2 on the batch's layer-0 embeddings (LightGCN eq. 15).

    loss = mean(softplus(s_un - s_up)) + reg * (|x_u|^2 + |x_p|^2 + |x_n|^2) / (2 B).
    users/pos/neg: [B] int64 rows of eu/xu0 and ei/xi0. Returns (total loss, the BPR part).
    The L2 sum is taken over the rows of xu0/xi0 weighted by how often the batch names each,
    which equals the per-triple sum without gathering [B, d] copies of the rows.
    """
    # index_select rather than eu[users]: its backward is index_add_, 2-5x faster on the CPU
    # than the accumulating index_put_ that indexing's backward uses (experiments/RESULTS.md).
    bpr = bpr_term(eu.index_select(0, users), ei.index_select(0, pos), ei.index_select(0, neg))
    l2 = (_row_counts(users, len(xu0), xu0.dtype) * xu0.square().sum(1)).sum() + (
        _row_counts(torch.cat([pos, neg]), len(xi0), xi0.dtype) * xi0.square().sum(1)).sum()
    return bpr + reg * l2 / (2 * len(users)), bpr.detach()


def softmax_loss(eu: Tensor, ei: Tensor, xu0: Tensor, xi0: Tensor, users: Tensor, pos: Tensor,
                 neg: Tensor, reg: float, temperature: float) -> tuple[Tensor, Tensor]:
    """Sampled softmax over each triple's positive and its K candidates, with L2 as in
    :func:`bpr_loss`.

    loss = mean_b [logsumexp_j(s_bj / t) - s_bp / t] + reg * (L2 of the rows named) / (2 B),
    j over the positive and the K negatives ``neg`` [B, K], s the dot product of the final
    rows. Every candidate gets a share of the gradient in
    proportion to how high the model scores it: a smooth form of picking the hardest.
    Returns (total loss, the softmax part).
    """
    b, k = neg.shape
    u = eu.index_select(0, users)
    p = ei.index_select(0, pos)
    n = ei.index_select(0, neg.flatten()).view(b, k, -1)
    logits = torch.cat([(u * p).sum(-1, keepdim=True),
                        torch.bmm(n, u.unsqueeze(2)).squeeze(2)], 1) / temperature
    part = (torch.logsumexp(logits, 1) - logits[:, 0]).mean()
    l2 = (_row_counts(users, len(xu0), xu0.dtype) * xu0.square().sum(1)).sum() + (
        _row_counts(torch.cat([pos, neg.flatten()]), len(xi0), xi0.dtype)
        * xi0.square().sum(1)).sum()
    return part + reg * l2 / (2 * b), part.detach()


def _row_counts(index: Tensor, rows: int, dtype: torch.dtype) -> Tensor:
    """[rows] how often each row occurs in ``index`` (no host sync, unlike bincount)."""
    return torch.zeros(rows, dtype=dtype, device=index.device).index_add_(
        0, index, torch.ones(len(index), dtype=dtype, device=index.device))


def text_head_loss(u: Tensor, head_pos: Tensor, head_neg: Tensor, reg: float) -> Tensor:
    """BPR of text-placed items against users' final embeddings, with L2 on the placements.

    u: [B, d] the batch users' final embeddings (detach them, so that the warm model trains
    exactly as without the head); head_pos / head_neg: [B, d] the text head's placements of
    the positive and negative items. loss = bpr_term + reg * (|h_p|^2 + |h_n|^2) / (2 B).
    """
    l2 = head_pos.square().sum() + head_neg.square().sum()
    return bpr_term(u, head_pos, head_neg) + reg * l2 / (2 * len(head_pos))
