"""graphrec.model, graphrec.train.sampling and graphrec.train: equivalence with PyG's LightGCN,
gradients of the custom propagation, the BPR sampler's guarantees and distributions, and a
planted community structure the trained model must recover."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.nn.models import LightGCN

from graphrec.data.build import BuildConfig, build_graph
from graphrec.data import TRAIN
from graphrec.errors import ConfigError
from graphrec.graph import (
    Adjacency,
    NodeOrder,
    edge_index,
    normalized_bipartite,
    ordered_adjacency,
    propagation_adjacency,
)
from graphrec.model import (
    TextLightGCN,
    bpr_loss,
    lightgcn_batch,
    lightgcn_propagate,
    spmm,
)
from graphrec.train.sampling import BPRSampler, alias_table, hardest
from graphrec.artifacts.graph_dir import GraphData
from graphrec.model.coldstart import fit_text_map, text_map_for
from graphrec.train import TrainConfig, Trainer, resolved_batch_size, resolved_lr
from graphrec.pipeline import train_model
from graphrec.train.config import BATCH_ROWS_BELOW


def random_graph(seed: int, num_users: int = 15, num_items: int = 11, n: int = 50):
    """Distinct random (user, item) pairs as int64 arrays; some nodes may be isolated."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(num_users * num_items, size=n, replace=False)
    return keys // num_items, keys % num_items, num_users, num_items


def dense_adjacency(users, items, num_users, num_items) -> torch.Tensor:
    """D^-1/2 A D^-1/2, [N, N] float64, users first; isolated nodes have zero rows."""
    n = num_users + num_items
    a = torch.zeros(n, n, dtype=torch.float64)
    a[users, num_users + items] = 1.0
    a[num_users + items, users] = 1.0
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.clamp(min=1).rsqrt(), torch.zeros_like(deg))
    return inv[:, None] * a * inv[None, :]


def dense_lightgcn(xu, xi, users, items, layers):
    """The straightforward version: float64 leaf copies of xu, xi and mean_k A^k [x_u; x_i]
    with a dense adjacency, by plain autograd."""
    xu_ref = xu.detach().double().requires_grad_()
    xi_ref = xi.detach().double().requires_grad_()
    a = dense_adjacency(users, items, len(xu), len(xi))
    layer = total = torch.cat([xu_ref, xi_ref])
    for _ in range(layers):
        layer = a @ layer
        total = total + layer
    return xu_ref, xi_ref, total / (layers + 1)


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize(("seed", "layers"), [(0, 3), (1, 1), (2, 2), (3, 4)])
def test_id_model_equals_pyg_lightgcn(seed: int, layers: int) -> None:
    users, items, nu, ni = random_graph(seed)
    gen = torch.Generator().manual_seed(seed)
    ours = TextLightGCN(nu, ni, dim=8, num_layers=layers, item_init="id", generator=gen)
    pyg = LightGCN(nu + ni, embedding_dim=8, num_layers=layers)
    with torch.no_grad():
        pyg.embedding.weight.copy_(torch.cat([ours.user_emb.weight, ours.item_emb.weight]))
    eu, ei, xu0, xi0 = ours(Adjacency(*normalized_bipartite(users, items, nu, ni)))
    expected = pyg.get_embedding(edge_index(users, items, nu))
    torch.testing.assert_close(torch.cat([eu, ei]), expected, atol=1e-5, rtol=0)
    assert xu0 is ours.user_emb.weight and xi0 is ours.item_emb.weight
    # Gradients agree too (through our custom backward and PyG's autograd).
    w = torch.randn(nu + ni, 8, generator=gen)
    (torch.cat([eu, ei]) * w).sum().backward()
    (expected * w).sum().backward()
    torch.testing.assert_close(torch.cat([ours.user_emb.weight.grad, ours.item_emb.weight.grad]),
                               pyg.embedding.weight.grad, atol=1e-5, rtol=0)
    # Scores are dot products of the final embeddings, as PyG's forward computes them.
    pairs = edge_index(users, items, nu)[:, : len(users)]
    ours_scores = (eu[pairs[0]] * ei[pairs[1] - nu]).sum(-1)
    torch.testing.assert_close(ours_scores, pyg(edge_index(users, items, nu), pairs),
                               atol=1e-5, rtol=0)


