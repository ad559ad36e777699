"""graphrec.serve.recommender: serving from a trained model directory with the tail boost,
batched, exact or through the faiss index (the index's own tests are in test_index.py; the
command line's recommend and similar runs in tests/cli/test_cli.py; the save / load round
trip in tests/artifacts/test_model_dir.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from graphrec.errors import ConfigError, UnknownUserError
from graphrec.serve import recommender
from graphrec.serve.recommender import Recommendation, Recommender


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


def _lists(batch: list[list[Recommendation]]) -> list[list[tuple[str, float]]]:
    return [[(r.item, r.score) for r in recs] for recs in batch]


def _same(batch, single) -> None:
    """Same items in the same order, scores to float tolerance."""
    assert [[i for i, _ in x] for x in _lists(batch)] == [[i for i, _ in x] for x in _lists(single)]
    np.testing.assert_allclose([s for x in _lists(batch) for _, s in x],
                               [s for x in _lists(single) for _, s in x], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("index", ["exact", "ann"])
def test_recommend_batch_is_recommend_for_every_user(trained: Path, index: str) -> None:
    if index == "ann":
        pytest.importorskip("faiss")
    rec = Recommender.load(trained / "model", index=index)
    assert rec.index == index
    if index == "ann":  # 30 items: one list, scanned whole, so the search is exhaustive
        assert rec.ann.nlist == 1 and rec.ann.nprobe == 1
    users = [str(u) for u in rec.user_ids]
    for kwargs in ({}, {"include_seen": True}, {"tail_boost": 2.0}):
        batch = rec.recommend_batch(users, 7, **kwargs)
        _same(batch, [rec.recommend(u, 7, **kwargs) for u in users])
    if index == "ann":  # and the index's lists are the exact ones
        exact = Recommender.load(trained / "model")
        for kwargs in ({}, {"tail_boost": 2.0}):
            _same(rec.recommend_batch(users, 7, **kwargs),
                  exact.recommend_batch(users, 7, **kwargs))
        history = [str(rec.item_ids[0]), str(rec.item_ids[12])]
        for diversity in (0.0, 0.5):
            _same([rec.recommend_new_user(history, 6, diversity=diversity)],
                  [exact.recommend_new_user(history, 6, diversity=diversity)])
            _same([rec.recommend(users[0], 6, diversity=diversity)],
                  [exact.recommend(users[0], 6, diversity=diversity)])


def test_recommend_batch_refuses_the_first_unknown_user(trained: Path) -> None:
    rec = Recommender.load(trained / "model")
    with pytest.raises(UnknownUserError) as single:
        rec.user_index("nobody")
    with pytest.raises(UnknownUserError) as batch:
        rec.recommend_batch([str(rec.user_ids[0]), "nobody", "nobody-else"], 5)
    assert str(batch.value) == str(single.value)
    assert rec.recommend_batch([], 5) == []
    with pytest.raises(ConfigError, match="k"):
        rec.recommend_batch([str(rec.user_ids[0])], 0)


def test_index_choices(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as bad:
        Recommender.load(trained / "model", index="hnsw")
    assert bad.value.parameter == "index" and "exact, ann, auto" in str(bad.value)
    assert Recommender.load(trained / "model", index="auto").index == "exact"  # 30 items
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if faiss were not installed
    with pytest.raises(ConfigError) as missing:
        Recommender.load(trained / "model", index="ann")
    assert missing.value.parameter == "index" and "faiss" in str(missing.value)
    monkeypatch.setattr(recommender, "ANN_MIN_ITEMS", 10)
    assert Recommender.load(trained / "model", index="auto").index == "exact"  # no faiss


def test_auto_is_ann_above_the_catalog_size(trained: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss")
    monkeypatch.setattr(recommender, "ANN_MIN_ITEMS", 29)
    assert Recommender.load(trained / "model", index="auto").index == "ann"  # 30 items
    monkeypatch.setattr(recommender, "ANN_MIN_ITEMS", 30)
    assert Recommender.load(trained / "model", index="auto").index == "exact"


def test_scoring_device_is_checked(trained: Path) -> None:
    import pytest
    import torch

    from graphrec.errors import GraphrecError

    rec = Recommender.load(trained / "model", device="cpu")
    assert rec.device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(GraphrecError, match="device.*no GPU"):
            Recommender.load(trained / "model", device="cuda")
