"""TextLightGCN: LightGCN propagation over user ID embeddings and text-initialised items.

LightGCN (He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020): e^(k+1) = D^-1/2 A D^-1/2 e^(k), final = mean_k e^(k),
score(u, i) = <final_u, final_i>. Here an item's layer-0 embedding is a learned projection
of its BERT text embedding, plus (optionally) a free ID embedding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from graphrec.graph import Adjacency, NodeOrder
from graphrec.options import ITEM_INITS


class _BipartiteLightGCN(torch.autograd.Function):
    """Layer mean of K propagation steps over the bipartite normalised adjacency.

    The propagation operator P = mean_k A^k is symmetric because A is, so the backward pass
    is the same propagation applied to the incoming gradient. Autograd through a sparse-dense
    product would instead store every layer and build a transposed copy of the CSR matrix on
    each step; this needs neither. With a node ``order``, the inputs are gathered into the
    blocks' positions first and the outputs back to node order last (P's rows and columns
    permuted alike: the same symmetric operator).
    """

    @staticmethod
    def forward(ctx: Any, xu: Tensor, xi: Tensor, r: Tensor, rt: Tensor,
                num_layers: int, order: NodeOrder | None) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(r, rt)
        ctx.num_layers, ctx.order = num_layers, order
        return _propagate(xu, xi, r, rt, num_layers, order)

    @staticmethod
    def backward(ctx: Any, gu: Tensor, gi: Tensor):
        r, rt = ctx.saved_tensors
        du, di = _propagate(gu.contiguous(), gi.contiguous(), r, rt, ctx.num_layers,
                            ctx.order)
        return du, di, None, None, None, None


def _propagate(xu: Tensor, xi: Tensor, r: Tensor, rt: Tensor, num_layers: int,
               order: NodeOrder | None = None) -> tuple[Tensor, Tensor]:
    if order is None:
        out_u, out_i = xu.clone(), xi.clone()
    else:
        # A reordered side's gathered copy is fresh, so its layer sum can start in it
        # (_add_layers reads its inputs before it first adds to the outputs).
        xu, xi = order.to_positions(xu, xi)
        out_u = xu if order.users is not None else xu.clone()
        out_i = xi if order.items is not None else xi.clone()
    _add_layers(xu, xi, out_u, out_i, r, rt, num_layers)
    scale = 1.0 / (num_layers + 1)
    out_u, out_i = out_u.mul_(scale), out_i.mul_(scale)
    return (out_u, out_i) if order is None else order.to_nodes(out_u, out_i)


def _add_layers(hu: Tensor, hi: Tensor, out_u: Tensor, out_i: Tensor, r: Tensor, rt: Tensor,
                num_layers: int) -> None:
    """``num_layers`` whole-graph propagation steps from (hu, hi), each added to out_u / out_i
    in place."""
    for _ in range(num_layers):
        # Users gather from items through R, items from users through R^T.
        hu, hi = spmm(r, hi), spmm(rt, hu)
        out_u += hu
        out_i += hi


def lightgcn_propagate(xu: Tensor, xi: Tensor, r: Tensor, rt: Tensor, num_layers: int,
                       order: NodeOrder | None = None) -> tuple[Tensor, Tensor]:
    """LightGCN layer mean over the bipartite graph.

    Args:
        xu: [U, d] float user layer-0 embeddings.
        xi: [I, d] float item layer-0 embeddings.
        r: [U, I] sparse CSR normalised block (entry 1/sqrt(d_u d_i)); rt = r.T as CSR.
        num_layers: K >= 0.
        order: where r and rt keep each node (graph.Adjacency); None: at its own index.
    Returns:
        ([U, d], [I, d]) final embeddings mean_{k=0..K} of the propagated layers, in node
        order.
    """
    if num_layers == 0:
        return xu, xi
    return _BipartiteLightGCN.apply(xu, xi, r, rt, num_layers, order)


def spmm(m: Tensor, x: Tensor) -> Tensor:
    """``m @ x`` for a sparse CSR ``m`` and dense ``x``.

    On the CPU a CSR product is a weighted sum of rows of ``x`` per row of ``m``: exactly an
    embedding bag whose bags are the CSR rows (indices = column indices, offsets = row
    pointers, per-sample weights = values). PyTorch's CPU embedding bag (FBGEMM kernels,
    which prefetch the rows they gather) runs this 1.6-3.5x faster than the MKL sparse
    product on graphs of 1M-10M interactions, with the same float32 sums
    (experiments/RESULTS.md). ``x`` is detached: these products run inside this module's
    autograd Functions, which supply their own backward, and the embedding bag skips its
    backward bookkeeping for an input that needs no gradient. On CUDA the cuSPARSE product,
    written straight into a fresh buffer (``torch.sparse.mm`` zero-fills its result and then
    copies it once more).
    """
    if m.is_cuda:
        out = x.new_empty(m.shape[0], x.shape[1])
        return torch.addmm(out, m, x, beta=0, out=out)
    values = m.values()
    if values.dtype == torch.bfloat16:
        # Blocks stored in bfloat16 (TrainConfig.precision): gather bfloat16 rows, half the
        # bytes; the bag sums in float32 and returns bfloat16, which the next layer gathers
        # as it is (only a propagation's inputs are converted).
        x = x.to(torch.bfloat16)
    else:
        values = values.to(x.dtype)
    return nn.functional.embedding_bag(
        m.col_indices(), x.detach(), m.crow_indices(), mode="sum",
        per_sample_weights=values, include_last_offset=True,
    )


class _BatchLightGCN(torch.autograd.Function):
    """Final LightGCN embeddings of the batch's rows only, S_b P x with S_b selecting the
    batch's users and items and P = mean_k A^k, together with the batch's layer-0 rows S_b x
    (for the L2 term).

    A training step needs final embeddings only where the loss looks. Forward runs the K
    layers over the whole graph and gathers the layer sums at the batch's rows only (the
    full-size sums are never formed); backward is P S_b^T g + S_b^T g0: the batch gradient
    scattered to full size and propagated (2K whole-graph products, as forward), with the
    layer-0 gradient g0 added at the batch's rows at the end (it is not propagated).
    Restricting the last layer to the batch's rows (row slices of R and R^T) and the first
    backward product to its columns paid while the products were MKL's; with the embedding
    bag product, building the slices costs more than it saves at every batch size measured
    (experiments/RESULTS.md), so every product is whole-graph. With a node ``order``, the
    layers run at the blocks' positions: the inputs are gathered into them, the batch's rows
    read at their positions, and the backward's result gathered back to node order.
    """

    @staticmethod
    def forward(ctx: Any, xu: Tensor, xi: Tensor, r: Tensor, rt: Tensor, users: Tensor,
                items: Tensor, num_layers: int,
                order: NodeOrder | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        xu_b, xi_b = xu.index_select(0, users), xi.index_select(0, items)
        sum_u, sum_i = xu_b.clone(), xi_b.clone()
        at_u, at_i = (users, items) if order is None else order.positions_of(users, items)
        hu, hi = (xu, xi) if order is None else order.to_positions(xu, xi)
        for _ in range(num_layers):
            hu, hi = spmm(r, hi), spmm(rt, hu)
            sum_u += hu.index_select(0, at_u)
            sum_i += hi.index_select(0, at_i)
        scale = 1.0 / (num_layers + 1)
        eu, ei = sum_u.mul_(scale), sum_i.mul_(scale)
        ctx.save_for_backward(r, rt, users, items, at_u, at_i)
        ctx.num_layers, ctx.order = num_layers, order
        return eu, ei, xu_b, xi_b

    @staticmethod
    def backward(ctx: Any, gu: Tensor, gi: Tensor, g0u: Tensor, g0i: Tensor):
        r, rt, users, items, at_u, at_i = ctx.saved_tensors
        scale = 1.0 / (ctx.num_layers + 1)
        # G = S_b^T g scattered to full size (repeated rows add up); out = sum_k A^k G.
        out_u = gu.new_zeros(r.shape[0], gu.shape[1]).index_add_(0, at_u, gu, alpha=scale)
        out_i = gi.new_zeros(rt.shape[0], gi.shape[1]).index_add_(0, at_i, gi, alpha=scale)
        _add_layers(out_u, out_i, out_u, out_i, r, rt, ctx.num_layers)
        if ctx.order is not None:
            out_u, out_i = ctx.order.to_nodes(out_u, out_i)
        out_u.index_add_(0, users, g0u)
        out_i.index_add_(0, items, g0i)
        return out_u, out_i, None, None, None, None, None, None


def lightgcn_batch(xu: Tensor, xi: Tensor, r: Tensor, rt: Tensor, users: Tensor,
                   items: Tensor, num_layers: int,
                   order: NodeOrder | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rows ``users`` [bu] and ``items`` [bi] (int64, unique) of
    :func:`lightgcn_propagate`'s output, with gradients, at less cost than the whole output,
    and the same rows of the layer-0 inputs. Returns ([bu, d], [bi, d], [bu, d], [bi, d])."""
    if num_layers == 0:
        xu_b, xi_b = xu.index_select(0, users), xi.index_select(0, items)
        return xu_b, xi_b, xu_b, xi_b
    return _BatchLightGCN.apply(xu, xi, r, rt, users, items, num_layers, order)