def with_index_dtype(m: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The CSR matrix ``m`` with its row pointers and column indices as ``dtype``."""
    return torch.sparse_csr_tensor(m.crow_indices().to(dtype), m.col_indices().to(dtype),
                                   m.values(), size=m.shape, check_invariants=True)


def shuffled_adjacency(users, items, nu, ni, sides: str, seed: int) -> Adjacency:
    """Blocks with the nodes of ``sides`` ("users", "items", "both"; "none": every node at
    its own index) at random positions, as the trainer's thread-balanced order puts them."""
    rng = np.random.default_rng(seed)
    return ordered_adjacency(users, items, nu, ni, NodeOrder.of(
        rng.permutation(nu) if sides in ("users", "both") else None,
        rng.permutation(ni) if sides in ("items", "both") else None))


SIDES = ["none", "users", "items", "both"]


@pytest.mark.parametrize("sides", SIDES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize(("seed", "layers"), [(0, 1), (1, 2), (2, 3), (3, 5)])
def test_propagation_gradients_match_dense_autograd(seed: int, layers: int,
                                                    index_dtype: torch.dtype,
                                                    sides: str) -> None:
    """Whole-graph propagation and its custom backward against dense autograd, with the
    32-bit CSR indices small graphs get and the 64-bit ones of graphs past 2^31 entries, and
    with nodes of ``sides`` at other positions of the blocks (output in node order)."""
    users, items, nu, ni = random_graph(seed, n=40 + 5 * seed)
    gen = torch.Generator().manual_seed(seed)
    xu = torch.randn(nu, 6, generator=gen, requires_grad=True)
    xi = torch.randn(ni, 6, generator=gen, requires_grad=True)
    wu, wi = torch.randn(nu, 6, generator=gen), torch.randn(ni, 6, generator=gen)
    adj = shuffled_adjacency(users, items, nu, ni, sides, seed)
    r, rt = (with_index_dtype(m, index_dtype) for m in (adj.r, adj.rt))
    assert r.col_indices().dtype == index_dtype
    eu, ei = lightgcn_propagate(xu, xi, r, rt, layers, adj.order)
    ((eu * wu).sum() + (ei * wi).sum()).backward()

    xu_ref, xi_ref, ref = dense_lightgcn(xu, xi, users, items, layers)
    (ref * torch.cat([wu, wi]).double()).sum().backward()

    torch.testing.assert_close(torch.cat([eu, ei]).double(), ref.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(xu.grad.double(), xu_ref.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(xi.grad.double(), xi_ref.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", range(3))
def test_bfloat16_products_stay_within_their_rounding_of_dense_autograd(seed: int) -> None:
    """precision bfloat16: blocks and gathered rows in bfloat16, sums and outputs float32;
    values and gradients within bfloat16's rounding (2^-8 relative per layer) of the float64
    reference, on both propagations, and not equal to the float32 products (the path runs)."""
    users, items, nu, ni = random_graph(seed, n=40 + 5 * seed)
    adj = propagation_adjacency(users, items, nu, ni, dtype=torch.bfloat16)
    assert adj.r.values().dtype == adj.rt.values().dtype == torch.bfloat16
    assert spmm(adj.r, torch.randn(ni, 6)).dtype == torch.bfloat16  # bfloat16 rows gathered
    gen = torch.Generator().manual_seed(seed)
    xu = torch.randn(nu, 6, generator=gen, requires_grad=True)
    xi = torch.randn(ni, 6, generator=gen, requires_grad=True)
    wu, wi = torch.randn(nu, 6, generator=gen), torch.randn(ni, 6, generator=gen)
    eu, ei = lightgcn_propagate(xu, xi, adj.r, adj.rt, 3, adj.order)
    assert eu.dtype == ei.dtype == torch.float32
    ((eu * wu).sum() + (ei * wi).sum()).backward()
    xu_ref, xi_ref, ref = dense_lightgcn(xu, xi, users, items, 3)
    (ref * torch.cat([wu, wi]).double()).sum().backward()
    got = torch.cat([eu, ei]).detach().double()
    torch.testing.assert_close(got, ref.detach(), atol=2e-2, rtol=2e-2)
    assert (got - ref.detach()).abs().max() > 1e-5  # rounded: really bfloat16
    torch.testing.assert_close(xu.grad.double(), xu_ref.grad, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(xi.grad.double(), xi_ref.grad, atol=2e-2, rtol=2e-2)
    bu, bi = torch.arange(0, nu, 2), torch.arange(1, ni, 2)
    su, si, _, _ = lightgcn_batch(xu, xi, adj.r, adj.rt, bu, bi, 3, adj.order)
    assert su.dtype == torch.float32
    torch.testing.assert_close(su.detach().double(), ref[:nu][bu].detach(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(si.detach().double(), ref[nu:][bi].detach(), atol=2e-2, rtol=2e-2)


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


@pytest.mark.parametrize("sides", SIDES)
@pytest.mark.parametrize(("seed", "layers"), [(0, 1), (1, 2), (2, 3), (3, 5)])
def test_batch_propagation_matches_dense_autograd(seed: int, layers: int, sides: str) -> None:
    """The training step's batch-rows propagation: same rows and same gradients as the
    straightforward dense autograd version, for a batch with and without repeated rows, and
    with nodes of ``sides`` at other positions of the blocks."""
    users, items, nu, ni = random_graph(seed, n=40 + 5 * seed)
    gen = torch.Generator().manual_seed(seed)
    xu = torch.randn(nu, 6, generator=gen, requires_grad=True)
    xi = torch.randn(ni, 6, generator=gen, requires_grad=True)
    bu = torch.randperm(nu, generator=gen)[: max(1, nu // 3)]
    bi = torch.randint(ni, (max(1, ni // 2),), generator=gen)  # repeats allowed
    wu, wi = torch.randn(len(bu), 6, generator=gen), torch.randn(len(bi), 6, generator=gen)
    adj = shuffled_adjacency(users, items, nu, ni, sides, seed)
    eu, ei, xu_b, xi_b = lightgcn_batch(xu, xi, adj.r, adj.rt, bu, bi, layers, adj.order)
    # The layer-0 rows carry their own (unpropagated) gradient, as the L2 term does.
    ((eu * wu).sum() + (ei * wi).sum() + xu_b.square().sum() + 2 * xi_b.sum()).backward()
    torch.testing.assert_close(xu_b, xu[bu])
    torch.testing.assert_close(xi_b, xi[bi])

    xu_ref, xi_ref, ref = dense_lightgcn(xu, xi, users, items, layers)
    ref_u, ref_i = ref[:nu][bu], ref[nu:][bi]
    ((ref_u * wu.double()).sum() + (ref_i * wi.double()).sum()
     + xu_ref[bu].square().sum() + 2 * xi_ref[bi].sum()).backward()

    torch.testing.assert_close(eu.double(), ref_u.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(ei.double(), ref_i.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(xu.grad.double(), xu_ref.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(xi.grad.double(), xi_ref.grad, atol=1e-5, rtol=0)


def test_propagation_without_edges_keeps_only_layer_zero() -> None:
    """No edges: every propagated layer is zero, so the layer mean is x / (K + 1), and the
    gradient is the same scaling."""
    r, rt = normalized_bipartite(np.array([], dtype=np.int64), np.array([], dtype=np.int64),
                                 4, 3)
    xu = torch.randn(4, 5, requires_grad=True)
    xi = torch.randn(3, 5, requires_grad=True)
    eu, ei = lightgcn_propagate(xu, xi, r, rt, 2)
    (eu.sum() + ei.sum()).backward()
    torch.testing.assert_close(eu, xu.detach() / 3)
    torch.testing.assert_close(ei, xi.detach() / 3)
    torch.testing.assert_close(xu.grad, torch.full((4, 5), 1 / 3))
    torch.testing.assert_close(xi.grad, torch.full((3, 5), 1 / 3))


def test_propagation_in_float64_from_strided_inputs() -> None:
    """float64 inputs (the float32 CSR values are cast to them) and inputs that are views
    with strides, not contiguous tables: the same as the dense float64 reference."""
    users, items, nu, ni = random_graph(4)
    r, rt = normalized_bipartite(users, items, nu, ni)
    gen = torch.Generator().manual_seed(4)
    xu = torch.randn(5, nu, dtype=torch.float64, generator=gen).t()
    xi = torch.randn(5, ni, dtype=torch.float64, generator=gen).t()
    assert not xu.is_contiguous()
    eu, ei = lightgcn_propagate(xu, xi, r, rt, 3)
    assert eu.dtype == ei.dtype == torch.float64
    _, _, ref = dense_lightgcn(xu, xi, users, items, 3)
    torch.testing.assert_close(torch.cat([eu, ei]), ref.detach(), atol=1e-6, rtol=0)


def test_zero_layers_is_identity() -> None:
    users, items, nu, ni = random_graph(0)
    r, rt = normalized_bipartite(users, items, nu, ni)
    xu, xi = torch.randn(nu, 4), torch.randn(ni, 4)
    eu, ei = lightgcn_propagate(xu, xi, r, rt, 0)
    assert eu is xu and ei is xi


def test_text_item_init() -> None:
    text = torch.nn.functional.normalize(torch.randn(5, 7), dim=1)
    gen = torch.Generator().manual_seed(0)
    model = TextLightGCN(3, 5, dim=4, num_layers=1, text_emb=text, item_init="text", generator=gen)
    assert model.item_emb is None
    torch.testing.assert_close(model.item_layer0(), text @ model.text_proj.weight.T)
    both = TextLightGCN(3, 5, dim=4, num_layers=1, text_emb=text, item_init="text+id")
    torch.testing.assert_close(both.item_layer0(),
                               text @ both.text_proj.weight.T + both.item_emb.weight)
    assert "text_emb" not in both.state_dict()  # a buffer rebuilt from the graph, not saved


def test_model_argument_errors() -> None:
    with pytest.raises(ValueError, match="item_init"):
        TextLightGCN(2, 2, item_init="words")
    with pytest.raises(ValueError, match="needs text"):
        TextLightGCN(2, 2, item_init="text")


def test_bpr_loss_known_answer() -> None:
    eu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    ei = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    users, pos, neg = torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1, 2])
    # s_pos = (1, 2), s_neg = (0, 2): softplus(-1) and softplus(0).
    bpr = (math.log1p(math.exp(-1.0)) + math.log(2.0)) / 2
    # |x_u|^2 = 1 + 4, |x_p|^2 = 1 + 1, |x_n|^2 = 1 + 2 -> 10; reg 0.1 -> 0.1 * 10 / (2 * 2)
    loss, bpr_part = bpr_loss(eu, ei, eu, ei, users, pos, neg, reg=0.1)
    assert bpr_part.item() == pytest.approx(bpr)
    assert loss.item() == pytest.approx(bpr + 0.25)
    assert not bpr_part.requires_grad


def test_bpr_loss_l2_counts_repeated_rows() -> None:
    # The L2 term weights each row by how often the batch names it: equal to the per-triple
    # sum of squares, rows repeated across users, positives and negatives included.
    gen = torch.Generator().manual_seed(0)
    eu, ei = torch.randn(4, 3, generator=gen), torch.randn(5, 3, generator=gen)
    xu0, xi0 = torch.randn(4, 3, generator=gen), torch.randn(5, 3, generator=gen)
    users, pos, neg = torch.tensor([0, 0, 2, 3, 0]), torch.tensor([1, 1, 4, 0, 2]), \
        torch.tensor([4, 1, 1, 3, 3])
    loss, bpr = bpr_loss(eu, ei, xu0, xi0, users, pos, neg, reg=0.3)
    l2 = (xu0[users].square().sum() + xi0[pos].square().sum() + xi0[neg].square().sum())
    assert loss.item() == pytest.approx((bpr + 0.3 * l2 / 10).item(), rel=1e-6)
    assert (loss - bpr).item() == pytest.approx((0.3 * l2 / 10).item(), rel=1e-6)


def test_batch_rule_keeps_steps_per_epoch_constant() -> None:
    # About 25 steps per epoch at every size (no cap below 2^21), so an epoch's work grows
    # linearly with the interactions; the learning rate stops growing at 32768.
    for n in (810_128, 2_000_000, 10_000_000, 40_000_000):
        steps = -(-n // resolved_batch_size(n))
        assert 17 <= steps <= 36, (n, steps)
    assert resolved_batch_size(10) == 1024 and resolved_batch_size(10**10) == 2**21
    assert resolved_lr(2048) == 0.005 and resolved_lr(32768) == 0.02
    assert resolved_lr(524288) == resolved_lr(32768)


# ----------------------------------------------------------------------------- sampler


def sampler_graph(seed: int, num_users: int = 40, num_items: int = 60):
    """Users with 1..30 of the first 50 items; items 50..59 never interacted with (cold)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(num_users):
        n = int(rng.integers(1, 31))
        users.append(np.full(n, u))
        items.append(rng.choice(50, size=n, replace=False))
    return (torch.as_tensor(np.concatenate(users)), torch.as_tensor(np.concatenate(items)),
            num_items)


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
@pytest.mark.parametrize("seed", [0, 1])
def test_negatives_are_never_positives_and_always_warm(negatives: str, seed: int) -> None:
    users, items, ni = sampler_graph(seed)
    sampler = BPRSampler(users, items, ni, negatives, alpha=0.75)
    positives = set(zip(users.tolist(), items.tolist(), strict=True))
    gen = torch.Generator().manual_seed(seed)
    seen_users, seen_neg = [], []
    for _ in range(20):
        for u, p, n in sampler.epoch(64, gen):
            assert u.dtype == p.dtype == n.dtype == torch.long
            seen_users.append(u)
            seen_neg.append(n)
            assert all((uu, pp) in positives for uu, pp in zip(u.tolist(), p.tolist(),
                                                                strict=True))
    u, n = torch.cat(seen_users), torch.cat(seen_neg)
    assert not any((uu, nn) in positives for uu, nn in zip(u.tolist(), n.tolist(), strict=True))
    assert (n < 50).all()  # items 50..59 have no training interaction
    assert not sampler.is_positive(u, n).any()


def test_dense_user_never_gets_a_positive_negative() -> None:
    # User 0 holds 45 of the 50 warm items: 51 draws all colliding is likely over 20k rows.
    users = torch.tensor([0] * 45 + [1] * 50)
    items = torch.tensor(list(range(45)) + list(range(50)))
    sampler = BPRSampler(users, items, 50, "uniform")
    neg = sampler.negatives(torch.zeros(20_000, dtype=torch.long),
                            torch.Generator().manual_seed(0))
    assert (neg >= 45).all()


def test_epoch_covers_every_interaction_once() -> None:
    users, items, ni = sampler_graph(3)
    sampler = BPRSampler(users, items, ni)
    batches = list(sampler.epoch(37, torch.Generator().manual_seed(0)))
    assert len(batches) == sampler.num_batches(37) == math.ceil(len(users) / 37)
    got = sorted(zip(torch.cat([b[0] for b in batches]).tolist(),
                     torch.cat([b[1] for b in batches]).tolist(), strict=True))
    assert got == sorted(zip(users.tolist(), items.tolist(), strict=True))


def test_sampler_is_reproducible() -> None:
    users, items, ni = sampler_graph(0)
    sampler = BPRSampler(users, items, ni, "popularity")
    a = [b[2] for b in sampler.epoch(50, torch.Generator().manual_seed(7))]
    b = [b[2] for b in sampler.epoch(50, torch.Generator().manual_seed(7))]
    c = [b[2] for b in sampler.epoch(50, torch.Generator().manual_seed(8))]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("draw_chunk", [2**24, 100])  # one redraw loop, or several
@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_negative_candidates_are_independent_draws_and_never_positives(
        negatives: str, draw_chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("graphrec.train.sampling.DRAW_CHUNK", draw_chunk)
    users, items, ni = sampler_graph(2)
    sampler = BPRSampler(users, items, ni, negatives)
    positives = set(zip(users.tolist(), items.tolist(), strict=True))
    batches = list(sampler.epoch(64, torch.Generator().manual_seed(0), candidates=3))
    u = torch.cat([b[0] for b in batches])
    n = torch.cat([b[2] for b in batches])
    assert n.shape == (len(users), 3) and n.dtype == torch.long
    assert not any((uu, nn) in positives for uu, col in zip(u.tolist(), n.tolist(), strict=True)
                   for nn in col)
    assert (n < 50).all()
    # Three separate draws: the columns differ.
    assert (n[:, 0] != n[:, 1]).float().mean() > 0.9
    assert (n[:, 1] != n[:, 2]).float().mean() > 0.9
    # Every interaction once, as in a single-candidate epoch.
    pairs = zip(u.tolist(), torch.cat([b[1] for b in batches]).tolist(), strict=True)
    assert sorted(pairs) == sorted(positives)


@pytest.mark.parametrize("chunk", [8192, 7])  # one block, or several and a short last one
def test_hardest_picks_each_users_highest_scoring_candidate(chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    user_rows = torch.randn(50, 8, generator=gen)
    item_emb = torch.randn(30, 8, generator=gen)
    candidates = torch.randint(30, (50, 5), generator=gen)
    pick = hardest(user_rows, torch.arange(50), item_emb, candidates, chunk=chunk)
    assert pick.shape == (50,) and pick.dtype == torch.long
    for b in range(50):
        scores = [float(user_rows[b] @ item_emb[c]) for c in candidates[b].tolist()]
        assert int(pick[b]) == int(np.argmax(scores))


def draw_frequencies(negatives: str, alpha: float, n: int = 200_000):
    """Negative frequencies for a user whose only positive is item 0, and the degrees."""
    rng = np.random.default_rng(0)
    num_items = 40
    degree = np.concatenate([[3], rng.integers(1, 60, num_items - 5), [0, 0, 0, 0]])
    items = np.repeat(np.arange(num_items), degree)
    users = np.arange(len(items)) + 1  # every interaction its own user...
    users[0] = 0  # ...except user 0, who holds item 0
    sampler = BPRSampler(torch.as_tensor(users), torch.as_tensor(items), num_items, negatives,
                         alpha)
    neg = sampler.negatives(torch.zeros(n, dtype=torch.long), torch.Generator().manual_seed(1))
    return np.bincount(neg.numpy(), minlength=num_items) / n, degree


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_popularity_negatives_follow_degree_power(alpha: float) -> None:
    freq, degree = draw_frequencies("popularity", alpha)
    p = np.where(degree > 0, (degree + 1.0) ** alpha, 0.0)
    p[0] = 0.0  # the user's own positive is redrawn
    p /= p.sum()
    assert freq[0] == 0 and (freq[degree == 0] == 0).all()
    # Within 4.5 standard errors of a multinomial frequency, item by item.
    tolerance = 4.5 * np.sqrt(p * (1 - p) / 200_000) + 1e-4
    assert (np.abs(freq - p) <= tolerance).all(), np.abs(freq - p).max()


def test_uniform_negatives_are_uniform_over_warm_items() -> None:
    freq, degree = draw_frequencies("uniform", 0.5)
    allowed = degree > 0
    allowed[0] = False
    p = allowed / allowed.sum()
    assert freq[0] == 0 and (freq[degree == 0] == 0).all()
    assert np.abs(freq - p).max() <= 4.5 * np.sqrt(p.max() * (1 - p.max()) / 200_000)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alias_table_reproduces_the_probabilities_exactly(seed: int) -> None:
    # What each column gives to each item, summed: the table's distribution, no sampling.
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(200, generator=gen) ** 4  # skewed, a few items dominate
    probs[torch.randperm(200, generator=gen)[:30]] = 0.0  # items that must never be drawn
    probs /= probs.sum()
    accept, alias = alias_table(probs)
    implied = accept.double().clone()
    implied.index_add_(0, alias, 1.0 - accept.double())
    implied /= len(probs)
    assert torch.allclose(implied, probs.double(), atol=1e-6)
    assert (implied[probs == 0] == 0).all()


def test_alias_table_of_a_single_item_and_of_uniform_probabilities() -> None:
    accept, alias = alias_table(torch.tensor([0.0, 1.0, 0.0]))
    assert accept.tolist() == [0.0, 1.0, 0.0] and alias.tolist() == [1, 1, 1]
    accept, alias = alias_table(torch.full((7,), 1 / 7))
    assert torch.allclose(accept, torch.ones(7)) and alias.tolist() == list(range(7))


@pytest.mark.parametrize("use_filter", [True, False])
def test_membership_test_is_exact_for_every_pair(use_filter: bool) -> None:
    users, items, ni = sampler_graph(4)
    sampler = BPRSampler(users, items, ni)
    if not use_filter:
        sampler.filter = None  # the plain binary search, as for ids beyond 2^30
    else:
        # The pre-filter is not trivial: it stops most non-interactions, passes all positives.
        assert sampler.passes_filter(users, items).all()
    every_u, every_i = torch.meshgrid(torch.arange(int(users.max()) + 1), torch.arange(ni),
                                      indexing="ij")
    every_u, every_i = every_u.flatten(), every_i.flatten()
    got = sampler.is_positive(every_u, every_i)
    positives = set(zip(users.tolist(), items.tolist(), strict=True))
    want = [(u, i) in positives for u, i in zip(every_u.tolist(), every_i.tolist(), strict=True)]
    assert got.tolist() == want
    if use_filter:
        assert sampler.passes_filter(every_u, every_i)[~got].float().mean() < 0.5


def test_sampler_rejects_unknown_negatives() -> None:
    with pytest.raises(ValueError, match="negatives"):
        BPRSampler(torch.tensor([0]), torch.tensor([0]), 1, "hard")


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def planted_graph(planted, tmp_path_factory: pytest.TempPathFactory):
    cfg = BuildConfig(interactions=str(planted.interactions), no_text=True, test_ratio=0.2,
                      valid_ratio=0.0, seed=0)
    return build_graph(cfg, tmp_path_factory.mktemp("planted-graph") / "graph")


@pytest.fixture(scope="module")
def planted_graph_text(planted, tiny_bert: str, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("planted-graph-text")
    cfg = BuildConfig(interactions=str(planted.interactions), items=str(planted.items),
                      text_model=tiny_bert, cold_items=0.2, test_ratio=0.2, valid_ratio=0.1,
                      seed=0, cache_dir=str(folder / "cache"))
    return build_graph(cfg, folder / "graph")


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


@pytest.mark.parametrize("item_init,candidates", [("id", 1), ("text", 1), ("id", 4)])
def test_all_rows_step_equals_batch_rows_step(planted_graph_text, item_init: str,
                                              candidates: int) -> None:
    """The CUDA step (every row, no torch.unique) and the CPU step (the batch's rows only)
    give the same loss and the same parameter gradients, repeated rows included, with one
    negative per triple or the hardest of several."""
    cfg = TrainConfig(epochs=1, batch_size=96, lr=0.05, dim=16, layers=3, device="cpu",
                      eval_every=0, seed=0, item_init=item_init, neg_candidates=candidates)
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


def test_checkpoint_without_neg_candidates_resumes_as_single_negatives(planted_graph) -> None:
    cfg = TrainConfig(epochs=2, batch_size=64, dim=8, layers=1, device="cpu", eval_every=0,
                      neg_candidates=1)
    state = Trainer(planted_graph, cfg).state()
    del state["config"]["neg_candidates"]  # a checkpoint written before the setting existed
    Trainer(planted_graph, cfg).load_state(state)
    with pytest.raises(ConfigError, match="neg_candidates=1"):
        Trainer(planted_graph, replace(cfg, neg_candidates=4)).load_state(state)


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
    assert "cold_recall@20" in result.test
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


def test_layer0_cold_start_needs_text_items(planted_graph_text) -> None:
    with pytest.raises(ConfigError, match="cold_start 'layer0': needs item_init text"):
        Trainer(planted_graph_text, TrainConfig(item_init="text+id", cold_start="layer0"))
    with pytest.raises(ConfigError, match="cold_start 'x'"):
        Trainer(planted_graph_text, TrainConfig(cold_start="x"))


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


def test_auto_schedule_follows_the_run_length(planted_graph, planted_graph_text) -> None:
    # No validation split (or --eval-every 0): a fixed-length run, decayed to its end.
    assert TrainConfig().resolve(planted_graph).lr_schedule == "cosine"
    assert TrainConfig(eval_every=0).resolve(planted_graph_text).lr_schedule == "cosine"
    # Early stopping decides the length: constant.
    assert TrainConfig().resolve(planted_graph_text).lr_schedule == "constant"
    assert TrainConfig(lr_schedule="constant").resolve(planted_graph).lr_schedule == "constant"
    assert TrainConfig(lr_schedule="cosine").resolve(planted_graph_text).lr_schedule == "cosine"


def test_auto_negatives_follow_the_item_representation(planted_graph, planted_graph_text) -> None:
    assert TrainConfig().resolve(planted_graph).negatives == "uniform"  # no text: id items
    assert TrainConfig().resolve(planted_graph_text).negatives == "popularity"
    assert TrainConfig(item_init="id").resolve(planted_graph_text).negatives == "uniform"
    assert TrainConfig(negatives="popularity").resolve(planted_graph).negatives == "popularity"
