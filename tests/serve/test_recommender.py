"""graphrec.serve.recommender: serving from a trained model directory with the tail boost
(the command line's recommend and similar runs are in tests/cli/test_cli.py; the save / load
round trip in tests/artifacts/test_model_dir.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graphrec.serve.recommender import Recommender


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
