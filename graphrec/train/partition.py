"""Partitioned training: each of N processes owns a contiguous range of the users and one of
the items, and holds only those rows of the embedding tables, of their optimizer state and of
the normalised adjacency.

Where data-parallel training (Trainer with a group) keeps the whole model in every process,
here the model itself is split, for graphs whose embeddings, optimizer state and propagation
buffers do not fit one device. A propagation layer computes this process's rows of
A h = (R h_items, R^T h_users) from its adjacency blocks (its users' rows of R, its items'
rows of R^T), which read the item rows and user rows its blocks name; those rows are
exchanged with their owners in one ``all_to_all_single`` per side and layer, nothing else.
The layer mean P = mean_k A^k is symmetric, so the backward pass is the same distributed
propagation applied to the gradient (as model.lightgcn's one-process autograd Function).

A training step: every process draws the same batch from the same seeded sampler and takes
the triples whose user it owns; it fetches the final and layer-0 rows of the items they name
from their owners (the gradients go back the same way), computes its triples' loss weighted
by their share of the batch, and steps its own rows. The text projection, the one dense
weight every process holds, has its gradient summed over the processes. The step equals one
process's step on the whole batch (tests/train/test_partition.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from graphrec.artifacts.graph_dir import GraphData
from graphrec.device import resolve_device, retain_freed_memory
from graphrec.distributed import Group, _collective
from graphrec.errors import ConfigError
from graphrec.graph import csr_tensor, propagation_adjacency
from graphrec.model.lightgcn import TextLightGCN, spmm
from graphrec.model.losses import bpr_loss, softmax_loss
from graphrec.train.checkpoint import save_checkpoint
from graphrec.train.config import TrainConfig
from graphrec.train.sampling import hardest
from graphrec.train.trainer import Trainer, model_foldin_arrays, run_identity

log = logging.getLogger(__name__)

ROW_TABLES = ("user_emb.weight", "item_emb.weight")
"""The model's parameters split by rows between the processes (the rest is replicated)."""


def balanced_bounds(weights: np.ndarray, world: int) -> np.ndarray:
    """[world + 1] int64 bounds cutting rows 0..n-1 into ``world`` contiguous ranges whose
    ``weights`` sums are as equal as cutting between rows allows."""
    n = len(weights)
    cum = np.cumsum(np.asarray(weights, dtype=np.float64))
    total = cum[-1] if n else 0.0
    inner = np.searchsorted(cum, total * np.arange(1, world) / world, side="left") + 1
    bounds = np.concatenate([[0], np.minimum(inner, n), [n]]).astype(np.int64)
    return np.maximum.accumulate(bounds)


@dataclass(frozen=True)
class Partition:
    """Which process owns which users and items: rank r owns users [users[r], users[r+1])
    and items [items[r], items[r+1]]. Ranges are balanced by degree + 1 (a row's share of
    the propagation work, and of the memory its embedding takes)."""

    users: np.ndarray
    items: np.ndarray

    @classmethod
    def balanced(cls, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int,
                 world: int) -> Partition:
        return cls(balanced_bounds(np.bincount(users, minlength=num_users) + 1, world),
                   balanced_bounds(np.bincount(items, minlength=num_items) + 1, world))

    def user_range(self, rank: int) -> tuple[int, int]:
        return int(self.users[rank]), int(self.users[rank + 1])

    def item_range(self, rank: int) -> tuple[int, int]:
        return int(self.items[rank]), int(self.items[rank + 1])


