"""graphrec.eval.ranking: blocked top-k, the default chunk size, and the factor path (tiled
GEMMs: evaluate_ranking(None, ..., factors=(user_emb, item_emb))) equal to the score-function
path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphrec.data import Csr
from graphrec.eval.protocol import evaluate_ranking, evaluate_scores
from graphrec.eval.ranking import topk_rows
from graphrec.popularity import head_item_mask
from tests.helpers import SCORES, SEEN, TARGET, csr


def test_topk_rows_matches_torch_topk():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(33, 5003, generator=gen)  # ragged last block
    scores[3, :4990] = float("-inf")  # a row with fewer finite scores than k
    for k, block in [(20, 64), (5, 16), (1, 64)]:
        values, items = topk_rows(scores, k, block=block)
        ref_values, ref_items = scores.topk(k, dim=1)
        assert torch.equal(values, ref_values)
        finite = torch.isfinite(ref_values)
        assert torch.equal(items[finite], ref_items[finite])
        assert torch.equal(scores.gather(1, items), values)


def test_default_batch_users_keeps_cpu_chunks_under_32_mib():
    from graphrec.eval.ranking import default_batch_users

    assert default_batch_users(40_981) == 204  # 204 * 40981 * 4 bytes < 32 MiB
    assert default_batch_users(40_981, "cuda") == 6550
    assert default_batch_users(10**9) == 1


# -- the factor path: evaluate_ranking(None, ..., factors=(user_emb, item_emb)) --------------


def factor_split(seed: int, num_users: int = 50, num_items: int = 203, dim: int = 8):
    """Random split whose first three users have only 3 unseen items (< K: -inf fillers)."""
    rng = np.random.default_rng(seed)
    pairs = rng.random((num_users, num_items))
    pairs[:3] = 0.0  # seen everywhere ...
    pairs[:3, :3] = 0.2  # ... except items 0-2, which are targets
    seen = np.argwhere(pairs < 0.15)
    target = np.argwhere((pairs >= 0.15) & (pairs < 0.25))
    user_emb = torch.from_numpy(rng.standard_normal((num_users, dim)).astype(np.float32))
    item_emb = torch.from_numpy(rng.standard_normal((num_items, dim)).astype(np.float32))
    return (
        Csr.from_pairs(seen[:, 0], seen[:, 1], num_users),
        Csr.from_pairs(target[:, 0], target[:, 1], num_users),
        user_emb,
        item_emb,
        rng,
    )


@pytest.mark.parametrize("tail_boost,shape", [(0.0, None), (1.5, None), (1.5, "degree")])
@pytest.mark.parametrize(
    "item_tile,batch_users",
    [(None, None), (2048, 7), (203, 9), (64, 50), (12, 7), (100, 3), (96, 1000), (7, 11),
     (1, 16)],
)
def test_factor_path_equals_score_fn_path(item_tile, batch_users, tail_boost, shape):
    from graphrec.popularity import boost_tail, tail_boost_weights

    seen, target, user_emb, item_emb, rng = factor_split(0)
    num_items = item_emb.shape[0]  # 203: no tile width above divides it
    degree = np.bincount(seen.indices, minlength=num_items)
    head = head_item_mask(degree)
    # shape None: no weights given, every tail item gets the whole boost
    weights = None if shape is None else tail_boost_weights(degree, shape)
    tail = torch.from_numpy(~head) if weights is None else torch.from_numpy(weights)
    kwargs = dict(
        ks=(1, 5, 20), head_items=head, cold_items=rng.random(num_items) < 0.2,
        item_information=rng.random(num_items), item_vectors=rng.standard_normal((num_items, 4)),
    )
    expected = evaluate_ranking(
        lambda u: boost_tail(user_emb[u] @ item_emb.T, tail, tail_boost),
        seen, target, num_items, **kwargs,
    )
    got = evaluate_ranking(
        None, seen, target, num_items, batch_users=batch_users, factors=(user_emb, item_emb),
        tail_boost=tail_boost, boost_weights=weights, item_tile=item_tile, **kwargs,
    )
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key
    assert expected["num_cold_users"] > 0 and expected["num_tail_users"] > 0


def test_factor_path_fillers_and_hand_worked_scores():
    # Identity item factors make the scores exactly SCORES: the hand-worked cases again,
    # including K=10 > 6 items (u0 has a masked -inf filler) and cold-only ranking.
    cold = np.array([False, False, False, True, False, True])
    head = np.array([False, True, False, False, True, False])
    for item_tile in (None, 2, 4):
        got = evaluate_ranking(None, SEEN, TARGET, 6, ks=(1, 2, 3, 10), head_items=head,
                               cold_items=cold, factors=(SCORES, torch.eye(6)),
                               item_tile=item_tile)
        assert got == evaluate_scores(SCORES, SEEN, TARGET, ks=(1, 2, 3, 10), head_items=head,
                                      cold_items=cold)
    # one user, items 0 and 1 seen: the top-3 list is [2, -inf, -inf]
    out = evaluate_ranking(None, csr([[0, 1]]), csr([[0, 2]]), 3, ks=(3,),
                           factors=(torch.tensor([[0.9, 0.8, 0.1]]), torch.eye(3)))
    assert out["recall@3"] == pytest.approx(0.5, abs=1e-6)
    assert out["coverage@3"] == pytest.approx(1 / 3, abs=1e-6)


def test_factor_path_tail_boost_is_a_score_spread():
    # User factors (1, 0) against item factors (s_i, 0): raw scores s = (-1, 0, 1), unbiased
    # std 1. Boost 1.5 on tail item 0 lifts it from -1 to 0.5, past item 1 (0) but not item
    # 2 (1): the top-2 list goes from [2, 1] to [2, 0].
    items = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    head = np.array([False, True, True])
    target = csr([[0]])
    plain = evaluate_ranking(None, csr([[]]), target, 3, ks=(2,), head_items=head,
                             factors=(torch.tensor([[1.0, 0.0]]), items))
    boosted = evaluate_ranking(None, csr([[]]), target, 3, ks=(2,), head_items=head,
                               factors=(torch.tensor([[1.0, 0.0]]), items), tail_boost=1.5)
    assert plain["recall@2"] == 0.0  # [2, 1]
    assert boosted["recall@2"] == 1.0  # [2, 0]: 0.5 > 0
