"""graphrec.train.trainer: a planted community structure the trained model must recover,
determinism, the CPU and CUDA steps agreeing, hard negatives, the thread-balanced node
order, bfloat16 products and the cosine learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from graphrec.artifacts.graph_dir import GraphData
from graphrec.data import TRAIN
from graphrec.errors import ConfigError
from graphrec.pipeline import train_model
from graphrec.train import TrainConfig, Trainer
from graphrec.train.config import BATCH_ROWS_BELOW


def test_precision_setting() -> None:
    graph = popularity_ordered_graph()
    with pytest.raises(ConfigError, match="precision 'float16'"):
        Trainer(graph, TrainConfig(precision="float16", device="cpu"))
    trainer = Trainer(graph, TrainConfig(precision="bfloat16", device="cpu", epochs=1,
                                         batch_size=256, dim=8, eval_every=0))
    assert trainer.adj.r.values().dtype == torch.bfloat16
    first = trainer.train_epoch()["loss"]
    for _ in range(3):
        last = trainer.train_epoch()["loss"]
    assert np.isfinite(last) and last < first


def community_share(graph, planted, user_emb: torch.Tensor, item_emb: torch.Tensor,
                    k: int = 3) -> float:
    """Share of each user's top-k unseen items that belong to the user's community."""
    user_comm = np.array([planted.user_community[u] for u in graph.user_ids])
    item_comm = np.array([planted.item_community[i] for i in graph.item_ids])
    scores = user_emb @ item_emb.T
    seen = graph.csr(TRAIN)
    scores[torch.as_tensor(seen.row_index()), torch.as_tensor(seen.indices)] = float("-inf")
    top = torch.topk(scores, k, dim=1).indices.numpy()
    return float((item_comm[top] == user_comm[:, None]).mean())


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_trainer_recovers_planted_communities(planted_graph, planted, negatives: str) -> None:
    cfg = TrainConfig(epochs=8, batch_size=64, lr=0.05, dim=16, layers=2, item_init="id",
                      negatives=negatives, device="cpu", eval_every=0, seed=0)
    result = train_model(planted_graph, cfg)
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert result.user_emb.shape == (planted_graph.num_users, 16)
    assert result.item_emb.shape == (planted_graph.num_items, 16)
    # Chance is 1/3 (three equal communities).
    assert community_share(planted_graph, planted, result.user_emb, result.item_emb) >= 0.8
    assert result.test["recall@20"] >= 0.8
    assert result.test["num_users"] == planted_graph.csr(2).row_lengths().astype(bool).sum()


def test_trainer_is_deterministic(planted_graph) -> None:
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, dim=8, layers=2, item_init="id",
                      device="cpu", eval_every=0, seed=3)
    a = train_model(planted_graph, cfg)
    b = train_model(planted_graph, cfg)
    torch.testing.assert_close(a.user_emb, b.user_emb, atol=0, rtol=0)
    c = train_model(planted_graph, TrainConfig(**{**cfg.__dict__, "seed": 4}))
    assert not torch.allclose(a.user_emb, c.user_emb)


@pytest.mark.parametrize("item_init,candidates,id_dropout",
                         [("id", 1, 0.0), ("text", 1, 0.0), ("id", 4, 0.0),
                          ("text+id", 4, 0.5)])
def test_all_rows_step_equals_batch_rows_step(planted_graph_text, item_init: str,
                                              candidates: int, id_dropout: float) -> None:
    """The CUDA step (every row, no torch.unique) and the CPU step (the batch's rows only)
    give the same loss and the same parameter gradients, repeated rows included, with one
    negative per triple or the hardest of several, with or without ID dropout."""
    cfg = TrainConfig(epochs=1, batch_size=96, lr=0.05, dim=16, layers=3, device="cpu",
                      eval_every=0, seed=0, item_init=item_init, neg_candidates=candidates,
                      id_dropout=id_dropout)
    users, pos, neg = next(Trainer(planted_graph_text, cfg).sampler.epoch(
        96, torch.Generator().manual_seed(5), candidates))
    assert len(torch.unique(users)) < len(users)  # the count-weighted L2 is exercised
    out = []
    for batch_rows in (True, False):
        t = Trainer(planted_graph_text, cfg)
        t.batch_rows = batch_rows
        t.optimizer.step = lambda: None  # keep the gradients, skip the update
        loss, bpr = t.train_step(users, pos, neg)
        out.append((loss, bpr, [p.grad.clone() for p in t.model.parameters()]))
    (la, ba, ga), (lb, bb, gb) = out
    torch.testing.assert_close(la, lb, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ba, bb, atol=1e-6, rtol=1e-6)
    assert len(ga) == len(gb) > 0
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert any(float(g.abs().max()) > 0 for g in ga)


@pytest.mark.parametrize("batch_rows", [True, False])
def test_hard_negative_step_trains_on_the_highest_scoring_candidate(planted_graph,
                                                                     batch_rows: bool) -> None:
    """A step on [B, K] candidates equals a step on the candidate each user scores highest
    under the step's own parameters, chosen here by brute force; and differs from a step
    on the first candidate."""
    cfg = TrainConfig(epochs=1, batch_size=80, lr=0.05, dim=16, layers=2, device="cpu",
                      eval_every=0, seed=0, item_init="id", neg_candidates=6)
    users, pos, cands = next(Trainer(planted_graph, cfg).sampler.epoch(
        80, torch.Generator().manual_seed(1), 6))
    probe = Trainer(planted_graph, cfg)
    with torch.no_grad():
        eu, ei, _, _ = probe.model(probe.adj)
    scores = (eu[users].unsqueeze(1) * ei[cands]).sum(-1)
    chosen = cands[torch.arange(len(users)), scores.argmax(1)]
    assert (chosen != cands[:, 0]).any()
    out = []
    for neg in (cands, chosen, cands[:, 0]):
        t = Trainer(planted_graph, cfg)
        t.batch_rows = batch_rows
        t.optimizer.step = lambda: None
        loss, _ = t.train_step(users, pos, neg)
        out.append((loss, [p.grad.clone() for p in t.model.parameters()]))
    (lk, gk), (lc, gc), (l0, _) = out
    torch.testing.assert_close(lk, lc, atol=0, rtol=0)
    for a, b in zip(gk, gc, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert abs(float(lk) - float(l0)) > 1e-4


def test_cpu_step_uses_batch_rows_only_for_batches_small_against_the_graph(
        planted_graph) -> None:
    nodes = planted_graph.num_users + planted_graph.num_items
    edge = math.ceil(BATCH_ROWS_BELOW * nodes)  # the smallest batch that uses every row
    for batch, expected in ((edge - 1, True), (edge, False), (4 * nodes, False)):
        cfg = TrainConfig(epochs=1, batch_size=batch, dim=8, layers=2, device="cpu",
                          eval_every=0)
        assert Trainer(planted_graph, cfg).batch_rows is expected, batch


def popularity_ordered_graph(num_users: int = 300, num_items: int = 200) -> GraphData:
    """Interactions with user and item ids in popularity order (0 = most active), all in
    the training fold."""
    rng = np.random.default_rng(0)
    pu, pi = 1 / np.arange(1, num_users + 1), 1 / np.arange(1, num_items + 1)
    keys = np.unique(rng.choice(num_users, 4000, p=pu / pu.sum()) * num_items
                     + rng.choice(num_items, 4000, p=pi / pi.sum()))
    return GraphData(
        user_ids=np.arange(num_users).astype(str), item_ids=np.arange(num_items).astype(str),
        item_titles=[""] * num_items, item_texts=[""] * num_items,
        users=keys // num_items, items=keys % num_items,
        folds=np.full(len(keys), TRAIN, dtype=np.int8),
        cold_items=np.zeros(num_items, dtype=bool), text_emb=None, meta={"fingerprint": "t"})


@pytest.mark.parametrize("batch", [64, 4096])  # batch rows / every row
def test_training_in_the_thread_balanced_order_equals_training_in_node_order(
        batch: int) -> None:
    """With two threads, popularity-ordered ids make the trainer keep nodes in another order
    for its products; an epoch then ends with the same parameters as with one thread (node
    order), and embeddings come back in node order."""
    graph = popularity_ordered_graph()
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.01, dim=8, layers=3, device="cpu",
                      eval_every=0, item_init="id", negatives="uniform")
    threads = torch.get_num_threads()
    trainers = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            trainers.append(Trainer(graph, cfg))
            trainers[-1].train_epoch()
    finally:
        torch.set_num_threads(threads)
    plain, ordered = trainers
    assert plain.adj.order is None
    assert ordered.adj.order is not None
    assert ordered.adj.order.users is not None and ordered.adj.order.items is not None
    assert plain.batch_rows == ordered.batch_rows == (batch == 64)
    for (name, a), b in zip(plain.model.named_parameters(), ordered.model.parameters(),
                            strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=name)
    for a, b in zip(plain.embeddings()[:2], ordered.embeddings()[:2], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_cosine_schedule_decays_the_learning_rate(planted_graph) -> None:
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.05, dim=8, layers=2, device="cpu",
                      eval_every=0, seed=0, lr_schedule="cosine")
    trainer = Trainer(planted_graph, cfg)
    assert isinstance(trainer.scheduler, torch.optim.lr_scheduler.LambdaLR)
    lrs = []  # the learning rate each optimizer step ran at
    trainer.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    for _ in range(cfg.epochs):
        trainer.train_epoch()
    steps = trainer.sampler.num_batches(64) * cfg.epochs
    assert len(lrs) == steps and lrs == sorted(lrs, reverse=True) and lrs[0] == 0.05
    # step s ran at 0.5 lr (1 + cos(pi s / n)); the last (s = n - 1) nearly at zero
    assert lrs[steps // 2] == pytest.approx(0.025 * (1 + math.cos(math.pi * (steps // 2) / steps)))
    assert lrs[-1] == pytest.approx(0.025 * (1 + math.cos(math.pi * (steps - 1) / steps)))
    with pytest.raises(ConfigError, match="lr_schedule 'step'"):
        Trainer(planted_graph, TrainConfig(lr_schedule="step"))


def test_fit_calls_the_epoch_callback_and_stops_when_it_says(planted_graph) -> None:
    cfg = TrainConfig(epochs=6, batch_size=64, lr=0.05, dim=8, layers=2, device="cpu",
                      eval_every=0, seed=0)
    seen = []

    def on_epoch(row: dict) -> bool:
        seen.append(row["epoch"])
        row["note"] = row["epoch"] * 10  # what the callback adds stays in the history
        return row["epoch"] == 3

    trainer = Trainer(planted_graph, cfg)
    result = trainer.fit(on_epoch=on_epoch)
    assert seen == [1, 2, 3] and trainer.epoch == 3
    assert [r["note"] for r in result.history] == [10, 20, 30]
    assert result.best_epoch is None and result.test == {}
    # The result is the model as the callback left it (epoch 3), not a restored one.
    eu, ei, _ = trainer.embeddings()
    assert torch.equal(result.user_emb, eu.float().cpu())
    assert torch.equal(result.item_emb, ei.float().cpu())


def test_propagate_is_embeddings_before_cold_placement(planted_graph_text) -> None:
    cfg = TrainConfig(epochs=1, batch_size=64, dim=8, layers=2, device="cpu", eval_every=0)
    trainer = Trainer(planted_graph_text, cfg)
    trainer.train_epoch()
    eu, ei = trainer.propagate()
    pu, pi, text_map = trainer.embeddings()
    warm = trainer.warm
    assert torch.equal(eu, pu) and torch.equal(ei[warm], pi[warm])
    assert text_map is not None and (~warm).any()
    assert torch.allclose(pi[~warm], trainer.text_emb[~warm] @ text_map)
    assert not torch.allclose(ei[~warm], pi[~warm])


def test_softmax_loss_recovers_planted_communities(planted_graph, planted) -> None:
    cfg = TrainConfig(epochs=8, batch_size=64, lr=0.05, dim=16, layers=2, item_init="id",
                      loss="softmax", temperature=0.5, neg_candidates=4, device="cpu",
                      eval_every=0, seed=0)
    result = train_model(planted_graph, cfg)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert community_share(planted_graph, planted, result.user_emb, result.item_emb) >= 0.8


def test_id_dropout_leaves_the_dropped_items_to_their_text(planted_graph_text) -> None:
    cfg = TrainConfig(epochs=1, batch_size=200, lr=0.05, dim=16, layers=2, device="cpu",
                      eval_every=0, seed=0, item_init="text+id", id_dropout=0.5)
    t = Trainer(planted_graph_text, cfg)
    users, pos, neg = next(t.sampler.epoch(200, torch.Generator().manual_seed(1), 4))
    state = t.generator.get_state()
    t.optimizer.step = lambda: None  # keep the gradients
    t.train_step(users, pos, neg)
    keep = torch.rand(planted_graph_text.num_items,
                      generator=torch.Generator().set_state(state)) >= 0.5
    keep |= t.textless  # nothing else to stand for an item without text
    grad = t.model.item_emb.weight.grad
    assert 0 < int(keep.sum()) < len(keep)
    # A dropped item's ID embedding took no part in the step; the kept ones and the text
    # projection learn.
    assert float(grad[~keep].abs().max()) == 0.0 and float(grad[keep].abs().max()) > 0
    assert float(t.model.text_proj.weight.grad.abs().max()) > 0
    # An item whose text is empty keeps its ID embedding at every step.
    emb = planted_graph_text.text_emb.copy()
    emb[:3] = 0.0
    blank = Trainer(replace(planted_graph_text, text_emb=emb), cfg)
    assert blank.textless[:3].all() and not blank.textless[3:].any()
    with pytest.raises(ConfigError, match="id_dropout"):
        Trainer(planted_graph_text, TrainConfig(**{**cfg.__dict__, "item_init": "text"}))
    with pytest.raises(ConfigError, match="id_dropout"):
        TrainConfig(id_dropout=1.0).validate(True)