class Exchange:
    """Rows of a table split by ranges (``bounds``) that this process asked for, and the
    rows of its own range the others asked for: :meth:`rows` sends and receives them in one
    ``all_to_all_single``, :meth:`gradient` sends their gradients back to the owners.

    ``wanted`` (sorted, unique global row ids) arrive in its order: the owners' ranges are
    contiguous and ascending, so the blocks received from ranks 0, 1, ... follow each other.
    """

    def __init__(self, group: Group, wanted: Tensor, bounds: np.ndarray, what: str):
        self.group, self.what = group, what
        lo = int(bounds[group.rank])
        cuts = torch.searchsorted(wanted, torch.as_tensor(bounds, device=wanted.device))
        self.recv_counts = cuts.diff().tolist()
        if group.solo:
            self.send_counts, self.send_index = self.recv_counts, wanted - lo
            return
        send = torch.empty(group.world, dtype=torch.long, device=wanted.device)
        _all_to_all(send, torch.as_tensor(self.recv_counts, device=wanted.device), what)
        self.send_counts = send.tolist()
        asked = wanted.new_empty(sum(self.send_counts))
        _all_to_all(asked, wanted, f"{what} (row ids)", self.send_counts, self.recv_counts)
        self.send_index = asked - lo

    @property
    def remote_rows(self) -> int:
        """Rows this process receives from the others (its own are copied, not sent)."""
        return sum(self.recv_counts) - self.recv_counts[self.group.rank]

    def rows(self, own: Tensor) -> Tensor:
        """[len(wanted), d]: the wanted rows, from ``own`` [own rows, d] of every process."""
        out = own.new_empty(sum(self.recv_counts), own.shape[1])
        _all_to_all(out, own.index_select(0, self.send_index), self.what, self.recv_counts,
                    self.send_counts)
        return out

    def gradient(self, grad: Tensor, own_rows: int) -> Tensor:
        """[own_rows, d]: the gradients ``grad`` [len(wanted), d] of the wanted rows, summed
        at their owners."""
        back = grad.new_empty(sum(self.send_counts), grad.shape[1])
        _all_to_all(back, grad.contiguous(), f"{self.what} (gradient)", self.send_counts,
                    self.recv_counts)
        return grad.new_zeros(own_rows, grad.shape[1]).index_add_(0, self.send_index, back)


def _all_to_all(out: Tensor, inp: Tensor, what: str, out_counts: list[int] | None = None,
                in_counts: list[int] | None = None) -> None:
    if out_counts is not None and len(out_counts) == 1:  # one process: a copy
        out.copy_(inp)
        return
    _collective(what, lambda: torch.distributed.all_to_all_single(
        out, inp, output_split_sizes=out_counts, input_split_sizes=in_counts))


class Blocks:
    """One process's share of the normalised adjacency: its users' rows of R and its items'
    rows of R^T, each cut by columns into the part that reads this process's own rows and
    the part that reads rows of the others (in the order :attr:`items` / :attr:`users`
    receives them): only those travel, and no copy of the own rows is made."""

    def __init__(self, group: Group, part: Partition, users: np.ndarray, items: np.ndarray,
                 num_users: int, num_items: int, dtype: torch.dtype, device: torch.device):
        deg_u = np.bincount(users, minlength=num_users).astype(np.float64)
        deg_i = np.bincount(items, minlength=num_items).astype(np.float64)
        (ulo, uhi), (ilo, ihi) = part.user_range(group.rank), part.item_range(group.rank)
        self.own_users, self.own_items = uhi - ulo, ihi - ilo
        mine = (users >= ulo) & (users < uhi)
        u, i = users[mine], items[mine]
        self.r_own, self.r_in, self.items = self._block(
            u - ulo, i, 1.0 / np.sqrt(deg_u[u] * deg_i[i]), self.own_users, (ilo, ihi),
            part.items, group, dtype, device, "item rows")
        mine = (items >= ilo) & (items < ihi)
        u, i = users[mine], items[mine]
        self.rt_own, self.rt_in, self.users = self._block(
            i - ilo, u, 1.0 / np.sqrt(deg_i[i] * deg_u[u]), self.own_items, (ulo, uhi),
            part.users, group, dtype, device, "user rows")

    @staticmethod
    def _block(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int,
               own: tuple[int, int], col_bounds: np.ndarray, group: Group,
               dtype: torch.dtype, device: torch.device,
               what: str) -> tuple[Tensor, Tensor, Exchange]:
        """(the columns of this process's own range, the others' columns in received
        order, the exchange that receives them)."""
        here = (cols >= own[0]) & (cols < own[1])
        block_own = csr_tensor(rows[here], cols[here] - own[0], vals[here], n_rows,
                               own[1] - own[0], dtype).to(device)
        wanted, local = np.unique(cols[~here], return_inverse=True)
        block_in = csr_tensor(rows[~here], local.astype(np.int64), vals[~here], n_rows,
                              len(wanted), dtype).to(device)
        return block_own, block_in, Exchange(group, torch.as_tensor(wanted, device=device),
                                             col_bounds, f"propagation ({what})")

    def layers(self, xu: Tensor, xi: Tensor, num_layers: int) -> tuple[Tensor, Tensor]:
        """This process's rows of mean_{k=0..K} A^k (xu, xi), from its own rows."""
        out_u, out_i = xu.clone(), xi.clone()
        hu, hi = xu, xi
        for _ in range(num_layers):
            # The others' rows first, so that their buffers are freed before the products
            # of the own rows allocate.
            from_i = spmm(self.r_in, self.items.rows(hi))
            from_u = spmm(self.rt_in, self.users.rows(hu))
            hu, hi = from_i.add_(spmm(self.r_own, hi)), from_u.add_(spmm(self.rt_own, hu))
            out_u += hu
            out_i += hi
        scale = 1.0 / (num_layers + 1)
        return out_u.mul_(scale), out_i.mul_(scale)

    def sent_per_layer(self) -> dict:
        """Rows this process receives from the others per propagation layer: the distinct
        rows of theirs that its blocks name, no more."""
        return {"user_rows_in": self.users.remote_rows, "item_rows_in": self.items.remote_rows}


