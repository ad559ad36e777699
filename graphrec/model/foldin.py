"""Fold-in: new interactions taken into a trained LightGCN without retraining.

LightGCN is linear. With K layers, h^(k+1)_u = sum_j Â_uj h^(k)_j (and the same for items)
and final = mean_{k=0..K} h^(k), so a node's final embedding follows exactly from its own
layer 0 and its neighbours' layers 0..K-1:

    final_u = (h^(0)_u + sum_j Â_uj (h^(0)_j + ... + h^(K-1)_j)) / (K + 1).

A model directory keeps every node's layers 0..K-1 (:func:`layer_tables`). Folding in
interactions recomputes the layers of the *touched* nodes only (users and items with new
edges, and new nodes) over the grown graph, reading every other node's stored layers as they
are (frozen): one sparse product per layer over the touched nodes' rows, nothing over the
whole graph. A node whose edges did not change, among neighbours that did not change,
gets exactly its stored embedding back.

A new node has no trained layer 0. It gets ``base + g W``: ``base`` is what the model knows
of it without training (a new item's text projection, zero for a user), ``g`` its graph part
(the sum of its layers 1..K, from its neighbours), and ``W`` [d, d] a ridge map fit on the
trained nodes, from their graph parts to their trained layer 0 less its base
(:func:`fit_self_map`): the self term a trained node with that neighbourhood has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from graphrec.graph import Adjacency
from graphrec.model.lightgcn import spmm


@torch.inference_mode()
def layer_tables(xu0: Tensor, xi0: Tensor, adj: Adjacency,
                 num_layers: int) -> tuple[Tensor, Tensor]:
    """Layers 0..K-1 of every node: ([K, U, d], [K, I, d]) float32 in node order, from the
    layer-0 tables xu0 [U, d] and xi0 [I, d] propagated over ``adj`` (K = ``num_layers``)."""
    order = adj.order
    hu, hi = (xu0, xi0) if order is None else order.to_positions(xu0, xi0)
    users, items = [], []
    for k in range(num_layers):
        if k:
            hu, hi = spmm(adj.r, hi), spmm(adj.rt, hu)
        nu, ni = (hu, hi) if order is None else order.to_nodes(hu, hi)
        users.append(nu.float())
        items.append(ni.float())
    return torch.stack(users), torch.stack(items)


def graph_part(final: Tensor, layer0: Tensor, num_layers: int) -> Tensor:
    """Sum of layers 1..K of nodes, (K + 1) final - layer 0: what their neighbours give."""
    return final * (num_layers + 1) - layer0


def fit_self_map(graph: Tensor, self_term: Tensor, ridge: float = 1.0) -> Tensor:
    """[d, d] ridge map W = argmin |G W - X|^2 + ridge |W|^2 from trained nodes' graph parts
    G [n, d] to their self terms X [n, d] (layer 0 less what is known without training)."""
    g, x = graph.double(), self_term.double()
    gram = g.T @ g + ridge * torch.eye(g.shape[1], dtype=g.dtype, device=g.device)
    return torch.linalg.solve(gram, g.T @ x).float()


@dataclass(frozen=True)
class Rows:
    """The full neighbour lists of touched nodes in CSR form: node ``nodes[r]`` has
    neighbours ``cols[indptr[r]:indptr[r + 1]]`` (int64 tensors; indices on the other side)."""

    nodes: Tensor
    indptr: Tensor
    cols: Tensor

    def __len__(self) -> int:
        return len(self.nodes)


def _frozen_or_new(stored: Tensor | np.ndarray, n_stored: int, cols: Tensor, new: Tensor,
                   position: Tensor) -> tuple[Tensor, Tensor]:
    """(table [m, d], inverse [nnz]): the rows of the distinct ``cols`` at one layer, each
    the recomputed one ``new[position[c]]`` where ``position[c]`` >= 0 (a touched node),
    else the stored one ``stored[c]`` (a frozen node, c < n_stored)."""
    uniq, inverse = torch.unique(cols, return_inverse=True)
    pos = position[uniq]
    table = new.new_zeros(len(uniq), new.shape[1])
    fresh = pos >= 0
    if fresh.any():
        table[fresh] = new[pos[fresh]]
    frozen = ~fresh
    if frozen.any():
        rows = uniq[frozen]
        if int(rows.max()) >= n_stored:
            raise ValueError("a node without stored layers is not among the touched nodes")
        idx = rows.numpy()
        table[frozen] = torch.as_tensor(np.asarray(stored[idx]), dtype=new.dtype)
    return table, inverse


def _aggregate(rows: Rows, table: Tensor, inverse: Tensor, weights: Tensor) -> Tensor:
    return nn.functional.embedding_bag(inverse, table, rows.indptr, mode="sum",
                                       per_sample_weights=weights, include_last_offset=True)


def _edge_weights(rows: Rows, own_degree: Tensor, other_degree: Tensor) -> Tensor:
    """1 / sqrt(d_node d_neighbour) of every entry of ``rows`` (LightGCN's normalisation)."""
    own = torch.repeat_interleave(own_degree[rows.nodes], torch.diff(rows.indptr))
    return (own * other_degree[rows.cols]).double().rsqrt().float()


@torch.inference_mode()
def fold_in(user_layers: np.ndarray, item_layers: np.ndarray, users: Rows, items: Rows,
            user_x0: Tensor, item_x0: Tensor, user_degree: Tensor,
            item_degree: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Recompute the touched nodes' layers and final embeddings over the grown graph.

    Args:
        user_layers, item_layers: [K, U0, d] / [K, I0, d] stored layers 0..K-1 of the nodes
            the model had (memory-mapped arrays are read only at the rows needed).
        users, items: touched users and items (indices in the grown numbering; new nodes
            have indices >= U0 / I0) with their full neighbour lists.
        user_x0, item_x0: [len(users), d] / [len(items), d] their layer 0.
        user_degree, item_degree: [U] / [I] training degree of every node of the grown graph.
    Returns:
        (user layers [K, m, d], user final [m, d], item layers [K, n, d], item final [n, d]).
    """
    num_layers = user_layers.shape[0]
    if num_layers == 0:
        raise ValueError("a model without propagation layers has nothing to fold in")
    n_users, n_items = len(user_degree), len(item_degree)
    upos = torch.full((n_users,), -1, dtype=torch.int64)
    upos[users.nodes] = torch.arange(len(users))
    ipos = torch.full((n_items,), -1, dtype=torch.int64)
    ipos[items.nodes] = torch.arange(len(items))
    wu = _edge_weights(users, user_degree, item_degree)
    wi = _edge_weights(items, item_degree, user_degree)
    hu, hi = user_x0.float(), item_x0.float()
    layers_u, layers_i = [hu], [hi]
    sum_u, sum_i = hu.clone(), hi.clone()
    u0, i0 = user_layers.shape[1], item_layers.shape[1]
    for k in range(num_layers):
        # Layer k + 1 of the touched nodes from layer k of their neighbours (Jacobi: both
        # sides from the same layer k).
        ti, inv_i = _frozen_or_new(item_layers[k], i0, users.cols, hi, ipos)
        tu, inv_u = _frozen_or_new(user_layers[k], u0, items.cols, hu, upos)
        hu = _aggregate(users, ti, inv_i, wu) if len(users) else hu
        hi = _aggregate(items, tu, inv_u, wi) if len(items) else hi
        sum_u += hu
        sum_i += hi
        if k + 1 < num_layers:
            layers_u.append(hu)
            layers_i.append(hi)
    scale = 1.0 / (num_layers + 1)
    return torch.stack(layers_u), sum_u * scale, torch.stack(layers_i), sum_i * scale


@torch.inference_mode()
def frozen_graph_part(item_layers: np.ndarray, users: Rows, user_degree: Tensor,
                      item_degree: Tensor, new_items: Tensor | None = None) -> Tensor:
    """[m, d] graph part (layers 1..K) of nodes over frozen neighbours: sum_j Â_uj (h^(0)_j
    + ... + h^(K-1)_j). Written for users (``users``: their rows, ``item_layers`` the other
    side's stored layers); the same for items with the sides swapped. Neighbours without
    stored layers (indices from I0 = item_layers.shape[1] on) count with their layer 0 only:
    ``new_items`` [n, d], row j for index I0 + j (None: zero)."""
    n_stored = item_layers.shape[1]
    uniq, inverse = torch.unique(users.cols, return_inverse=True)
    stored = uniq < n_stored
    table = torch.zeros(len(uniq), item_layers.shape[2])
    if stored.any():
        idx = uniq[stored].numpy()
        table[stored] = torch.as_tensor(np.asarray(item_layers[:, idx]).sum(0))
    if new_items is not None and not bool(stored.all()):
        table[~stored] = new_items[uniq[~stored] - n_stored]
    return _aggregate(users, table, inverse, _edge_weights(users, user_degree, item_degree))


@torch.inference_mode()
def foldin_arrays(xu0: Tensor, xi0: Tensor, adj: Adjacency, num_layers: int,
                  user_final: Tensor, item_final: Tensor, item_base: Tensor | None,
                  ridge: float = 1.0) -> dict[str, np.ndarray]:
    """What a model directory keeps so that interactions can be folded in later.

    xu0 [U, d], xi0 [I, d]: trained layer 0 (the caller zeroes what training never touched,
    e.g. the free embedding of an item without edges); ``user_final`` / ``item_final``: the
    propagated final embeddings; ``item_base`` [I, d]: the part of an item's layer 0 known
    without training (its text projection), None without text. Returns numpy arrays:
    ``user_layers`` [K, U, d], ``item_layers`` [K, I, d], ``user_self_map`` and
    ``item_self_map`` [d, d] (:func:`fit_self_map` over nodes with edges).
    """
    user_layers, item_layers = layer_tables(xu0, xi0, adj, num_layers)
    out = {"user_layers": user_layers.cpu().numpy(), "item_layers": item_layers.cpu().numpy()}
    du = torch.diff(adj.r.crow_indices()) > 0
    di = torch.diff(adj.rt.crow_indices()) > 0
    if adj.order is not None:  # rows of the blocks are positions; back to node order
        if adj.order.users is not None:
            du = du[adj.order.user_positions]
        if adj.order.items is not None:
            di = di[adj.order.item_positions]
    base = torch.zeros_like(xi0) if item_base is None else item_base
    for side, x0, final, warm, known in (("user", xu0, user_final, du, None),
                                         ("item", xi0, item_final, di, base)):
        warm = warm.to(x0.device)
        g = graph_part(final[warm].float(), x0[warm].float(), num_layers)
        target = x0[warm].float() - (0.0 if known is None else known[warm].float())
        out[f"{side}_self_map"] = fit_self_map(g, target, ridge).cpu().numpy()
    return out
