"""graphrec.artifacts.model_dir: a saved model loads back (no pickle) with identical
embeddings and recommendations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from graphrec.artifacts import model_dir as artifact
from graphrec.build import BuildConfig, build_graph
from graphrec.model import TextLightGCN
from graphrec.pipeline import train_model
from graphrec.serve.recommender import Recommender
from graphrec.train import TrainConfig, Trainer


def test_save_load_round_trip_gives_identical_scores(planted, tiny_bert: str,
                                                     tmp_path: Path) -> None:
    graph = build_graph(BuildConfig(interactions=str(planted.interactions),
                                    items=str(planted.items), text_model=tiny_bert,
                                    cold_items=0.1, cache_dir=str(tmp_path / "cache")),
                        tmp_path / "graph")
    trainer = Trainer(graph, TrainConfig(epochs=2, batch_size=64, lr=0.05, dim=8,
                                         device="cpu", eval_every=0))
    result = train_model(graph, trainer=trainer)
    artifact.save_model(result, graph, tmp_path / "model")
    rec = Recommender.load(tmp_path / "model")
    torch.testing.assert_close(rec.user_emb, result.user_emb, atol=0, rtol=0)
    torch.testing.assert_close(rec.item_emb, result.item_emb, atol=0, rtol=0)
    scores = result.user_emb @ result.item_emb.T
    for user in ("1", "17", "42"):
        u = graph.user_ids.tolist().index(user)
        recs = rec.recommend(user, k=5, include_seen=True)
        top = torch.topk(scores[u], 5)
        assert [r.item for r in recs] == graph.item_ids[top.indices.numpy()].tolist()
        np.testing.assert_allclose([r.score for r in recs], top.values.numpy(), atol=1e-6)
    # The weights load without pickle and reproduce the final embeddings of warm items.
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    model = TextLightGCN(graph.num_users, graph.num_items, 8, 3,
                         text_emb=torch.as_tensor(graph.text_emb),
                         item_init=result.config.item_init)
    model.load_state_dict(state)
    eu, ei, _, _ = model(trainer.adj)
    warm = torch.as_tensor(graph.train_item_degree() > 0)
    torch.testing.assert_close(eu.detach(), result.user_emb, atol=1e-6, rtol=0)
    torch.testing.assert_close(ei.detach()[warm], result.item_emb[warm], atol=1e-6, rtol=0)
