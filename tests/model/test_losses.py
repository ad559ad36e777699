"""graphrec.model.losses: the BPR loss and its L2 term, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from graphrec.model import bpr_loss


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
