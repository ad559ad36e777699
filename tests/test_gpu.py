"""CUDA checks: the same numbers on the GPU as on the CPU. Marked ``gpu`` (deselected by
default; ``pytest -m gpu`` on a machine with CUDA, see experiments/gpu_check.sh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphrec.data import TEST
from graphrec.eval.protocol import evaluate_ranking
from graphrec.graph import normalized_bipartite
from graphrec.model import lightgcn_batch, lightgcn_propagate
from graphrec.popularity import head_item_mask
from graphrec.train import TrainConfig, Trainer
from graphrec.train.sampling import BPRSampler
from tests.helpers import random_graph, sampler_graph

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("layers", [1, 3])
def test_propagation_and_gradients_match_cpu(layers: int) -> None:
    users, items, nu, ni = random_graph(0, num_users=300, num_items=200, n=3000)
    gen = torch.Generator().manual_seed(0)
    xu, xi = torch.randn(nu, 16, generator=gen), torch.randn(ni, 16, generator=gen)
    bu, bi = torch.arange(0, nu, 3), torch.arange(0, ni, 2)
    r, rt = normalized_bipartite(users, items, nu, ni)
    out = {}
    for dev in ("cpu", "cuda"):
        a = xu.to(dev).requires_grad_()
        b = xi.to(dev).requires_grad_()
        eu, ei = lightgcn_propagate(a, b, r.to(dev), rt.to(dev), layers)
        su, si, _, _ = lightgcn_batch(a, b, r.to(dev), rt.to(dev), bu.to(dev), bi.to(dev), layers)
        (eu.square().sum() + ei.sum() + su.sum() + si.square().sum()).backward()
        out[dev] = [t.detach().cpu() for t in (eu, ei, su, si, a.grad, b.grad)]
    for c, g in zip(out["cpu"], out["cuda"], strict=True):
        torch.testing.assert_close(g, c, atol=1e-5, rtol=1e-5)


def test_training_and_evaluation_on_cuda_match_cpu(planted_graph) -> None:
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, dim=16, layers=2, eval_every=0,
                      seed=0, negatives="uniform")
    cpu = Trainer(planted_graph, TrainConfig(**{**cfg.__dict__, "device": "cpu"}))
    gpu = Trainer(planted_graph, TrainConfig(**{**cfg.__dict__, "device": "cuda"}))
    assert gpu.adj.r.is_cuda and gpu.adj.order is None and next(gpu.model.parameters()).is_cuda
    row = gpu.train_epoch()
    assert np.isfinite(row["loss"])
    # Same model weights -> same evaluation on both devices (the factor path on CUDA).
    gpu.model.load_state_dict(cpu.model.state_dict())
    a, b = cpu.evaluate(TEST), gpu.evaluate(TEST)
    for key in ("recall@20", "ndcg@20", "coverage@20"):
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    eu, ei, _ = gpu.embeddings()
    seen, target = cpu.eval_sets[TEST]
    m = evaluate_ranking(lambda u: eu[u] @ ei.T, seen, target, planted_graph.num_items,
                         head_items=head_item_mask(planted_graph.train_item_degree()),
                         device="cuda")
    assert m["recall@20"] == pytest.approx(a["recall@20"], abs=1e-6)


@pytest.mark.parametrize("candidates", [1, 8])
def test_cuda_training_steps_never_wait_on_the_host(planted_graph,
                                                    candidates: int) -> None:
    """Inside an epoch (after its negatives are drawn) no step synchronises with the host:
    CUDA's sync debug mode turns any synchronising call into an error. With hard negatives
    the choice among the candidates stays on the device too."""
    for schedule in ("constant", "cosine"):
        trainer = Trainer(planted_graph, TrainConfig(
            epochs=2, batch_size=64, lr=0.05, dim=16, layers=3, eval_every=0, seed=0,
            device="cuda", negatives="popularity", lr_schedule=schedule,
            neg_candidates=candidates))
        assert not trainer.batch_rows
        batches = trainer.batches()
        first = next(batches)  # draws the epoch's negatives (a few syncs, once per epoch)
        torch.cuda.synchronize()
        total = torch.zeros((), device="cuda")
        torch.cuda.set_sync_debug_mode("error")
        try:
            for users, pos, neg in [first, *batches]:
                loss, _ = trainer.train_step(users, pos, neg)
                total += loss
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert np.isfinite(total.item())


def test_bfloat16_products_are_refused_on_cuda(planted_graph) -> None:
    from graphrec.errors import ConfigError

    with pytest.raises(ConfigError, match="precision 'bfloat16': for the CPU"):
        Trainer(planted_graph, TrainConfig(device="cuda", precision="bfloat16"))


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_sampler_on_cuda_draws_no_positives(negatives: str) -> None:
    """The alias table and the membership bitmap on the device: every pair classified as on
    the CPU, and an epoch's candidates never a user's positive."""
    users, items, ni = sampler_graph(0)
    cpu = BPRSampler(users, items, ni, negatives)
    gpu = BPRSampler(users, items, ni, negatives, device="cuda")
    every_u = torch.arange(int(users.max()) + 1).repeat_interleave(ni)
    every_i = torch.arange(ni).repeat(int(users.max()) + 1)
    assert torch.equal(gpu.is_positive(every_u.cuda(), every_i.cuda()).cpu(),
                       cpu.is_positive(every_u, every_i))
    if negatives == "popularity":
        torch.testing.assert_close(gpu.accept.cpu(), cpu.accept)
    positives = set(zip(users.tolist(), items.tolist(), strict=True))
    gen = torch.Generator(device="cuda").manual_seed(0)
    for u, _, n in gpu.epoch(64, gen, candidates=4):
        assert n.is_cuda and n.shape == (len(u), 4)
        assert not any((uu, nn) in positives for uu, row in zip(u.tolist(), n.tolist(),
                                                                 strict=True) for nn in row)


def test_serving_on_cuda_gives_the_cpu_lists(trained) -> None:
    from graphrec.serve.recommender import Recommender

    cpu = Recommender.load(trained / "model")
    gpu = Recommender.load(trained / "model", device="cuda", index="auto")
    assert gpu.index == "exact" and gpu.item_emb.is_cuda

    def same(a, b) -> None:
        assert [r.item for r in a] == [r.item for r in b]
        np.testing.assert_allclose([r.score for r in a], [r.score for r in b], atol=1e-4)

    users = [str(u) for u in cpu.user_ids]
    for got, want in zip(gpu.recommend_batch(users, 10), cpu.recommend_batch(users, 10),
                         strict=True):
        same(got, want)
    user, item = users[0], str(cpu.item_ids[0])
    for kw in ({}, {"diversity": 0.3}, {"tail_boost": 2.0}, {"include_seen": True}):
        same(gpu.recommend(user, 5, **kw), cpu.recommend(user, 5, **kw))
    same(gpu.recommend_new_user([item], 5), cpu.recommend_new_user([item], 5))
    same(gpu.similar_items(item, 5), cpu.similar_items(item, 5))
    with pytest.raises(Exception, match="index"):
        Recommender.load(trained / "model", device="cuda", index="ann")
