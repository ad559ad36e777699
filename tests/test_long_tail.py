"""Long-tail levers: the serving-time tail boost, and no leakage of cold items into training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import ok, one_line_error, run, trained  # noqa: F401  (module fixture)

from graphrec.data import TRAIN
from graphrec.errors import ConfigError
from graphrec.popularity import boost_tail, check_tail_boost, tail_boost_weights
from graphrec.serve.recommender import Recommender
from graphrec.train.sampling import BPRSampler
from graphrec.artifacts.graph_dir import load_graph


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


def test_tail_boost_fills_lists_with_tail_items(trained: Path) -> None:  # noqa: F811
    rec = Recommender.load(trained / "model", tail_shape="flat")
    tail = rec.tail.numpy()
    assert tail.sum() == rec.num_items - round(0.2 * rec.num_items)
    shares = []
    for boost in (0.0, 3.0, 10.0):
        rec.tail_boost = boost
        lists = [items for _, items, _ in rec.recommend_all(k=5)]
        index = {i: k for k, i in enumerate(rec.item_ids)}
        shares.append(np.mean([tail[index[i]] for items in lists for i in items]))
    assert shares[0] < shares[1] <= shares[2] and shares[2] == 1.0


def test_cli_tail_boost(trained: Path) -> None:  # noqa: F811
    plain = json.loads(ok(run(trained, "evaluate", "--json")).stdout)["model"]
    boosted = json.loads(ok(run(trained, "evaluate", "--json", "--tail-boost", "10")).stdout)
    assert boosted["model"]["tail_share@20"] > plain["tail_share@20"]
    user = load_graph(trained / "graph").user_ids[0]
    doc = json.loads(ok(run(trained, "recommend", "--user", str(user), "--tail-boost", "10",
                            "--json", "-k", "3")).stdout)
    rec = Recommender.load(trained / "model")  # degree shape: only tail items with
    for r in doc["items"]:                      # interactions are lifted
        assert rec.tail[rec.item_index(r["item"])] > 0
    flat = json.loads(ok(run(trained, "evaluate", "--json", "--tail-boost", "10",
                             "--tail-shape", "flat")).stdout)["model"]
    assert flat["tail_share@20"] > plain["tail_share@20"]
    assert flat != boosted["model"]
    one_line_error(run(trained, "recommend", "--user", str(user), "--tail-boost", "-1"),
                   "--tail-boost -1")
    one_line_error(run(trained, "evaluate", "--tail-boost", "nan"), "--tail-boost nan")


def test_cold_items_never_reach_training(trained: Path) -> None:  # noqa: F811
    """The cold protocol's no-leakage property, end to end: no training edge, never drawn as a
    positive or a negative, and zero degree in the saved model."""
    graph = load_graph(trained / "graph")
    cold = graph.cold_items
    assert cold.any()
    u, i = graph.fold_pairs(TRAIN)
    assert not cold[i].any()
    assert (graph.train_item_degree()[cold] == 0).all()
    sampler = BPRSampler(torch.as_tensor(u), torch.as_tensor(i), graph.num_items, "popularity",
                         alpha=0.5)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        for _users, pos, neg in sampler.epoch(64, gen):
            assert not cold[pos.numpy()].any() and not cold[neg.numpy()].any()
    rec = Recommender.load(trained / "model")
    assert (rec.item_degree[cold] == 0).all()
