"""graphrec.model.coldstart: cold items placed from their text (ridge, two-sided, bpr head,
layer0), the warm model left as trained, the ridge map's rescaling, and how the two-sided
design chooses its weight."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from graphrec.build import BuildConfig, build_graph
from graphrec.model import coldstart
from graphrec.model.coldstart import (
    PlacementData,
    _subset_ndcg,
    fit_text_map,
    fit_user_map,
    text_map_for,
    two_sided_map,
)
from graphrec.pipeline import train_model
from graphrec.train import TrainConfig, Trainer


@pytest.mark.parametrize("neg_candidates", [1, 8])
@pytest.mark.parametrize("cold_start", ["ridge", "two-sided", "bpr", "layer0"])
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


def test_subset_ndcg_by_hand() -> None:
    """Two users, candidates 5, 7, 9 (item 8 is not one): user 0's target ranked second
    behind a candidate it has seen (masked, so first: 1.0); user 1's target last of three
    (1 / log2 4 = 0.5)."""
    user_emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    placed = torch.tensor([[3.0, 0.0], [2.0, 1.0], [0.0, -1.0]])  # items 5, 7, 9
    candidates = torch.tensor([5, 7, 9])
    valid = (torch.tensor([0, 1, 1]), torch.tensor([7, 9, 8]))
    seen = (torch.tensor([0, 1]), torch.tensor([5, 2]))
    assert _subset_ndcg(user_emb, placed, candidates, valid, seen) == pytest.approx(0.75)


def test_user_map_recovers_a_linear_profile() -> None:
    gen = torch.Generator().manual_seed(0)
    user_emb = torch.randn(500, 6, generator=gen)
    r = torch.randn(6, 10, generator=gen)
    got = fit_user_map(user_emb, user_emb @ r, ridge=1e-6)
    torch.testing.assert_close(got, r.T, atol=1e-4, rtol=1e-4)


def _users_know_the_text(seed: int = 0):
    """Items whose final embeddings are noise (the item side learns nothing from text),
    users whose embeddings are a linear image of their taste in text, each liking the
    items whose text matches that taste: the user side carries the signal."""
    gen = torch.Generator().manual_seed(seed)
    num_users, num_items, t, d = 300, 400, 8, 8
    text = torch.nn.functional.normalize(torch.randn(num_items, t, generator=gen), dim=1)
    taste = torch.nn.functional.normalize(torch.randn(num_users, t, generator=gen), dim=1)
    user_emb = taste @ torch.randn(t, d, generator=gen)
    item_emb = torch.randn(num_items, d, generator=gen)
    warm = torch.arange(num_items) < 300
    affinity = taste @ text.T
    top_warm = torch.topk(affinity[:, :300], 10, dim=1).indices
    top_cold = torch.topk(affinity[:, 300:], 3, dim=1).indices + 300
    users = torch.arange(num_users)
    train = (users.repeat_interleave(10), top_warm.flatten())
    valid = (users.repeat_interleave(3), top_cold.flatten())
    return SimpleNamespace(text=text, user_emb=user_emb, item_emb=item_emb, warm=warm,
                           train=train, valid=valid)


def test_two_sided_chooses_the_user_side_where_it_knows_more() -> None:
    bed = _users_know_the_text()
    model = SimpleNamespace(text_proj=None, text_head=None)
    w, choice = two_sided_map(model, bed.text, bed.item_emb, bed.warm,
                              PlacementData(bed.user_emb, bed.train, bed.valid))
    assert (choice.items, choice.count) == ("cold", 100)
    scores = {g["weight"]: g["ndcg@20"] for g in choice.grid}
    assert list(scores) == list(coldstart.TWO_SIDED_WEIGHTS)
    assert choice.weight >= 0.6 and scores[choice.weight] > scores[0.0] + 0.2
    # The map returned is the chosen blend refit on every warm item: cold items placed by
    # it rank each user's validation items as the chosen grid point did.
    placed = bed.text[~bed.warm] @ w
    got = _subset_ndcg(bed.user_emb, placed, torch.nonzero(~bed.warm).flatten(), bed.valid,
                       bed.train)
    assert got == pytest.approx(scores[choice.weight], abs=1e-6)


def test_two_sided_stands_in_warm_items_without_cold_validation_items() -> None:
    bed = _users_know_the_text()
    model = SimpleNamespace(text_proj=None, text_head=None)
    # Validation pairs on warm items only: a tenth of the warm items stand in for cold ones.
    on_warm = bed.train[0][::5], bed.train[1][::5]
    rest = torch.ones(len(bed.train[0]), dtype=torch.bool)
    rest[::5] = False
    data = PlacementData(bed.user_emb, (bed.train[0][rest], bed.train[1][rest]), on_warm)
    _, choice = two_sided_map(model, bed.text, bed.item_emb, bed.warm, data)
    assert (choice.items, choice.count) == ("pseudo-cold", 30) and choice.weight > 0
    # No validation pairs at all: the ridge map, nothing chosen.
    w, choice = two_sided_map(model, bed.text, bed.item_emb, bed.warm,
                              PlacementData(bed.user_emb, bed.train, None))
    assert (choice.items, choice.weight, choice.grid) == ("none", 0.0, [])
    torch.testing.assert_close(w, text_map_for("ridge", model, bed.text, bed.item_emb, bed.warm))


def test_two_sided_at_weight_zero_is_the_ridge_map(planted_graph_text, monkeypatch) -> None:
    monkeypatch.setattr(coldstart, "TWO_SIDED_WEIGHTS", (0.0,))
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, dim=16, layers=2, device="cpu",
                      eval_every=0, seed=0, item_init="text", cold_start="two-sided")
    trainer = Trainer(planted_graph_text, cfg)
    result = train_model(planted_graph_text, trainer=trainer)
    assert result.cold_start["weight"] == 0.0  # (30 items: too few to choose on, "none")
    eu, ei = trainer.propagate()
    ridge = text_map_for("ridge", trainer.model, trainer.text_emb, ei, trainer.warm)
    torch.testing.assert_close(result.text_map, ridge, atol=1e-6, rtol=1e-5)