class _Propagate(torch.autograd.Function):
    """:meth:`Blocks.layers` with its backward: the same propagation of the gradient (P is
    symmetric), run by every process together."""

    @staticmethod
    def forward(ctx: Any, xu: Tensor, xi: Tensor, blocks: Blocks, num_layers: int):
        ctx.blocks, ctx.num_layers = blocks, num_layers
        with torch.no_grad():
            return blocks.layers(xu.detach(), xi.detach(), num_layers)

    @staticmethod
    def backward(ctx: Any, gu: Tensor, gi: Tensor):
        du, di = ctx.blocks.layers(gu.contiguous(), gi.contiguous(), ctx.num_layers)
        return du, di, None, None


class _Fetch(torch.autograd.Function):
    """Rows of every process's ``own`` table that this process asked for (an Exchange);
    their gradients return to the owners."""

    @staticmethod
    def forward(ctx: Any, own: Tensor, exchange: Exchange):
        ctx.exchange, ctx.rows = exchange, own.shape[0]
        return exchange.rows(own.detach())

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        return ctx.exchange.gradient(grad, ctx.rows), None


def gather_rows(group: Group, own: Tensor, bounds: np.ndarray, leader_only: bool = False,
                what: str = "rows") -> Tensor | None:
    """The whole table from every process's ``own`` rows (ranges ``bounds``): on every
    process, or on the leader only (the others get None)."""
    if group.solo:
        return own
    counts = np.diff(bounds).tolist()
    width = max(counts)
    padded = own.new_zeros((width, *own.shape[1:]))
    padded[: len(own)] = own
    if leader_only:
        parts = [torch.empty_like(padded) for _ in counts] if group.leader else None
        _collective(what, lambda: torch.distributed.gather(padded, parts, dst=0))
        if not group.leader:
            return None
    else:
        parts = [torch.empty_like(padded) for _ in counts]
        _collective(what, lambda: torch.distributed.all_gather(parts, padded))
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


