"""The bipartite user-item graph: node numbering, normalised adjacency, statistics, export.

Node numbering: users are nodes ``[0, U)``, items ``[U, U + I)``; :func:`item_node` is the only
place that applies the offset.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch

from graphrec.data.csr import Csr, indptr_from_rows


def item_node(item_idx: np.ndarray | torch.Tensor | int, num_users: int):
    """Graph node of an item index (items follow the ``num_users`` user nodes)."""
    return item_idx + num_users


def edge_index(users: np.ndarray, items: np.ndarray, num_users: int) -> torch.Tensor:
    """Both directions of every training interaction: [2, 2E] int64, user->item edges first."""
    u = torch.as_tensor(users, dtype=torch.long)
    i = item_node(torch.as_tensor(items, dtype=torch.long), num_users)
    return torch.stack([torch.cat([u, i]), torch.cat([i, u])])


def normalized_bipartite(users: np.ndarray, items: np.ndarray, num_users: int,
                         num_items: int, dtype: torch.dtype = torch.float32,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two off-diagonal blocks of the symmetric-normalised adjacency, as CSR tensors.

    With degrees d, entry (u, i) = 1 / sqrt(d_u d_i) (LightGCN eq. 3). Returns
    ``r`` [U, I] and ``rt`` = r.T [I, U], both sparse CSR with ``dtype`` values (weights
    computed in float64; bfloat16 values make the CPU products gather bfloat16 rows,
    model.spmm). Nodes without edges have empty rows. Duplicate (user, item) pairs must have
    been removed.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    du = np.bincount(users, minlength=num_users).astype(np.float64)
    di = np.bincount(items, minlength=num_items).astype(np.float64)
    w = 1.0 / np.sqrt(du[users] * di[items])
    r = csr_tensor(users, items, w, num_users, num_items, dtype)
    rt = csr_tensor(items, users, w, num_items, num_users, dtype)
    return r, rt


BALANCE_ABOVE = 1.4
"""Reorder a block's rows for the threads when the busiest thread's share of its nonzeros is
above this multiple of an even share (:func:`thread_balanced_order`). The order costs two
gathers of the node tables per propagation and direction; measured on 2 threads
(experiments/RESULTS.md), it paid with ids in popularity order (Gowalla 1.5-1.6, a 10M graph
1.7-1.8: steps 5-30% faster) and not with Gowalla's own ids (1.2: 10% slower)."""