class TextLightGCN(nn.Module):
    """LightGCN whose item layer-0 embeddings come from item text.

    Args:
        num_users, num_items: counts.
        dim: embedding width.
        num_layers: propagation steps K.
        text_emb: [I, t] float32 item text embeddings, or None (then ``item_init`` must be "id").
        item_init: "text" (projection of text), "id" (free embedding, plain LightGCN) or
            "text+id" (their sum).
        text_head_dim: when > 0, also a linear head text [t] -> [dim] that places items
            from text alone (trained by the caller; see ``Trainer`` cold_start=bpr).
    """

    def __init__(self, num_users: int, num_items: int, dim: int = 64, num_layers: int = 3,
                 text_emb: Tensor | None = None, item_init: str = "text+id",
                 init_std: float = 0.1, generator: torch.Generator | None = None,
                 text_head_dim: int = 0):
        super().__init__()
        if item_init not in ITEM_INITS:
            raise ValueError(f"item_init {item_init!r}: expected one of {ITEM_INITS}")
        if item_init != "id" and text_emb is None:
            raise ValueError(f"item_init {item_init!r} needs text embeddings")
        self.num_users, self.num_items = num_users, num_items
        self.dim, self.num_layers, self.item_init = dim, num_layers, item_init
        parts = item_init.split("+")
        self.user_emb = nn.Embedding(num_users, dim)
        self.item_emb = nn.Embedding(num_items, dim) if "id" in parts else None
        self.text_proj: nn.Linear | None = None
        if "text" in parts:
            self.register_buffer("text_emb", text_emb.float(), persistent=False)
            self.text_proj = nn.Linear(text_emb.shape[1], dim, bias=False)
        else:
            self.text_emb = None
        self.text_head = nn.Linear(text_head_dim, dim, bias=False) if text_head_dim > 0 \
            else None
        with torch.no_grad():
            for name, value in self.initial_weights(
                    num_users, num_items, dim, None if text_emb is None else text_emb.shape[1],
                    item_init, generator, init_std, text_head_dim).items():
                self.get_parameter(name).copy_(value)

    @staticmethod
    def initial_weights(num_users: int, num_items: int, dim: int, text_dim: int | None,
                        item_init: str, generator: torch.Generator | None = None,
                        init_std: float = 0.1, text_head_dim: int = 0) -> dict[str, Tensor]:
        """The initial parameters, drawn from ``generator`` in one fixed order, as a state
        dict: N(0, init_std) entries. Text rows have unit norm, so projected rows are also
        about init_std per entry. A model split between processes
        (graphrec.train.partition) cuts its rows from these."""
        parts = item_init.split("+")
        shapes = {"user_emb.weight": (num_users, dim)}
        if "id" in parts:
            shapes["item_emb.weight"] = (num_items, dim)
        if "text" in parts:
            shapes["text_proj.weight"] = (dim, text_dim)
        if text_head_dim > 0:
            shapes["text_head.weight"] = (dim, text_head_dim)
        return {name: torch.empty(shape).normal_(0.0, init_std, generator=generator)
                for name, shape in shapes.items()}

    def item_layer0(self, id_keep: Tensor | None = None) -> Tensor:
        """[I, d] item embeddings before propagation. ``id_keep`` [I] bool: the items whose
        ID embedding is added (the others: their text projection alone; ID dropout)."""
        x = None
        if self.text_proj is not None:
            x = self.text_proj(self.text_emb)
        if self.item_emb is not None:
            ids = self.item_emb.weight
            if id_keep is not None:
                ids = ids * id_keep.unsqueeze(1).to(ids.dtype)
            x = ids if x is None else x + ids
        return x

    def forward(self, adj: Adjacency,
                id_keep: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Propagate over ``adj``. Returns final user [U, d], final item [I, d], and the
        layer-0 user and item embeddings (for regularisation)."""
        xu0, xi0 = self.user_emb.weight, self.item_layer0(id_keep)
        eu, ei = lightgcn_propagate(xu0, xi0, adj.r, adj.rt, self.num_layers, adj.order)
        return eu, ei, xu0, xi0

    def forward_batch(self, adj: Adjacency, users: Tensor, items: Tensor,
                      id_keep: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Final embeddings of ``users`` [bu] and ``items`` [bi] (unique int64) only, and
        their layer-0 rows: ([bu, d], [bi, d], [bu, d], [bi, d])."""
        return lightgcn_batch(self.user_emb.weight, self.item_layer0(id_keep), adj.r, adj.rt,
                              users, items, self.num_layers, adj.order)
