"""graphrec.eval.metrics: hand-worked values of every metric (accuracy, tail, cold,
beyond-accuracy), masked fillers, and agreement with PyG's link-prediction metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphrec.data import Csr
from graphrec.eval.protocol import evaluate_scores
from tests.helpers import L3, SCORES, SEEN, TARGET, csr, random_split


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
    # K=2 holds both cold items: cold recall would be 1 whatever the scores, so no cold_*@2
    assert "cold_recall@2" not in out and "cold_ndcg@2" not in out
    assert out["num_cold_items"] == 2
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
