"""Evaluate a trained model (and reference baselines) on its graph's split."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from graphrec.artifact import check_compatible, load_arrays, read_model_config
from graphrec.baselines import ItemKNN, MostPopular
from graphrec.data import TEST, TRAIN, VALID
from graphrec.device import resolve_device
from graphrec.errors import ConfigError, DataError
from graphrec.metrics import (
    check_tail_boost,
    evaluate_ranking,
    head_item_mask,
    self_information,
    tail_boost_weights,
)
from graphrec.store import GraphData

SPLITS = {"valid": VALID, "test": TEST}


def evaluate_model(graph: GraphData, model_path: str | Path, split: str = "test",
                   ks: tuple[int, ...] = (20,), baselines: bool = False,
                   device: str | None = None, tail_boost: float = 0.0,
                   tail_shape: str = "degree") -> dict:
    """Full-ranking metrics of the model in ``model_path`` on ``graph``'s ``split``.

    ``tail_boost`` / ``tail_shape`` score the model as served with that boost
    (``recommend.boost_tail``, ``metrics.tail_boost_weights``); baselines are never boosted.

    Seen items (masked) are the training items, plus validation items when scoring test.
    With ``baselines``, most-popular and item-kNN are scored by the same code on the same
    split. Items appended after training (``graphrec add-items``) are not ranked: the
    metrics are those of the model as trained. Returns {"split", "model": metrics,
    "baselines": {name: metrics}, "seconds"}.
    """
    check_tail_boost(tail_boost)
    degree = graph.train_item_degree()
    weights = tail_boost_weights(degree, tail_shape)
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected valid or test")
    cfg = read_model_config(model_path)
    check_compatible(cfg, graph, model_path)
    fold = SPLITS[split]
    target = graph.csr(fold)
    if target.nnz == 0:
        raise DataError(f"graph has no {split} interactions to evaluate on")
    seen = graph.csr(TRAIN) if fold == VALID else graph.csr(TRAIN, VALID)
    dev = resolve_device(device)
    arrays = load_arrays(model_path)
    user_emb = torch.as_tensor(arrays["user_emb"]).to(dev)
    # Only the graph's items: rows past them were appended by add-items, have no interactions
    # in this split and would only push real test items down the ranking.
    item_emb = torch.as_tensor(arrays["item_emb"][:graph.num_items]).to(dev)
    head = head_item_mask(degree)
    common = dict(seen=seen, target=target, num_items=graph.num_items, ks=ks, head_items=head,
                  cold_items=graph.cold_items if graph.cold_items.any() else None, device=dev,
                  item_information=self_information(degree, graph.num_users),
                  item_vectors=graph.text_emb)
    t0 = time.perf_counter()
    out = {"split": split,
           "model": evaluate_ranking(None, factors=(user_emb, item_emb), tail_boost=tail_boost,
                                     boost_weights=weights, **common)}
    out["seconds"] = round(time.perf_counter() - t0, 3)
    if baselines:
        # Baselines see everything the model may not recommend: train (+ valid at test time).
        pop = MostPopular(seen, graph.num_items)
        knn = ItemKNN(seen, graph.num_items, device=dev)
        out["baselines"] = {
            "most-popular": evaluate_ranking(pop.score, **common),
            "item-knn": evaluate_ranking(knn.score, **common),
        }
    return out
