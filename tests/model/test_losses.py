"""graphrec.model.losses: the BPR loss and its L2 term, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from graphrec.model import bpr_loss
from graphrec.model.losses import softmax_loss


def test_bpr_loss_known_answer() -> None:
    eu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    ei = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    users, pos, neg = torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1, 2])
    # s_pos = (1, 2), s_neg = (0, 2): softplus(-1) and softplus(0).
    bpr = (math.log1p(math.exp(-1.0)) + math.log(2.0)) / 2
    # |x_u|^2 = 1 + 4, |x_p|^2 = 1 + 1, |x_n|^2 = 1 + 2 -> 10; reg 0.1 -> 0.1 * 10 / (2 * 2)
    loss, bpr_part = bpr_loss(eu, ei, eu, ei, users, pos, neg, reg=0.1)
    assert bpr_part.item() == pytest.approx(bpr)
    assert loss.item() == pytest.approx(bpr + 0.25)
    assert not bpr_part.requires_grad


def test_bpr_loss_l2_counts_repeated_rows() -> None:
    # The L2 term weights each row by how often the batch names it: equal to the per-triple
    # sum of squares, rows repeated across users, positives and negatives included.
    gen = torch.Generator().manual_seed(0)
    eu, ei = torch.randn(4, 3, generator=gen), torch.randn(5, 3, generator=gen)
    xu0, xi0 = torch.randn(4, 3, generator=gen), torch.randn(5, 3, generator=gen)
    users, pos, neg = torch.tensor([0, 0, 2, 3, 0]), torch.tensor([1, 1, 4, 0, 2]), \
        torch.tensor([4, 1, 1, 3, 3])
    loss, bpr = bpr_loss(eu, ei, xu0, xi0, users, pos, neg, reg=0.3)
    l2 = (xu0[users].square().sum() + xi0[pos].square().sum() + xi0[neg].square().sum())
    assert loss.item() == pytest.approx((bpr + 0.3 * l2 / 10).item(), rel=1e-6)
    assert (loss - bpr).item() == pytest.approx((0.3 * l2 / 10).item(), rel=1e-6)


def test_softmax_loss_with_one_candidate_is_bpr() -> None:
    # Softmax over a positive and one negative at temperature 1 is softplus(s_n - s_p).
    gen = torch.Generator().manual_seed(3)
    eu, ei = torch.randn(4, 3, generator=gen), torch.randn(6, 3, generator=gen)
    users, pos, neg = torch.tensor([0, 1, 3, 3]), torch.tensor([2, 5, 0, 1]), \
        torch.tensor([1, 4, 4, 2])
    bpr_total, bpr = bpr_loss(eu, ei, eu, ei, users, pos, neg, reg=0.2)
    sm_total, sm = softmax_loss(eu, ei, eu, ei, users, pos, neg[:, None], reg=0.2,
                                temperature=1.0)
    assert sm.item() == pytest.approx(bpr.item(), rel=1e-6)
    assert sm_total.item() == pytest.approx(bpr_total.item(), rel=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_softmax_loss_is_cross_entropy_over_positive_and_candidates(temperature: float) -> None:
    gen = torch.Generator().manual_seed(4)
    eu = torch.randn(5, 4, generator=gen, requires_grad=True)
    ei = torch.randn(9, 4, generator=gen, requires_grad=True)
    xu0, xi0 = torch.randn(5, 4, generator=gen), torch.randn(9, 4, generator=gen)
    users, pos = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 8])
    neg = torch.tensor([[0, 2, 5], [7, 7, 6], [1, 2, 3]])
    total, part = softmax_loss(eu, ei, xu0, xi0, users, pos, neg, reg=0.1,
                               temperature=temperature)
    expect = 0.0
    for b in range(3):
        u, rows = eu[users[b]], ei[torch.cat([pos[b:b + 1], neg[b]])]
        logits = (rows @ u) / temperature
        expect += float(torch.logsumexp(logits, 0) - logits[0]) / 3
    l2 = xu0[users].square().sum() + xi0[pos].square().sum() + xi0[neg.flatten()].square().sum()
    assert part.item() == pytest.approx(expect, rel=1e-5)
    assert total.item() == pytest.approx(expect + 0.1 * float(l2) / 6, rel=1e-5)
    total.backward()
    # Every candidate gets gradient, not only the hardest one.
    assert (ei.grad[neg.flatten()].abs().sum(1) > 0).all()
