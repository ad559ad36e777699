"""graphrec.model.lightgcn: equivalence with PyG's LightGCN, gradients of the custom
whole-graph and batch-rows propagation against dense autograd (float32, float64, bfloat16),
and TextLightGCN's item initialisations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.nn.models import LightGCN

from graphrec.graph import (
    Adjacency,
    NodeOrder,
    edge_index,
    normalized_bipartite,
    ordered_adjacency,
    propagation_adjacency,
)
from graphrec.model import TextLightGCN, lightgcn_batch, lightgcn_propagate, spmm
from tests.helpers import dense_adjacency, random_graph


def dense_lightgcn(xu, xi, users, items, layers):
    """The straightforward version: float64 leaf copies of xu, xi and mean_k A^k [x_u; x_i]
    with a dense adjacency, by plain autograd."""
    xu_ref = xu.detach().double().requires_grad_()
    xi_ref = xi.detach().double().requires_grad_()
    a = torch.from_numpy(dense_adjacency(users, items, len(xu), len(xi)))
    layer = total = torch.cat([xu_ref, xi_ref])
    for _ in range(layers):
        layer = a @ layer
        total = total + layer
    return xu_ref, xi_ref, total / (layers + 1)


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