@dataclass(frozen=True)
class NodeOrder:
    """Where propagation keeps each node. ``users[p]`` is the user at position p of the
    propagation's tables (rows of ``r``, columns of ``rt``) and ``user_positions`` its
    inverse; the same for items. None: the node's own index (no reordering on that side)."""

    users: torch.Tensor | None = None
    items: torch.Tensor | None = None
    user_positions: torch.Tensor | None = None
    item_positions: torch.Tensor | None = None

    @staticmethod
    def of(users: np.ndarray | None, items: np.ndarray | None) -> NodeOrder | None:
        """From position -> node arrays (None: own order); None when both are."""
        if users is None and items is None:
            return None

        def tensors(order):
            if order is None:
                return None, None
            positions = np.empty_like(order)
            positions[order] = np.arange(len(order))
            return torch.from_numpy(order), torch.from_numpy(positions)

        (u, up), (i, ip) = tensors(users), tensors(items)
        return NodeOrder(u, i, up, ip)

    def to(self, device: torch.device | str) -> NodeOrder:
        def move(t):
            return None if t is None else t.to(device)
        return NodeOrder(move(self.users), move(self.items), move(self.user_positions),
                         move(self.item_positions))

    def to_positions(self, xu: torch.Tensor,
                     xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables in node order ([U, d], [I, d]) gathered to the blocks' positions: a fresh
        tensor on a reordered side, the input itself on the other."""
        return _take(xu, self.users), _take(xi, self.items)

    def to_nodes(self, xu: torch.Tensor, xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables at the blocks' positions gathered back to node order."""
        return _take(xu, self.user_positions), _take(xi, self.item_positions)

    def positions_of(self, users: torch.Tensor,
                     items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the blocks keep the nodes ``users`` and ``items`` (int64 indices)."""
        return (users if self.user_positions is None else _take(self.user_positions, users),
                items if self.item_positions is None else _take(self.item_positions, items))


def _take(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """``x[rows]`` (x itself for None)."""
    return x if rows is None else x.index_select(0, rows)


@dataclass(frozen=True)
class Adjacency:
    """What propagation needs: the normalised blocks ``r`` [U, I] and ``rt`` [I, U] (CSR)
    with nodes at the positions of ``order`` (None: every node at its own index)."""

    r: torch.Tensor
    rt: torch.Tensor
    order: NodeOrder | None = None

    def to(self, device: torch.device | str) -> Adjacency:
        return Adjacency(self.r.to(device), self.rt.to(device),
                         None if self.order is None else self.order.to(device))


def chunk_imbalance(degrees: np.ndarray, threads: int) -> float:
    """The busiest thread's share of a block's nonzeros over an even share, when the rows
    (with these ``degrees``) are split among ``threads`` in contiguous ranges of equal row
    counts, as PyTorch's CPU ``parallel_for`` splits an embedding bag's bags."""
    total = int(degrees.sum())
    if threads <= 1 or total == 0:
        return 1.0
    chunk = -(-len(degrees) // threads)
    ends = np.cumsum(degrees)[np.minimum(np.arange(chunk, len(degrees) + chunk, chunk),
                                         len(degrees)) - 1]
    return float(np.diff(ends, prepend=0).max() * threads / total)


def thread_balanced_order(degrees: np.ndarray, threads: int) -> np.ndarray | None:
    """Row order (position -> row) under which ``threads`` threads share a block's nonzeros
    evenly, or None when the own order already does (imbalance <= BALANCE_ABOVE).

    The rows are dealt round-robin: thread k's range holds rows k, k + T, k + 2T, ... in
    their own order, a sample of every part of the order (ids sorted by popularity would
    otherwise give the first thread the popular rows), which keeps what locality the own
    order has within each thread. With degrees falling along the own order, the first
    thread's excess is at most the largest degree. A degree pattern with period T defeats
    the deal; then a seeded random order, when that balances better.
    """
    n = len(degrees)
    own = chunk_imbalance(degrees, threads)
    if threads <= 1 or n < 2 * threads or own <= BALANCE_ABOVE:
        return None
    dealt = np.concatenate([np.arange(k, n, threads) for k in range(threads)])
    shuffled = np.random.default_rng(0).permutation(n)
    scores = [chunk_imbalance(degrees[o], threads) for o in (dealt, shuffled)]
    best = int(np.argmin(scores))
    # A row with more than a thread's share (a tiny graph) can make every order uneven.
    return (dealt, shuffled)[best] if scores[best] < own else None


def propagation_adjacency(users: np.ndarray, items: np.ndarray, num_users: int,
                          num_items: int, threads: int = 1,
                          dtype: torch.dtype = torch.float32) -> Adjacency:
    """:func:`normalized_bipartite` with each side's nodes in :func:`thread_balanced_order`
    for ``threads`` CPU threads (1: own order, as for CUDA), values in ``dtype`` (bfloat16:
    the CPU products gather bfloat16 rows, model.spmm)."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    user_order = thread_balanced_order(np.bincount(users, minlength=num_users), threads)
    item_order = thread_balanced_order(np.bincount(items, minlength=num_items), threads)
    return ordered_adjacency(users, items, num_users, num_items,
                             NodeOrder.of(user_order, item_order), dtype)


def ordered_adjacency(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int,
                      order: NodeOrder | None,
                      dtype: torch.dtype = torch.float32) -> Adjacency:
    """:func:`normalized_bipartite` with every node at its position in ``order``."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if order is not None and order.user_positions is not None:
        users = order.user_positions.numpy()[users]
    if order is not None and order.item_positions is not None:
        items = order.item_positions.numpy()[items]
    return Adjacency(*normalized_bipartite(users, items, num_users, num_items, dtype), order)


def csr_tensor(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int,
         n_cols: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """CSR with ``dtype`` values and 32-bit indices whenever they fit: a product reads half
    the index bytes, and cuSPARSE (like MKL) would otherwise convert 64-bit indices to 32-bit
    copies on every call."""
    order = np.lexsort((cols, rows))
    fits = max(len(rows), n_rows, n_cols) < np.iinfo(np.int32).max
    index = np.int32 if fits else np.int64
    indptr = indptr_from_rows(rows, n_rows, index)
    with warnings.catch_warnings():
        # torch flags sparse CSR as beta on every construction; the layout is what we want.
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(indptr), torch.from_numpy(cols[order].astype(index)),
            torch.from_numpy(vals[order].astype(np.float32)).to(dtype), size=(n_rows, n_cols),
            check_invariants=False,
        )


def normalized_adjacency(users: np.ndarray, items: np.ndarray, num_users: int,
                         num_items: int) -> torch.Tensor:
    """Full symmetric-normalised adjacency D^-1/2 A D^-1/2: [N, N] float32 sparse CSR,
    N = U + I, users first. Used as the reference; training uses the bipartite blocks."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    n = num_users + num_items
    rows = np.concatenate([users, item_node(items, num_users)])
    cols = np.concatenate([item_node(items, num_users), users])
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    w = 1.0 / np.sqrt(deg[rows] * deg[cols])
    return csr_tensor(rows, cols, w, n, n)


def _percentiles(x: np.ndarray, qs: Sequence[int] = (0, 25, 50, 75, 90, 99, 100)) -> dict:
    if len(x) == 0:
        return {}
    return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(x, qs), strict=True)}


