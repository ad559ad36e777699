"""Full-ranking metrics: hand-worked values, masking, tail/cold, chunking, PyG agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graphrec.data import Csr
from graphrec.errors import ConfigError, DataError
from graphrec.data.csr import gather_rows
from graphrec.eval.protocol import evaluate_ranking, evaluate_scores
from graphrec.eval.ranking import topk_rows
from graphrec.popularity import head_item_mask

L3 = math.log2(3)  # 1 / log2(rank + 2) at rank 1 is 1 / L3 ~= 0.6309


def csr(rows: list[list[int]]) -> Csr:
    users = [u for u, items in enumerate(rows) for _ in items]
    items = [i for r in rows for i in r]
    return Csr.from_pairs(np.array(users, dtype=np.int64), np.array(items, dtype=np.int64),
                          len(rows))


# Three users, six items. Rankings before masking:
#   u0: 0 1 2 3 4 5    u1: 5 4 3 2 1 0    u2: 2 4 0 3 5 1
SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        [0.5, 0.1, 0.9, 0.3, 0.7, 0.2],
    ]
)
SEEN = csr([[0], [5], []])
TARGET = csr([[1, 3], [], [4, 1]])  # u1 has no target: skipped


def test_hand_worked_recall_ndcg_precision_hit():
    out = evaluate_scores(SCORES, SEEN, TARGET, ks=(2, 3))
    # Masked u0 ranks 1 2 3 4 5; u2 (nothing seen) ranks 2 4 0 3 5 1.
    # K=2: u0 top [1, 2], hit at rank 0 -> recall 1/2, precision 1/2, DCG 1,
    #        IDCG (2 targets) = 1 + 1/L3, ndcg = 1 / (1 + 1/L3)
    #      u2 top [2, 4], hit at rank 1 -> recall 1/2, precision 1/2, DCG 1/L3,
    #        ndcg = (1/L3) / (1 + 1/L3)
    idcg = 1 + 1 / L3
    assert out["num_users"] == 2
    assert out["recall@2"] == pytest.approx(0.5, abs=1e-6)
    assert out["precision@2"] == pytest.approx(0.5, abs=1e-6)
    assert out["hit@2"] == pytest.approx(1.0, abs=1e-6)
    assert out["ndcg@2"] == pytest.approx((1 / idcg + (1 / L3) / idcg) / 2, abs=1e-6)
    # K=3: u0 top [1, 2, 3], hits at ranks 0 and 2 -> recall 1, precision 2/3,
    #        DCG 1 + 1/log2(4) = 1.5, ndcg 1.5 / idcg
    #      u2 top [2, 4, 0], hit at rank 1 -> recall 1/2, precision 1/3, ndcg (1/L3) / idcg
    assert out["recall@3"] == pytest.approx(0.75, abs=1e-6)
    assert out["precision@3"] == pytest.approx(0.5, abs=1e-6)
    assert out["hit@3"] == pytest.approx(1.0, abs=1e-6)
    assert out["ndcg@3"] == pytest.approx((1.5 / idcg + (1 / L3) / idcg) / 2, abs=1e-6)
    assert out["ndcg@3"] == pytest.approx(0.6532867981, abs=1e-6)
    # coverage: K=2 lists {1, 2} u {2, 4} = 3 of 6 items; K=3 adds 3 and 0 -> 5 of 6
    assert out["coverage@2"] == pytest.approx(3 / 6, abs=1e-6)
    assert out["coverage@3"] == pytest.approx(5 / 6, abs=1e-6)
    assert "tail_recall@2" not in out and "cold_recall@2" not in out


def test_masking_seen_items_changes_the_ranking():
    # K=1: masked, u0's top is item 1 (a target) -> recall 1/2; u2's top is 2 -> 0. Mean 1/4.
    masked = evaluate_scores(SCORES, SEEN, TARGET, ks=(1,))
    assert masked["recall@1"] == pytest.approx(0.25, abs=1e-6)
    # Unmasked, u0's top is item 0 (its training item) -> no hit anywhere.
    unmasked = evaluate_scores(SCORES, csr([[], [], []]), TARGET, ks=(1,))
    assert unmasked["recall@1"] == pytest.approx(0.0, abs=1e-6)


def test_score_matrix_is_not_modified():
    scores = SCORES.clone()
    evaluate_scores(scores, SEEN, TARGET, ks=(2,))
    assert torch.equal(scores, SCORES)

    calls = []

    def view_fn(users: torch.Tensor) -> torch.Tensor:
        calls.append(users)
        return scores[users[0] : users[-1] + 1]  # a view of the caller's tensor

    evaluate_ranking(view_fn, SEEN, TARGET, num_items=6, ks=(2,), batch_users=1)
    assert torch.equal(scores, SCORES)
    assert [u.tolist() for u in calls] == [[0], [2]]  # u1 (no target) is never scored


def test_tail_metrics_by_hand():
    head = np.array([False, True, False, False, True, False])  # head {1, 4}, tail {0, 2, 3, 5}
    out = evaluate_scores(SCORES, SEEN, TARGET, ks=(2, 3), head_items=head)
    # Tail targets: u0 {3}; u2 has {4, 1}, both head -> u2 is not a tail user.
    assert out["num_tail_users"] == 1
    # K=2: u0 top [1, 2] misses 3 -> 0.   K=3: u0 top [1, 2, 3] hits 3 -> 1 (mean over u0 only).
    assert out["tail_recall@2"] == pytest.approx(0.0, abs=1e-6)
    assert out["tail_recall@3"] == pytest.approx(1.0, abs=1e-6)
    # Tail share: K=2 u0 [1, 2] -> 1/2, u2 [2, 4] -> 1/2.
    #             K=3 u0 [1, 2, 3] -> 2/3, u2 [2, 4, 0] -> 2/3
    assert out["tail_share@2"] == pytest.approx(0.5, abs=1e-6)
    assert out["tail_share@3"] == pytest.approx(2 / 3, abs=1e-6)


def test_cold_only_ranking_by_hand():
    scores = torch.tensor(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # cold-only ranking: 3 (0.6), 5 (0.4)
            [0.0, 0.9, 0.1, 0.8, 0.2, 0.3],  # cold-only ranking: 3 (0.8), 5 (0.3)
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        ]
    )
    cold = np.array([False, False, False, True, False, True])  # cold {3, 5}
    target = csr([[1, 3], [5, 1], [2]])  # cold targets: a {3}, b {5}, c none
    out = evaluate_scores(scores, csr([[0], [], []]), target, ks=(1, 2), cold_items=cold)
    assert out["num_users"] == 3
    assert out["num_cold_users"] == 2
    # K=1: a's top cold item 3 is its target -> 1; b's top 3 is not -> 0
    assert out["cold_recall@1"] == pytest.approx(0.5, abs=1e-6)
    assert out["cold_ndcg@1"] == pytest.approx(0.5, abs=1e-6)
    # K=2: a hits at rank 0 -> recall 1, ndcg 1; b hits 5 at rank 1 -> recall 1, ndcg 1/L3
    assert out["cold_recall@2"] == pytest.approx(1.0, abs=1e-6)
    assert out["cold_ndcg@2"] == pytest.approx((1 + 1 / L3) / 2, abs=1e-6)
    # Hybrid (all-item) ranking for b is 1 3 5 ...: its item 1 hits at K=1, unlike cold-only.
    assert out["recall@1"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3, abs=1e-6)

    # A seen cold item (a validation item at test time) is masked in the cold ranking too:
    # b's cold ranking becomes [5], so it hits at K=1.
    seen = csr([[0], [3], []])
    out = evaluate_scores(scores, seen, target, ks=(1,), cold_items=cold)
    assert out["cold_recall@1"] == pytest.approx(1.0, abs=1e-6)


def test_no_cold_keys_without_cold_items():
    out = evaluate_scores(SCORES, SEEN, TARGET, ks=(2,), cold_items=np.zeros(6, dtype=bool))
    assert not any(key.startswith("cold") or key == "num_cold_users" for key in out)


def test_masked_fillers_are_neither_hits_nor_recommendations():
    # One user, three items, two seen; item 0 is both seen and a target (kept in the
    # denominator, never hit). The top-3 list is [2, -inf, -inf].
    scores = torch.tensor([[0.9, 0.8, 0.1]])
    out = evaluate_scores(scores, csr([[0, 1]]), csr([[0, 2]]), ks=(3,))
    assert out["recall@3"] == pytest.approx(0.5, abs=1e-6)
    assert out["precision@3"] == pytest.approx(1 / 3, abs=1e-6)
    assert out["coverage@3"] == pytest.approx(1 / 3, abs=1e-6)
    # rank 0 hit; IDCG over min(2, 3) = 2 ideal hits
    assert out["ndcg@3"] == pytest.approx(1 / (1 + 1 / L3), abs=1e-6)


def test_duplicate_targets_count_once():
    target = Csr.from_pairs(np.array([0, 0, 0]), np.array([1, 1, 3]), 3)
    out = evaluate_scores(SCORES, SEEN, target, ks=(2,))
    assert out["recall@2"] == pytest.approx(0.5, abs=1e-6)  # 1 hit of {1, 3}


def test_k_larger_than_catalog_is_clipped():
    out = evaluate_scores(SCORES, SEEN, TARGET, ks=(10,))
    # Lists hold all 6 items (u0: 5 real + 1 masked); every target is found.
    assert out["recall@10"] == pytest.approx(1.0, abs=1e-6)
    assert out["precision@10"] == pytest.approx(2 / 6, abs=1e-6)  # hits / clipped K = 2 / 6
    assert out["coverage@10"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("ks", [(0,), (-3,), (20, 0), (), (2.5,)])
def test_bad_k_raises_config_error(ks):
    with pytest.raises(ConfigError, match="ks"):
        evaluate_scores(SCORES, SEEN, TARGET, ks=ks)


def test_bad_inputs_raise_data_error():
    with pytest.raises(DataError, match="shape"):
        evaluate_ranking(lambda u: torch.zeros(u.numel(), 5), SEEN, TARGET, num_items=6)
    with pytest.raises(DataError, match="rows"):
        evaluate_scores(SCORES, csr([[0], [5]]), TARGET)
    with pytest.raises(DataError, match="item indices"):
        evaluate_scores(SCORES, SEEN, csr([[1, 7], [], []]))
    with pytest.raises(DataError, match="nothing to evaluate"):
        evaluate_scores(SCORES, SEEN, csr([[], [], []]))
    with pytest.raises(DataError, match="head_items"):
        evaluate_scores(SCORES, SEEN, TARGET, head_items=np.ones(5, dtype=bool))
    with pytest.raises(DataError, match="NaN"):
        evaluate_scores(torch.full((3, 6), float("nan")), SEEN, TARGET)
    with pytest.raises(ConfigError, match="batch_users"):
        evaluate_scores(SCORES, SEEN, TARGET, batch_users=0)


def random_split(seed: int, num_users: int = 60, num_items: int = 40):
    rng = np.random.default_rng(seed)
    pairs = rng.random((num_users, num_items))
    seen = np.argwhere(pairs < 0.15)
    target = np.argwhere((pairs >= 0.15) & (pairs < 0.25))
    return (
        Csr.from_pairs(seen[:, 0], seen[:, 1], num_users),
        Csr.from_pairs(target[:, 0], target[:, 1], num_users),
        torch.from_numpy(rng.standard_normal((num_users, num_items)).astype(np.float32)),
        rng,
    )


def test_chunking_invariance():
    seen, target, scores, rng = random_split(0)
    head = head_item_mask(np.bincount(seen.indices, minlength=40))
    cold = rng.random(40) < 0.2
    kwargs = dict(ks=(1, 5, 20), head_items=head, cold_items=cold)
    one = evaluate_scores(scores, seen, target, batch_users=1, **kwargs)
    many = evaluate_scores(scores, seen, target, batch_users=1000, **kwargs)
    seven = evaluate_scores(scores, seen, target, batch_users=7, **kwargs)
    assert one.keys() == many.keys() == seven.keys()
    for key in one:
        assert one[key] == pytest.approx(many[key], abs=1e-9), key
        assert seven[key] == pytest.approx(many[key], abs=1e-9), key
    assert one["num_cold_users"] > 0 and one["num_tail_users"] > 0


def test_agrees_with_torch_geometric_link_pred_metrics():
    from torch_geometric.metrics import (
        LinkPredCoverage,
        LinkPredHitRatio,
        LinkPredMetricCollection,
        LinkPredNDCG,
        LinkPredPrecision,
        LinkPredRecall,
    )

    seen, target, scores, _ = random_split(1, num_users=80, num_items=200)
    k = 10  # every user has far more than 10 unseen items: no masked fillers
    out = evaluate_scores(scores, seen, target, ks=(k,))

    masked = scores.clone()
    masked[torch.from_numpy(seen.row_index()), torch.from_numpy(seen.indices)] = float("-inf")
    has_target = torch.from_numpy(np.flatnonzero(target.row_lengths() > 0))
    top = masked[has_target].topk(k, dim=1).indices
    local = torch.from_numpy(np.repeat(np.arange(has_target.numel()),
                                       target.row_lengths()[has_target.numpy()]))
    labels = torch.stack([local, torch.from_numpy(target.indices)])
    coll = LinkPredMetricCollection(
        [LinkPredRecall(k), LinkPredNDCG(k), LinkPredPrecision(k), LinkPredHitRatio(k),
         LinkPredCoverage(k, 200)]
    )
    coll.update(top, labels)
    pyg = {name: float(v) for name, v in coll.compute().items()}
    assert out["recall@10"] == pytest.approx(pyg["LinkPredRecall@10"], abs=1e-6)
    assert out["ndcg@10"] == pytest.approx(pyg["LinkPredNDCG@10"], abs=1e-6)
    assert out["precision@10"] == pytest.approx(pyg["LinkPredPrecision@10"], abs=1e-6)
    assert out["hit@10"] == pytest.approx(pyg["LinkPredHitRatio@10"], abs=1e-6)
    assert out["coverage@10"] == pytest.approx(pyg["LinkPredCoverage@10"], abs=1e-6)


def test_head_item_mask_top_share_ties_by_index():
    degree = np.array([5, 1, 5, 0, 3, 2, 2, 9, 0, 1])
    assert np.flatnonzero(head_item_mask(degree)).tolist() == [0, 7]  # 9, then 5 (index 0 < 2)
    assert np.flatnonzero(head_item_mask(degree, 0.3)).tolist() == [0, 2, 7]
    assert not head_item_mask(degree, 0.0).any()
    assert head_item_mask(degree, 1.0).all()
    with pytest.raises(ConfigError, match="head_share"):
        head_item_mask(degree, 1.5)


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


def test_gather_rows():
    c = csr([[1, 2], [], [0, 4, 5], [3]])
    local, cols = gather_rows(torch.from_numpy(c.indptr), torch.from_numpy(c.indices),
                              torch.tensor([3, 1, 2, 0]))
    assert local.tolist() == [0, 2, 2, 2, 3, 3]
    assert cols.tolist() == [3, 0, 4, 5, 1, 2]


def test_default_batch_users_keeps_cpu_chunks_under_32_mib():
    from graphrec.eval.ranking import default_batch_users

    assert default_batch_users(40_981) == 204  # 204 * 40981 * 4 bytes < 32 MiB
    assert default_batch_users(40_981, "cuda") == 6550
    assert default_batch_users(10**9) == 1


def test_integer_scores_are_accepted():
    out = evaluate_ranking(
        lambda u: (SCORES[u] * 10).round().to(torch.int64), SEEN, TARGET, num_items=6, ks=(2,)
    )
    assert out["recall@2"] == pytest.approx(0.5, abs=1e-6)


def test_gini_novelty_and_ild_hand_worked():
    # K=2 lists (masked as in test_hand_worked_recall_ndcg_precision_hit): u0 [1, 2], u2 [2, 4].
    # Counts over six items: item 2 twice, items 1 and 4 once, items 0, 3, 5 never:
    # sorted x = [0, 0, 0, 1, 1, 2], sum 4, n 6; Gini = sum_r (2r - n - 1) x_r / (n * sum)
    # with r = 1..6: (8-7)*1 + (10-7)*1 + (12-7)*2 = 14 -> 14 / 24.
    info = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
    out = evaluate_scores(SCORES, SEEN, TARGET, ks=(2,), item_information=info,
                          item_vectors=vectors)
    assert out["gini@2"] == pytest.approx(14 / 24, abs=1e-9)
    # novelty: u0 mean(1, 2) = 1.5, u2 mean(2, 4) = 3 -> 2.25
    assert out["novelty@2"] == pytest.approx(2.25, abs=1e-6)
    # ild: u0 items 1 (x axis) and 2 (y axis) are orthogonal -> distance 1;
    # u2 items 2 and 4 point the same way (norms differ) -> distance 0. Mean 0.5.
    assert out["ild@2"] == pytest.approx(0.5, abs=1e-6)
    assert out["coverage@2"] == pytest.approx(3 / 6, abs=1e-9)


def test_gini_extremes():
    from graphrec.eval.metrics import gini

    assert gini(torch.tensor([3, 3, 3, 3])) == pytest.approx(0.0)
    assert gini(torch.tensor([0, 0, 0, 8])) == pytest.approx(3 / 4)  # (n - 1) / n
    assert gini(torch.zeros(5, dtype=torch.int64)) == 0.0


def test_self_information_orders_rare_items_first():
    from graphrec.popularity import self_information

    info = self_information(np.array([0, 9, 99]), num_users=99)
    assert info[0] > info[1] > info[2] == pytest.approx(0.0)
    assert info[1] == pytest.approx(-math.log2(10 / 100))


def test_ild_and_novelty_reject_wrong_shapes():
    with pytest.raises(DataError, match="item_vectors"):
        evaluate_scores(SCORES, SEEN, TARGET, ks=(2,), item_vectors=np.ones((5, 2)))
    with pytest.raises(DataError, match="item_information"):
        evaluate_scores(SCORES, SEEN, TARGET, ks=(2,), item_information=np.ones(4))


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


def test_factor_path_bad_inputs():
    factors = (SCORES, torch.eye(6))
    with pytest.raises(ConfigError, match="exactly one of score_fn and factors"):
        evaluate_ranking(lambda u: SCORES[u], SEEN, TARGET, 6, factors=factors)
    with pytest.raises(ConfigError, match="exactly one of score_fn and factors"):
        evaluate_ranking(None, SEEN, TARGET, 6)
    with pytest.raises(ConfigError, match="factors only"):
        evaluate_ranking(lambda u: SCORES[u], SEEN, TARGET, 6, tail_boost=1.0,
                         head_items=np.zeros(6, dtype=bool))
    with pytest.raises(ConfigError, match="head_items"):
        evaluate_ranking(None, SEEN, TARGET, 6, factors=factors, tail_boost=1.0)
    with pytest.raises(ConfigError, match="tail_boost"):
        evaluate_ranking(None, SEEN, TARGET, 6, factors=factors, tail_boost=-1.0)
    with pytest.raises(ConfigError, match="item_tile"):
        evaluate_ranking(None, SEEN, TARGET, 6, factors=factors, item_tile=0)
    with pytest.raises(DataError, match="one per item"):
        evaluate_ranking(None, SEEN, TARGET, 6, factors=(SCORES, torch.eye(5, 6)))
    with pytest.raises(DataError, match="one per user"):
        evaluate_ranking(None, SEEN, TARGET, 6, factors=(SCORES[:2], torch.eye(6)))
    with pytest.raises(DataError, match=r"\[num_items, d\]"):
        evaluate_ranking(None, SEEN, TARGET, 6, factors=(SCORES, torch.eye(6)[:, :5]))
    with pytest.raises(DataError, match="NaN"):
        evaluate_ranking(None, SEEN, TARGET, 6,
                         factors=(torch.full((3, 6), float("nan")), torch.eye(6)))
