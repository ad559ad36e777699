"""graphrec.eval.protocol: masking of seen items, inputs left unmodified, chunking
invariance, and the checks of evaluate_ranking / evaluate_scores' arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphrec.errors import ConfigError, DataError
from graphrec.eval.protocol import evaluate_ranking, evaluate_scores
from graphrec.popularity import head_item_mask
from tests.helpers import SCORES, SEEN, TARGET, csr, random_split


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


def test_integer_scores_are_accepted():
    out = evaluate_ranking(
        lambda u: (SCORES[u] * 10).round().to(torch.int64), SEEN, TARGET, num_items=6, ks=(2,)
    )
    assert out["recall@2"] == pytest.approx(0.5, abs=1e-6)


def test_ild_and_novelty_reject_wrong_shapes():
    with pytest.raises(DataError, match="item_vectors"):
        evaluate_scores(SCORES, SEEN, TARGET, ks=(2,), item_vectors=np.ones((5, 2)))
    with pytest.raises(DataError, match="item_information"):
        evaluate_scores(SCORES, SEEN, TARGET, ks=(2,), item_information=np.ones(4))


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


@pytest.mark.parametrize("path", ["score_fn", "factors"])
def test_per_user_values_are_aligned_and_average_to_the_metrics(path):
    seen, target, _, rng = random_split(3)
    head = head_item_mask(np.bincount(seen.indices, minlength=40))
    cold = rng.random(40) < 0.2
    user_emb = torch.from_numpy(rng.standard_normal((60, 8)).astype(np.float32))
    item_emb = torch.from_numpy(rng.standard_normal((40, 8)).astype(np.float32))
    kwargs = dict(ks=(5, 20), head_items=head, cold_items=cold, batch_users=7)
    if path == "factors":
        kwargs["factors"] = (user_emb, item_emb)
        score_fn = None
    else:
        def score_fn(users):
            return user_emb[users] @ item_emb.T
    plain = evaluate_ranking(score_fn, seen, target, 40, **kwargs)
    out = evaluate_ranking(score_fn, seen, target, 40, per_user=True, **kwargs)
    assert out.metrics == plain
    has_target = np.diff(target.indptr) > 0
    assert out.users.tolist() == np.flatnonzero(has_target).tolist()
    assert "coverage@20" not in out.values and "recall@20" in out.values
    for k in (5, 20):
        assert out.item_counts[k].sum() == k * len(out.users)  # 40 - 15% seen > 20 unseen
        assert (out.item_counts[k] > 0).mean() == pytest.approx(plain[f"coverage@{k}"])
    for key, values in out.values.items():
        assert values.shape == out.users.shape
        assert np.nanmean(values) == pytest.approx(plain[key], abs=1e-9), key
    # tail_recall is NaN exactly for the users without a held-out tail item
    has_tail = np.array([(~head[target.indices[target.indptr[u]:target.indptr[u + 1]]]).any()
                         for u in out.users])
    assert np.array_equal(~np.isnan(out.values["tail_recall@20"]), has_tail)
    assert np.isnan(out.values["cold_recall@5"]).sum() == len(out.users) - plain[
        "num_cold_users"]
    # each user's recall@5 by hand, from their own top 5
    scores = (user_emb @ item_emb.T).numpy()
    for row, u in enumerate(out.users):
        s = scores[u].copy()
        s[seen.indices[seen.indptr[u]:seen.indptr[u + 1]]] = -np.inf
        top = np.argsort(-s, kind="stable")[:5]
        held = set(target.indices[target.indptr[u]:target.indptr[u + 1]].tolist())
        assert out.values["recall@5"][row] == pytest.approx(len(held & set(top)) / len(held))
