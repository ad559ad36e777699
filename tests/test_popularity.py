"""graphrec.popularity: the head / tail split, self-information, and the serving-time tail
boost and its weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graphrec.errors import ConfigError
from graphrec.popularity import (
    boost_tail,
    check_tail_boost,
    head_item_mask,
    tail_boost_weights,
)


def test_head_item_mask_top_share_ties_by_index():
    degree = np.array([5, 1, 5, 0, 3, 2, 2, 9, 0, 1])
    assert np.flatnonzero(head_item_mask(degree)).tolist() == [0, 7]  # 9, then 5 (index 0 < 2)
    assert np.flatnonzero(head_item_mask(degree, 0.3)).tolist() == [0, 2, 7]
    assert not head_item_mask(degree, 0.0).any()
    assert head_item_mask(degree, 1.0).all()
    with pytest.raises(ConfigError, match="head_share"):
        head_item_mask(degree, 1.5)


def test_self_information_orders_rare_items_first():
    from graphrec.popularity import self_information

    info = self_information(np.array([0, 9, 99]), num_users=99)
    assert info[0] > info[1] > info[2] == pytest.approx(0.0)
    assert info[1] == pytest.approx(-math.log2(10 / 100))


def test_boost_tail_moves_tail_items_by_score_spreads() -> None:
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    tail = torch.tensor([False, False, True, True])
    # Row 0: std of [4, 3, 2, 1] (unbiased) = sqrt(5/3) ~ 1.291, so boost 1 lifts item 2
    # to 3.291 (above item 1's 3) and item 3 to 2.291; row 1 has no spread: unchanged.
    out = boost_tail(scores, tail, 1.0)
    std = (5 / 3) ** 0.5
    torch.testing.assert_close(out[0], torch.tensor([4.0, 3.0, 2.0 + std, 1.0 + std]))
    torch.testing.assert_close(out[1], scores[1])
    assert out[0].argsort(descending=True).tolist() == [0, 2, 1, 3]
    assert boost_tail(scores, tail, 0.0) is scores


def test_tail_boost_weights_grow_with_degree_below_the_head() -> None:
    # 10 items, head = the 2 most-interacted (degrees 50 and 20; the smallest head degree 20).
    degree = np.array([0, 1, 5, 10, 20, 50, 2, 19, 0, 4])
    w = tail_boost_weights(degree, "degree")
    np.testing.assert_allclose(w, [0, 0.05, 0.25, 0.5, 0, 0, 0.1, 0.95, 0, 0.2])
    flat = tail_boost_weights(degree, "flat")
    np.testing.assert_array_equal(flat, [1, 1, 1, 1, 0, 0, 1, 1, 1, 1])
    assert w.dtype == flat.dtype == np.float32
    # A weighted boost moves item i by boost * std * w_i.
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    out = boost_tail(scores, torch.tensor([0.0, 0.0, 1.0, 0.5]), 1.0)
    std = (5 / 3) ** 0.5
    torch.testing.assert_close(out[0], torch.tensor([4.0, 3.0, 2.0 + std, 1.0 + std / 2]))
    with pytest.raises(ConfigError, match="tail_shape 'steep'"):
        tail_boost_weights(degree, "steep")


@pytest.mark.parametrize("bad", [-0.5, 11.0, float("nan")])
def test_tail_boost_range(bad: float) -> None:
    with pytest.raises(ConfigError, match="tail_boost"):
        check_tail_boost(bad)