class PartitionedTrainer(Trainer):
    """:class:`Trainer` whose model is split between the processes of ``group`` (see the
    module's docstring); ``fit``, validation, early stopping and checkpoints are the
    Trainer's. Checkpoints hold the whole model (gathered at the leader) in the Trainer's
    format, so a run resumes on any number of processes, or in one. One process: use
    :class:`Trainer`, which this equals there."""

    def __init__(self, graph: GraphData, cfg: TrainConfig, group: Group):
        cfg.validate(graph.text_emb is not None)
        self.cfg = cfg = cfg.resolve(graph)
        for name, bad in (("neg_top", cfg.neg_top > 1), ("cold_start", cfg.cold_start == "bpr"),
                          ("precision", cfg.precision != "float32"),
                          ("id_dropout", cfg.id_dropout > 0)):
            if bad:
                raise ConfigError("not available when the model is split between processes",
                                  parameter=name, value=getattr(cfg, name))
        self.graph, self.group = graph, group
        group.check_same("graph and training settings", run_identity(graph, cfg))
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            retain_freed_memory()
        u, i = (np.asarray(a, dtype=np.int64) for a in graph.train)
        self.part = Partition.balanced(u, i, graph.num_users, graph.num_items, group.world)
        (self.ulo, self.uhi), (self.ilo, self.ihi) = (self.part.user_range(group.rank),
                                                      self.part.item_range(group.rank))
        self.blocks = Blocks(group, self.part, u, i, graph.num_users, graph.num_items,
                             torch.float32, self.device)
        self.batch_rows = False
        self.degree = torch.as_tensor(graph.train_item_degree())
        self.warm = self.degree > 0
        text = torch.as_tensor(graph.text_emb) if graph.text_emb is not None else None
        self.text_emb = text.to(self.device) if text is not None else None
        self.model = self._own_model(graph, cfg, text).to(self.device)
        self._start_run(u, i)
        self._full: TextLightGCN | None = None  # the gathered model, at the end of fit

    def _own_model(self, graph: GraphData, cfg: TrainConfig, text: Tensor | None) -> TextLightGCN:
        """This process's rows of the model one process would initialise from the seed."""
        full = TextLightGCN.initial_weights(graph.num_users, graph.num_items, cfg.dim,
                                            None if text is None else text.shape[1],
                                            cfg.item_init, torch.Generator().manual_seed(
                                                cfg.seed))
        own_text = None if text is None or cfg.item_init == "id" else text[self.ilo:self.ihi]
        model = TextLightGCN(self.uhi - self.ulo, self.ihi - self.ilo, cfg.dim, cfg.layers,
                             text_emb=own_text, item_init=cfg.item_init)
        model.load_state_dict(self._own_rows(full), strict=True)
        return model

    def _ranges(self) -> dict[str, tuple[slice, np.ndarray]]:
        """Per row table: this process's rows, and every process's bounds."""
        return {"user_emb.weight": (slice(self.ulo, self.uhi), self.part.users),
                "item_emb.weight": (slice(self.ilo, self.ihi), self.part.items)}

    def _own_rows(self, state: dict) -> dict:
        """``state`` (whole tables) cut to this process's rows."""
        ranges = self._ranges()
        return {k: v[ranges[k][0]].clone() if k in ranges else v for k, v in state.items()}

    # -- a step ----------------------------------------------------------------------------
    def batches(self):
        """One epoch of this process's parts of the batches: (users, pos, neg, size), the
        triples of its own users and the size of the whole batch (every process draws the
        same epoch and keeps its part)."""
        return self.sampler.epoch_share(self.cfg.batch_size, self.generator,
                                        self.cfg.neg_candidates, self.ulo, self.uhi)

    def train_step(self, users: Tensor, pos: Tensor, neg: Tensor,
                   size: int | None = None) -> tuple[Tensor, Tensor]:
        """One Adam step on a batch of BPR triples; returns the whole batch's (loss, BPR
        part). ``size``: the triples are this process's part (:meth:`batches`) of a batch of
        ``size``; None: the whole batch, the same on every process."""
        self.optimizer.zero_grad(set_to_none=True)
        cfg = self.cfg
        if size is None:
            size = len(users)
            mine = (users >= self.ulo) & (users < self.uhi)
            users, pos, neg = users[mine], pos[mine], neg[mine]
        users = users - self.ulo
        model = self.model
        xu0, xi0 = model.user_emb.weight, model.item_layer0()
        eu, ei = _Propagate.apply(xu0, xi0, self.blocks, cfg.layers)
        wanted, local = torch.unique(torch.cat([pos, neg.flatten()]), return_inverse=True)
        fetched = _Fetch.apply(torch.cat([ei, xi0], 1),
                               Exchange(self.group, wanted, self.part.items, "batch item rows"))
        if len(users) == 0:  # none of this batch's users is here: still in every exchange
            loss = part = (eu.sum() + ei.sum() + fetched.sum()) * 0.0
        else:
            ei_b, xi0_b = fetched[:, :cfg.dim], fetched[:, cfg.dim:]
            p_local, n_local = local[: len(pos)], local[len(pos):].view(neg.shape)
            if cfg.loss == "softmax":
                loss, part = softmax_loss(eu, ei_b, xu0, xi0_b, users, p_local,
                                          n_local.view(len(users), -1), cfg.reg,
                                          cfg.temperature)
            else:
                if neg.dim() == 2:
                    pick = hardest(eu, users, ei_b, n_local, top=1,
                                   generator=self.generator).unsqueeze(1)
                    n_local = n_local.gather(1, pick).squeeze(1)
                loss, part = bpr_loss(eu, ei_b, xu0, xi0_b, users, p_local, n_local, cfg.reg)
        weight = len(users) / size
        (loss * weight).backward()
        return self._sum_replicated(loss.detach() * weight, part * weight)

    def _sum_replicated(self, loss: Tensor, part: Tensor) -> tuple[Tensor, Tensor]:
        """Sum the replicated weights' gradients (the text projection) and the two losses
        over the processes in one collective, then step."""
        shared = [p for n, p in self.model.named_parameters() if n not in ROW_TABLES]
        grads = [p.grad.flatten() if p.grad is not None else torch.zeros(
            p.numel(), device=p.device) for p in shared]
        flat = self.group.all_reduce_(torch.cat([*grads, loss.reshape(1), part.reshape(1)]),
                                      "gradient sum")
        at = 0
        for p in shared:
            p.grad = flat[at:at + p.numel()].view_as(p)
            at += p.numel()
        return self._step(flat[at], flat[at + 1])

    # -- embeddings ------------------------------------------------------------------------
    @torch.inference_mode()
    def propagate(self) -> tuple[Tensor, Tensor]:
        """The whole final user and item tables, on every process (evaluation is shared out
        by users, and each process scores against every item)."""
        self.model.eval()
        eu, ei = self.blocks.layers(self.model.user_emb.weight, self.model.item_layer0(),
                                    self.cfg.layers)
        return (gather_rows(self.group, eu, self.part.users, what="final user rows"),
                gather_rows(self.group, ei, self.part.items, what="final item rows"))

    def foldin_arrays(self, user_final: Tensor, item_final: Tensor) -> dict:
        """The whole model's fold-in arrays (what ``graphrec update`` reads), computed at the
        leader on the CPU from the gathered model and the whole adjacency: one process's
        inference, without optimizer state or training buffers. {} elsewhere."""
        self._full = model = self.full_model()
        if model is None:
            return {}
        u, i = self.graph.train
        adj = propagation_adjacency(u, i, self.graph.num_users, self.graph.num_items,
                                    torch.get_num_threads())
        return model_foldin_arrays(model, adj, self.warm, self.cfg, user_final.cpu(),
                                   item_final.cpu())

    def full_model(self) -> TextLightGCN | None:
        """The whole model, gathered at the leader (None on the other processes)."""
        state = self._gathered(self.model.state_dict())
        if state is None:
            return None
        text = self.text_emb if self.cfg.item_init != "id" else None
        model = TextLightGCN(self.graph.num_users, self.graph.num_items, self.cfg.dim,
                             self.cfg.layers, text_emb=None if text is None else text.cpu(),
                             item_init=self.cfg.item_init)
        model.load_state_dict({k: v.cpu() for k, v in state.items()})
        return model

    def fit(self, *args, **kwargs):
        """Trainer.fit; the result's model is the whole model at the leader (None
        elsewhere)."""
        result = super().fit(*args, **kwargs)  # gathers the whole model for the fold-in
        result.model, self._full = self._full, None
        return result

    # -- checkpoints: the whole model, in the Trainer's format -----------------------------
    def _gathered(self, state: dict) -> dict | None:
        ranges = self._ranges()
        out = {k: gather_rows(self.group, v, ranges[k][1], leader_only=True, what="checkpoint")
               if k in ranges else v for k, v in state.items()}
        return out if self.group.leader else None

    def _optimizer_tables(self) -> list[str | None]:
        """Per optimizer parameter index, the row table it is (None: replicated)."""
        return [n if n in ROW_TABLES else None for n, _ in self.model.named_parameters()]

    def state(self) -> dict:
        tables = self._optimizer_tables()
        ranges = self._ranges()
        opt = self.optimizer.state_dict()
        # The entries are the optimizer's own dicts: gathered copies go into new ones.
        opt["state"] = {index: {**entry, **{key: gather_rows(
            self.group, entry[key], ranges[tables[index]][1], leader_only=True,
            what="checkpoint")
            for key in ("exp_avg", "exp_avg_sq")}} if tables[index] is not None else entry
            for index, entry in opt["state"].items()}
        state = super().state()
        state["model"] = self._gathered(state["model"])
        state["optimizer"] = opt
        if self.best is not None:
            state["best"]["model"] = self._gathered(self.best[2])
        return state

    def load_state(self, state: dict) -> None:
        state = dict(state, model=self._own_rows(state["model"]))
        tables = self._optimizer_tables()
        ranges = self._ranges()
        for index, entry in state["optimizer"]["state"].items():
            if tables[int(index)] is not None:
                for key in ("exp_avg", "exp_avg_sq"):
                    entry[key] = entry[key][ranges[tables[int(index)]][0]].clone()
        if state.get("best") is not None:
            state["best"] = dict(state["best"], model=self._own_rows(state["best"]["model"]))
        super().load_state(state)

    def save_checkpoint(self, path) -> None:
        state = self.state()  # every process takes part in the gathers; the leader writes
        if self.group.leader:
            save_checkpoint(state, path)