def component_sizes(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> list[int]:
    """Sizes of the connected components of the undirected graph with ``num_nodes`` nodes and
    edges ``src[e] -- dst[e]``, largest first (isolated nodes are components of 1).

    Vectorised label propagation with pointer jumping: every node takes the smallest label
    among itself and its neighbours, then the label of its label, until nothing changes (a
    few dozen passes over the edges on power-law graphs; no Python loop per edge, unlike a
    networkx graph, which costs about 2 s per million edges to build).
    """
    label = np.arange(num_nodes, dtype=np.int64)
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    while True:
        low = np.minimum(label[src], label[dst])
        new = label.copy()
        np.minimum.at(new, src, low)
        np.minimum.at(new, dst, low)
        while True:  # pointer jumping: a label's own label, until it is a root
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            break
        label = new
    return sorted(np.bincount(label, minlength=num_nodes)[np.unique(label)].tolist(),
                  reverse=True)


def graph_statistics(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int,
                     head_share: float = 0.2) -> dict:
    """Summary of the training graph.

    density = E / (U * I); degree percentiles of users and items; ``head_interaction_share``
    = share of interactions on the ``head_share`` most-interacted items; connected components
    (:func:`component_sizes`) of the graph with every user and item as a node.
    """
    du = np.bincount(users, minlength=num_users)
    di = np.bincount(items, minlength=num_items)
    n_head = max(1, int(round(num_items * head_share)))
    head_interactions = np.sort(di)[::-1][:n_head].sum()
    sizes = component_sizes(users, item_node(items, num_users), num_users + num_items)
    return {
        "num_edges": int(len(users)),
        "density": float(len(users) / max(1, num_users * num_items)),
        "user_degree": _percentiles(du),
        "item_degree": _percentiles(di),
        "users_without_train": int((du == 0).sum()),
        "items_without_train": int((di == 0).sum()),
        "head_items": n_head,
        "head_interaction_share": float(head_interactions / max(1, len(users))),
        "components": len(sizes),
        "largest_component_nodes": int(sizes[0]) if sizes else 0,
        "largest_component_share":
            float(sizes[0] / max(1, num_users + num_items)) if sizes else 0.0,
    }


def to_networkx(train: Csr, user_ids: np.ndarray, item_ids: np.ndarray,
                item_titles: Sequence[str] | None = None) -> nx.Graph:
    """The training graph as a networkx Graph: nodes ``u:<raw id>`` / ``i:<raw id>`` with
    attributes ``kind`` (user/item), ``raw_id`` and ``title`` (items); one edge per interaction."""
    g = nx.Graph()
    g.add_nodes_from((f"u:{r}", {"kind": "user", "raw_id": str(r)}) for r in user_ids)
    titles = item_titles if item_titles is not None else [""] * len(item_ids)
    g.add_nodes_from(
        (f"i:{r}", {"kind": "item", "raw_id": str(r), "title": str(t)})
        for r, t in zip(item_ids, titles, strict=True)
    )
    rows = train.row_index()
    g.add_edges_from(
        zip((f"u:{user_ids[u]}" for u in rows), (f"i:{item_ids[i]}" for i in train.indices),
            strict=True)
    )
    return g
