"""Training loop: BPR over the graph, validation with early stopping, checkpoints, test once."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphrec.data import TEST, TRAIN, VALID
from graphrec.device import resolve_device, retain_freed_memory
from graphrec.errors import ArtifactError, ConfigError
from graphrec.graph import propagation_adjacency
from graphrec.metrics import (
    evaluate_ranking,
    head_item_mask,
    self_information,
    tail_boost_weights,
)
from graphrec.model import ITEM_INITS, TextLightGCN, bpr_loss
from graphrec.sampling import NEGATIVE_SAMPLERS, BPRSampler, hardest
from graphrec.store import GraphData

log = logging.getLogger(__name__)

COLD_STARTS = ("ridge", "bpr", "layer0")
LR_SCHEDULES = ("auto", "constant", "cosine")
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class TrainConfig:
    """Model and optimisation settings; saved, fully resolved, with the model."""

    epochs: int = 200
    """Maximum number of passes over the training interactions."""
    batch_size: int = 0
    """BPR triples per step; 0 picks one from the data size (see resolved_batch_size)."""
    lr: float = 0.0
    """Adam learning rate; 0 picks one to go with the batch size."""
    lr_schedule: str = "auto"
    """constant; cosine: decay per step from lr to 0 over ``epochs`` epochs; or auto: cosine
    when the run has a fixed length (no validation split, or eval_every 0), constant when
    early stopping on validation decides the length (experiments/RESULTS.md)."""
    dim: int = 64
    """Embedding width."""
    layers: int = 3
    """LightGCN propagation layers."""
    reg: float = 1e-3
    """L2 weight on the batch's layer-0 embeddings (1e-3 goes with hard negatives: 1e-4
    over-fits with them on Gowalla, experiments/RESULTS.md)."""
    negatives: str = "auto"
    """Negative sampler: uniform, popularity ((degree + 1)^neg_alpha), or auto: popularity
    for text items, uniform for id items (best recall for each on MovieLens and Gowalla,
    experiments/RESULTS.md)."""
    neg_alpha: float = 0.5
    """Exponent of the popularity negative sampler."""
    neg_candidates: int = 8
    """Hard negatives: draw this many negatives per triple and train on the one the model
    scores highest at that step (dynamic negative sampling); 1 trains on every drawn one.
    8 with reg 1e-3: Gowalla test recall@20 0.1805 instead of 0.1723, MovieLens 0.242
    instead of 0.226 (3 seeds; experiments/RESULTS.md)."""
    item_init: str = "auto"
    """Item layer-0: text, id, text+id, or auto (text when the graph has text, else id)."""
    device: str = "auto"
    """auto, cpu or cuda."""
    seed: int = 0
    """Seed of initialisation and sampling."""
    eval_every: int = 5
    """Validate every this many epochs; 0 turns evaluation during training off."""
    patience: int = 5
    """Stop after this many validations without improvement."""
    monitor: str = "ndcg@20"
    """Validation metric for early stopping and best-checkpoint restore."""
    ks: tuple[int, ...] = (20,)
    """Cut-offs reported."""
    ridge: float = 1.0
    """Ridge penalty of the text -> embedding map that places cold items (cold_start=ridge)."""
    cold_start: str = "ridge"
    """How items without training edges are placed from their text: ridge (a ridge map
    text -> final embedding fit on warm items after training, rescaled to warm norms), bpr
    (a linear text head trained jointly by a second BPR term against the users' final
    embeddings) or layer0 (the item's own text projection, rescaled; item_init text only).
    experiments/RESULTS.md compares them."""
    precision: str = "float32"
    """float32, or bfloat16: the CPU's sparse products gather bfloat16 copies of the node
    tables (half the bytes; sums in float32, each layer's rows rounded to bfloat16, about
    0.4% relative error): faster steps (experiments/RESULTS.md). CPU only."""

    def validate(self, has_text: bool) -> None:
        checks = [
            ("--epochs", self.epochs, self.epochs >= 1, "an integer >= 1"),
            ("--batch-size", self.batch_size, self.batch_size >= 0, "an integer >= 1 (0 = auto)"),
            ("--lr", self.lr, self.lr >= 0, "a positive number (0 = auto)"),
            ("--dim", self.dim, self.dim >= 1, "an integer >= 1"),
            ("--layers", self.layers, self.layers >= 0, "an integer >= 0"),
            ("--reg", self.reg, self.reg >= 0, "a number >= 0"),
            ("--eval-every", self.eval_every, self.eval_every >= 0, "an integer >= 0"),
            ("--patience", self.patience, self.patience >= 1, "an integer >= 1"),
            ("--neg-alpha", self.neg_alpha, -2 <= self.neg_alpha <= 2, "a number in [-2, 2]"),
            ("--neg-candidates", self.neg_candidates, self.neg_candidates >= 1,
             "an integer >= 1"),
        ]
        for name, value, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name} {value}: expected {expected}")
        if self.negatives not in NEGATIVE_SAMPLERS + ("auto",):
            raise ConfigError(
                f"--negatives {self.negatives!r}: expected auto or one of {NEGATIVE_SAMPLERS}")
        if self.item_init not in ITEM_INITS + ("auto",):
            raise ConfigError(
                f"--item-init {self.item_init!r}: expected auto or one of {ITEM_INITS}")
        if self.item_init in ("text", "text+id") and not has_text:
            raise ConfigError(
                f"--item-init {self.item_init}: the graph was built with --no-text; use id"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"--lr-schedule {self.lr_schedule!r}: expected one of {LR_SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"--precision {self.precision!r}: expected one of {PRECISIONS}")
        if self.cold_start not in COLD_STARTS:
            raise ConfigError(
                f"--cold-start {self.cold_start!r}: expected one of {COLD_STARTS}")
        if any(k <= 0 for k in self.ks):
            raise ConfigError(f"--k {','.join(map(str, self.ks))}: expected positive integers")

    def resolve(self, graph: GraphData) -> TrainConfig:
        """Fill the automatic settings from the graph."""
        num_train = int((graph.folds == TRAIN).sum())
        batch = self.batch_size or resolved_batch_size(num_train)
        lr = self.lr or resolved_lr(batch)
        init = self.item_init
        if init == "auto":
            # Best on MovieLens validation and test (experiments/RESULTS.md): the projection
            # of text regularises items far better than a free ID embedding per item.
            init = "text" if graph.text_emb is not None else "id"
        negatives = self.negatives
        if negatives == "auto":
            # Popularity negatives raise recall and tail recall with text items, and cost
            # recall for free ID items (MovieLens alpha sweep; Gowalla: uniform 0.1496 vs
            # alpha 0.5 0.1434 after 20 epochs).
            negatives = "uniform" if init == "id" else "popularity"
        schedule = self.lr_schedule
        if schedule == "auto":
            # A run of known length can decay its learning rate to the end (Gowalla: recall
            # 0.150 constant vs 0.171 cosine); a run that early stopping ends cannot, and
            # constant lr with early stopping was best on MovieLens (0.2276 vs 0.2214).
            fixed_length = self.eval_every == 0 or not graph.has_valid()
            schedule = "cosine" if fixed_length else "constant"
        if self.cold_start == "layer0" and init != "text":
            raise ConfigError(f"--cold-start layer0 needs --item-init text (resolved: {init})")
        return replace(self, batch_size=batch, lr=lr, item_init=init, negatives=negatives,
                       lr_schedule=schedule, ks=tuple(self.ks))


MAX_AUTO_BATCH = 2**21
LR_GROWTH_STOPS = 32768
"""Batch size beyond which the automatic learning rate stops growing (0.02 there)."""
BATCH_ROWS_BELOW = 0.25
"""On the CPU, gather final embeddings at the batch's rows only while the batch size is
below this share of the graph's nodes: it saves the full-size layer sums but costs two
``unique`` sorts, a trade measured to pay at Gowalla's batch 8192 (0.12 of the nodes) and not
at 32,768 (0.46) or at 10M interactions with batch 524,288 (0.60) (experiments/RESULTS.md)."""


def resolved_batch_size(num_train: int) -> int:
    """About 25 steps per epoch at any size: a power of two between 1024 and 2^21 triples.

    Every step propagates the whole graph, so its cost barely depends on the batch: fewer,
    larger batches reach a given quality in less wall time (experiments/RESULTS.md), and a
    constant number of steps per epoch keeps epoch time linear in the interactions. The
    upper bound (reached at about 50M interactions) keeps one [B, d] batch tensor at dim 64
    to 512 MB.
    """
    return int(np.clip(2 ** round(np.log2(max(num_train, 1) / 25)), 1024, MAX_AUTO_BATCH))


def resolved_lr(batch_size: int) -> float:
    """Adam learning rate growing with the square root of the batch size (5e-3 at 2048) up to
    0.02 at 32768, constant above.

    Above that size the batch rule keeps about 25 steps per epoch, so a row with a given
    degree gets the same number of triples per step on a larger graph; the mean over the
    batch only rescales every row's gradient, which Adam's per-coordinate normalisation
    cancels. The step a row takes is then set by the learning rate alone, and 0.02 is the
    value checked at 32768 on Gowalla (experiments/RESULTS.md). Not checked on a real graph
    larger than Gowalla.
    """
    return float(round(5e-3 * (min(batch_size, LR_GROWTH_STOPS) / 2048) ** 0.5, 5))


@dataclass
class TrainResult:
    """What training produced."""

    model: TextLightGCN
    config: TrainConfig
    user_emb: Tensor
    """[U, d] float32 final user embeddings (CPU)."""
    item_emb: Tensor
    """[I, d] float32 final item embeddings, cold items placed from text (CPU)."""
    text_map: Tensor | None
    """[t, d] ridge map from text embedding to final item embedding, or None."""
    history: list[dict] = field(default_factory=list)
    test: dict = field(default_factory=dict)
    best_epoch: int | None = None
    timings: dict = field(default_factory=dict)


def fit_text_map(text_emb: Tensor, item_emb: Tensor, warm: Tensor, ridge: float) -> Tensor:
    """Ridge regression W = argmin |T_w W - E_w|^2 + ridge |W|^2 over warm items.

    text_emb: [I, t]; item_emb: [I, d]; warm: [I] bool. Returns W [t, d]. Cold and newly
    added items get T W: placed where warm items with similar text sit after propagation.
    """
    t = text_emb[warm].double()
    e = item_emb[warm].double()
    gram = t.T @ t + ridge * torch.eye(t.shape[1], dtype=t.dtype, device=t.device)
    return torch.linalg.solve(gram, t.T @ e).float()


def text_map_for(design: str, model: TextLightGCN, text_emb: Tensor, item_emb: Tensor,
                 warm: Tensor, ridge: float = 1.0) -> Tensor:
    """[t, d] linear map that places an item from its text alone (``cold_start`` designs).

    ridge: ridge regression text -> final embedding over warm items (fit_text_map).
    bpr: the model's text head, trained jointly by a BPR term (needs ``model.text_head``).
    layer0: the item's own text projection (an isolated node's LightGCN output is its
    layer 0 / (L + 1)). ridge and layer0 are rescaled so that warm items placed by the map
    have the mean norm of their final embeddings, except a ridge map for a model whose items
    have no text projection (item_init id), which keeps the regression's own scale.
    """
    if design == "bpr":
        if model.text_head is None:
            raise ConfigError("cold_start bpr: the model was trained without a text head")
        return model.text_head.weight.T.detach()
    if design == "layer0":
        if model.text_proj is None:
            raise ConfigError("cold_start layer0: the model has no text projection")
        w = model.text_proj.weight.T.detach()
    else:
        w = fit_text_map(text_emb, item_emb, warm, ridge)
        if model.text_proj is None:
            # Free ID embeddings owe nothing to the text, so the map places items weakly;
            # lifting those placements to warm norms puts noise into every list (MovieLens,
            # id items, 1,154 items without training edges: test recall@20 0.1819 rescaled
            # against 0.2106 not, and early stopping at epoch 45 instead of 110).
            return w
    # Both maps shrink: a regression towards the mean (ridge) or an isolated node's layer 0
    # (layer0) gives text-placed items smaller norms, hence smaller scores, than warm items
    # with the same direction, and they would hardly ever enter an all-item list. Rescale so
    # that warm items placed by the map have the mean norm of their final embeddings; the
    # ranking among text-placed items is unchanged.
    placed = (text_emb[warm] @ w).norm(dim=1).mean()
    return w * (item_emb[warm].norm(dim=1).mean() / placed.clamp(min=1e-12))


class Trainer:
    """Holds everything one training run needs on its device."""

    def __init__(self, graph: GraphData, cfg: TrainConfig):
        cfg.validate(graph.text_emb is not None)
        self.cfg = cfg = cfg.resolve(graph)
        self.graph = graph
        self.device = resolve_device(cfg.device)
        if cfg.precision != "float32" and self.device.type != "cpu":
            raise ConfigError(f"--precision {cfg.precision}: for the CPU's products only; "
                              f"use float32 on {self.device.type}")
        if self.device.type == "cpu":
            retain_freed_memory()  # no fresh zero-filled pages for every step's buffers
        u, i = graph.train
        # On the CPU, nodes reordered where the threads' shares of a product would be uneven
        # (ids in popularity order give the first thread the popular rows).
        threads = torch.get_num_threads() if self.device.type == "cpu" else 1
        self.adj = propagation_adjacency(u, i, graph.num_users, graph.num_items, threads,
                                         getattr(torch, cfg.precision)).to(self.device)
        # Final embeddings of the batch's rows only (train_step) on the CPU while a batch is
        # small against the graph; all rows on CUDA, so that a step never waits on the host.
        self.batch_rows = self.device.type != "cuda" and (
            cfg.batch_size < BATCH_ROWS_BELOW * (graph.num_users + graph.num_items))
        degree = graph.train_item_degree()
        self.degree = torch.as_tensor(degree)
        self.warm = self.degree > 0
        text = torch.as_tensor(graph.text_emb) if graph.text_emb is not None else None
        self.text_emb = text.to(self.device) if text is not None else None
        init_gen = torch.Generator().manual_seed(cfg.seed)
        self.model = TextLightGCN(
            graph.num_users, graph.num_items, cfg.dim, cfg.layers,
            text_emb=text if cfg.item_init != "id" else None, item_init=cfg.item_init,
            generator=init_gen,
            text_head_dim=text.shape[1] if cfg.cold_start == "bpr" and text is not None else 0,
        ).to(self.device)
        # The fused kernel updates each parameter in one pass instead of one pass per Adam
        # term (about 3x less time for the optimizer step on Gowalla, CPU).
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, fused=True)
        self.sampler = BPRSampler(torch.as_tensor(u), torch.as_tensor(i), graph.num_items,
                                  cfg.negatives, cfg.neg_alpha, device=self.device)
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed + 1)
        self.total_steps = cfg.epochs * self.sampler.num_batches(cfg.batch_size)
        self.steps_done = 0
        self.head = head_item_mask(degree)
        self.information = self_information(degree, graph.num_users)
        # (seen, target) per evaluated fold, built once rather than at every evaluation.
        self.eval_sets = {VALID: (graph.csr(TRAIN), graph.csr(VALID)),
                          TEST: (graph.csr(TRAIN, VALID), graph.csr(TEST))}
        self.history: list[dict] = []
        self.epoch = 0
        self.best: tuple[float, int, dict] | None = None  # (metric, epoch, state dict)
        self.bad_evals = 0

    def train_step(self, users: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
        """One Adam step on a batch of BPR triples; returns (loss, BPR part).

        users, pos: [B]; neg: [B], or [B, K] candidates of which the hardest is trained on.
        """
        self.optimizer.zero_grad(set_to_none=True)
        if self.batch_rows:
            # Final embeddings of the batch's rows only (model.forward_batch): the layer sums
            # are gathered at these rows, never formed in full.
            bu, u_local = torch.unique(users, return_inverse=True)
            bi, i_local = torch.unique(torch.cat([pos, neg.flatten()]), return_inverse=True)
            p_local, n_local = i_local[: len(pos)], i_local[len(pos):].view(neg.shape)
            eu, ei, xu0, xi0 = self.model.forward_batch(self.adj, bu, bi)
        else:
            # Every row: no torch.unique, whose output size would make a CUDA step wait on
            # the host, and cheaper on the CPU than two sorts once a batch names most nodes.
            # Same loss and gradients.
            eu, ei, xu0, xi0 = self.model(self.adj)
            u_local, p_local, n_local = users, pos, neg
        if neg.dim() == 2:
            pick = hardest(eu, u_local, ei, n_local).unsqueeze(1)
            n_local, neg = n_local.gather(1, pick).squeeze(1), neg.gather(1, pick).squeeze(1)
        loss, bpr = bpr_loss(eu, ei, xu0, xi0, u_local, p_local, n_local, self.cfg.reg)
        if self.model.text_head is not None:  # cold_start "bpr"
            loss = loss + self._text_head_loss(eu.index_select(0, u_local), pos, neg)
        loss.backward()
        if self.cfg.lr_schedule == "cosine":
            progress = min(self.steps_done / max(self.total_steps, 1), 1.0)
            for group in self.optimizer.param_groups:
                group["lr"] = 0.5 * self.cfg.lr * (1.0 + math.cos(math.pi * progress))
        self.optimizer.step()
        self.steps_done += 1
        return loss.detach(), bpr

    # -- one epoch -------------------------------------------------------------------------
    def batches(self):
        """One epoch of (users, pos, neg) batches as this run trains on them: the configured
        batch size and negative candidates (neg [B, K] when K > 1), from the run's generator."""
        return self.sampler.epoch(self.cfg.batch_size, self.generator, self.cfg.neg_candidates)

    def train_epoch(self, progress: Callable | None = None) -> dict:
        self.model.train()
        total = torch.zeros((), device=self.device)
        bpr_total = torch.zeros((), device=self.device)
        steps = 0
        t0 = time.perf_counter()
        for users, pos, neg in self.batches():
            loss, bpr = self.train_step(users, pos, neg)
            total += loss
            bpr_total += bpr
            steps += 1
            if progress is not None:
                progress(1)
        self.epoch += 1
        # One host sync per epoch, not per step.
        return {"epoch": self.epoch, "loss": round(total.item() / steps, 6),
                "bpr": round(bpr_total.item() / steps, 6),
                "train_seconds": round(time.perf_counter() - t0, 3)}

    def _text_head_loss(self, eu: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        """BPR of text-placed items against the batch users' final embeddings ``eu`` [B, d]
        (detached: the warm model is trained exactly as without the head)."""
        u = eu.detach()
        hp = self.model.text_head(self.text_emb[pos])
        hn = self.model.text_head(self.text_emb[neg])
        bpr = torch.nn.functional.softplus((u * (hn - hp)).sum(-1)).mean()
        l2 = hp.square().sum() + hn.square().sum()
        return bpr + self.cfg.reg * l2 / (2 * len(pos))

    # -- embeddings and evaluation ---------------------------------------------------------
    @torch.inference_mode()
    def embeddings(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """Final user [U, d] and item [I, d] embeddings on the device, with items that have
        no training interaction placed from their text (zero without text), and the map."""
        self.model.eval()
        eu, ei, _, _ = self.model(self.adj)
        warm = self.warm.to(self.device)
        ei = ei.clone()
        text_map = None
        if self.text_emb is not None and warm.any():
            text_map = self._text_map(ei, warm)
            cold = ~warm
            if cold.any():
                ei[cold] = self.text_emb[cold] @ text_map
        else:
            # An item without edges and without text has nothing to say; score it 0.
            ei[~warm] = 0.0
        return eu, ei, text_map

    def _text_map(self, ei: Tensor, warm: Tensor) -> Tensor:
        return text_map_for(self.cfg.cold_start, self.model, self.text_emb, ei, warm,
                            self.cfg.ridge)

    def evaluate(self, target_fold: int, ks: tuple[int, ...] | None = None,
                 tail_boost: float = 0.0,
                 embeddings: tuple[Tensor, Tensor] | None = None,
                 tail_shape: str = "degree") -> dict:
        """Full-ranking metrics on VALID (seen = train) or TEST (seen = train + valid), with
        the serving-time ``tail_boost`` of ``tail_shape`` (``recommend.boost_tail``) when it
        is not 0.
        ``embeddings``: (user, item) from :meth:`embeddings`, when the caller already has
        them for the current parameters (several folds or boosts of one model)."""
        eu, ei = embeddings if embeddings is not None else self.embeddings()[:2]
        seen, target = self.eval_sets[target_fold]
        return evaluate_ranking(
            None, seen, target, self.graph.num_items, ks or self.cfg.ks, head_items=self.head,
            cold_items=self.graph.cold_items if self.graph.cold_items.any() else None,
            device=self.device, item_information=self.information, item_vectors=self.text_emb,
            factors=(eu, ei), tail_boost=tail_boost,
            boost_weights=tail_boost_weights(self.degree.numpy(), tail_shape)
            if tail_boost else None,
        )

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "config": asdict(self.cfg), "graph": self.graph.meta.get("fingerprint"),
            "epoch": self.epoch, "history": self.history,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(), "bad_evals": self.bad_evals,
            "steps_done": self.steps_done,
            "best": None if self.best is None else
            {"metric": self.best[0], "epoch": self.best[1], "model": self.best[2]},
        }

    def load_state(self, state: dict) -> None:
        if state.get("graph") != self.graph.meta.get("fingerprint"):
            raise ConfigError(
                f"--resume: the checkpoint was trained on another graph (fingerprint "
                f"{state.get('graph')}, this graph {self.graph.meta.get('fingerprint')}); "
                "drop --resume to start over"
            )
        # Checkpoints older than neg_candidates trained on every drawn negative.
        saved = TrainConfig(**{"neg_candidates": 1, **state["config"],
                               "ks": tuple(state["config"]["ks"])})
        # Settings that may change between an interrupted run and its resumption.
        free = {"epochs", "eval_every", "patience", "device", "precision"}
        diff = [f.name for f in fields(TrainConfig)
                if f.name not in free and getattr(saved, f.name) != getattr(self.cfg, f.name)]
        if diff:
            raise ConfigError(
                f"--resume: the checkpoint was trained with different {', '.join(diff)} "
                f"({', '.join(f'{d}={getattr(saved, d)!r}' for d in diff)}); "
                "drop --resume to start over"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.epoch, self.history = state["epoch"], state["history"]
        self.bad_evals = state["bad_evals"]
        self.steps_done = state.get("steps_done", 0)
        b = state["best"]
        self.best = None if b is None else (b["metric"], b["epoch"], b["model"])

    def save_checkpoint(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # torch raises many types for a damaged file
            raise ArtifactError(f"--resume: checkpoint {path} is unreadable ({exc})") from None
        self.load_state(state)

    # -- the run ---------------------------------------------------------------------------
    def fit(self, checkpoint: Path | None = None, resume: bool = False,
            progress_factory: Callable | None = None) -> TrainResult:
        cfg = self.cfg
        if resume:
            if checkpoint is None or not checkpoint.exists():
                raise ArtifactError(f"--resume: no checkpoint at {checkpoint}")
            self.load_checkpoint(checkpoint)
            log.info("resumed from %s at epoch %d", checkpoint, self.epoch)
        validate = cfg.eval_every > 0 and self.graph.has_valid()
        t_start = time.perf_counter()
        eval_seconds = 0.0
        stopped = False
        while self.epoch < cfg.epochs and not stopped:
            bar = progress_factory(self.sampler.num_batches(cfg.batch_size), self.epoch + 1) \
                if progress_factory else None
            try:
                row = self.train_epoch(bar.update if bar is not None else None)
            finally:
                if bar is not None:
                    bar.close()
            if validate and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs):
                t0 = time.perf_counter()
                metrics = self.evaluate(VALID)
                eval_seconds += time.perf_counter() - t0
                row["valid"] = {k: round(v, 6) for k, v in metrics.items()}
                score = metrics[cfg.monitor]
                if self.best is None or score > self.best[0]:
                    self.best = (score, self.epoch, copy.deepcopy(
                        {k: v.detach().cpu() for k, v in self.model.state_dict().items()}))
                    self.bad_evals = 0
                else:
                    self.bad_evals += 1
                    stopped = self.bad_evals >= cfg.patience
            self.history.append(row)
            log.info("epoch=%d loss=%.5f train_seconds=%.2f%s", row["epoch"], row["loss"],
                     row["train_seconds"],
                     "".join(f" {k}={v:.4f}" for k, v in row.get("valid", {}).items()
                             if "@" in k and k.split("@")[0] in ("recall", "ndcg")))
            if checkpoint is not None:
                self.save_checkpoint(checkpoint)
        if stopped:
            log.info("early stop at epoch %d: no %s gain in %d validations", self.epoch,
                     cfg.monitor, cfg.patience)
        best_epoch = None
        if self.best is not None:
            self.model.load_state_dict(self.best[2])
            best_epoch = self.best[1]
            log.info("restored the best epoch %d (%s=%.4f)", best_epoch, cfg.monitor, self.best[0])
        train_seconds = time.perf_counter() - t_start
        eu, ei, text_map = self.embeddings()
        test = {}
        if self.graph.has_test():
            t0 = time.perf_counter()
            test = self.evaluate(TEST, embeddings=(eu, ei))
            eval_seconds += time.perf_counter() - t0
        return TrainResult(
            model=self.model, config=cfg, user_emb=eu.float().cpu(), item_emb=ei.float().cpu(),
            text_map=None if text_map is None else text_map.cpu(), history=self.history,
            test=test, best_epoch=best_epoch,
            timings={"total_seconds": round(train_seconds, 3),
                     "eval_seconds": round(eval_seconds, 3),
                     "device": str(self.device)},
        )
