"""graphrec.model.coldstart: cold items placed from their text (ridge, bpr head, layer0),
the warm model left as trained, and the ridge map's rescaling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from graphrec.build import BuildConfig, build_graph
from graphrec.model.coldstart import fit_text_map, text_map_for
from graphrec.pipeline import train_model
from graphrec.train import TrainConfig, Trainer


@pytest.mark.parametrize("neg_candidates", [1, 8])
@pytest.mark.parametrize("cold_start", ["ridge", "bpr", "layer0"])
def test_text_model_places_cold_items_by_text(planted, tiny_bert: str, tmp_path: Path,
                                              cold_start: str, neg_candidates: int) -> None:
    cfg = BuildConfig(interactions=str(planted.interactions), items=str(planted.items),
                      text_model=tiny_bert, cold_items=0.2, test_ratio=0.2, valid_ratio=0.1,
                      seed=0, cache_dir=str(tmp_path / "cache"))
    graph = build_graph(cfg, tmp_path / "graph")
    assert graph.text_emb.shape == (graph.num_items, 32)
    result = train_model(graph, TrainConfig(epochs=10, batch_size=64, lr=0.05, dim=16, layers=2,
                                        device="cpu", eval_every=2, seed=0, item_init="text",
                                        cold_start=cold_start,
                                        neg_candidates=neg_candidates))
    assert result.text_map is not None and result.text_map.shape == (32, 16)
    np.testing.assert_allclose(result.item_emb[graph.cold_items],
                               torch.as_tensor(graph.text_emb[graph.cold_items]) @ result.text_map,
                               atol=1e-5)
    assert result.best_epoch is not None and "valid" in result.history[1]
    assert result.test["num_cold_items"] == int(graph.cold_items.sum())
    item_comm = np.array([planted.item_community[i] for i in graph.item_ids])
    emb = torch.nn.functional.normalize(result.item_emb, dim=1)
    sims = emb @ emb.T
    sims.fill_diagonal_(float("-inf"))
    cold = np.flatnonzero(graph.cold_items)
    assert torch.linalg.norm(result.item_emb[cold], dim=1).min() > 0
    # Each user's highest-scored cold item is one of their own community's (chance: 1/3).
    user_comm = np.array([planted.user_community[u] for u in graph.user_ids])
    best_cold = cold[(result.user_emb @ result.item_emb[cold].T).argmax(1).numpy()]
    assert (item_comm[best_cold] == user_comm).mean() >= 0.8
    if neg_candidates == 1:
        # A cold item's neighbours share its community: its embedding came from its text.
        # Not with hard negatives: they push apart the items of one community a user has
        # not met (the hardest negatives are those), so item-to-item cosine no longer
        # follows the communities on this fixture (share 0.5-0.6 against 0.7-0.9).
        top = torch.topk(sims[cold], 3, dim=1).indices.numpy()
        assert (item_comm[top] == item_comm[cold, None]).mean() >= 0.6


def test_text_head_leaves_the_warm_model_unchanged(planted_graph_text) -> None:
    """cold_start=bpr trains its head on detached user embeddings: same warm embeddings."""
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, dim=16, layers=2, device="cpu",
                      eval_every=0, seed=0, item_init="text")
    ridge = train_model(planted_graph_text, cfg)
    bpr = train_model(planted_graph_text, TrainConfig(**{**cfg.__dict__, "cold_start": "bpr"}))
    warm = ~planted_graph_text.cold_items
    torch.testing.assert_close(bpr.user_emb, ridge.user_emb, atol=1e-6, rtol=0)
    torch.testing.assert_close(bpr.item_emb[warm], ridge.item_emb[warm], atol=1e-6, rtol=0)
    assert not torch.allclose(bpr.text_map, ridge.text_map)


@pytest.mark.parametrize("item_init", ["text", "id"])
def test_ridge_placement_rescaled_only_for_text_items(planted_graph_text, item_init: str) -> None:
    """Text items: warm items placed by the map get their mean final norm. ID items: the map
    keeps the regression's own scale (lifted to warm norms, its weak placements crowd lists)."""
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, dim=16, layers=2, device="cpu",
                      eval_every=0, seed=0, item_init=item_init)
    trainer = Trainer(planted_graph_text, cfg)
    train_model(planted_graph_text, trainer=trainer)
    _, ei, _, _ = trainer.model(trainer.adj)
    ei, warm, text = ei.detach(), trainer.warm, trainer.text_emb
    w = text_map_for("ridge", trainer.model, text, ei, warm)
    plain = fit_text_map(text, ei, warm, 1.0)
    placed, final = (text[warm] @ w).norm(dim=1).mean(), ei[warm].norm(dim=1).mean()
    if item_init == "text":
        torch.testing.assert_close(placed, final)
        assert not torch.allclose(w, plain)
    else:
        torch.testing.assert_close(w, plain)
        assert placed < 0.9 * final  # the regression shrinks: no longer lifted
