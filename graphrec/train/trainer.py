"""The training loop: BPR steps over the graph, epochs, validation through a callback with
early stopping and best-epoch restore, checkpoints.

Evaluation is not the trainer's business: :meth:`Trainer.fit` takes ``validate`` and
``test`` callbacks ``(user_emb, item_emb) -> metrics`` (``graphrec.eval.EvalContext``
makes them; ``graphrec.pipeline.train_model`` wires the two together).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphrec.artifacts.graph_dir import GraphData
from graphrec.data.split import VALID
from graphrec.device import resolve_device, retain_freed_memory
from graphrec.distributed import SOLO, Group
from graphrec.errors import ConfigError
from graphrec.graph import propagation_adjacency
from graphrec.model.coldstart import (
    PlacementData,
    place_cold_items,
    text_map_for,
    two_sided_map,
)
from graphrec.model.foldin import foldin_arrays
from graphrec.model.lightgcn import TextLightGCN
from graphrec.model.losses import bpr_loss, softmax_loss, text_head_loss
from graphrec.train.checkpoint import check_resumable, load_checkpoint, save_checkpoint
from graphrec.train.config import TrainConfig, uses_batch_rows
from graphrec.train.sampling import BPRSampler, hardest

log = logging.getLogger(__name__)

Metrics = dict
EvalFn = Callable[[Tensor, Tensor], Metrics]
"""``(user_emb [U, d], item_emb [I, d]) -> metrics``: an evaluation callback."""


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
    """[t, d] map from text embedding to final item embedding, or None."""
    history: list[dict] = field(default_factory=list)
    """One row per epoch: loss, seconds and, when validated, the validation metrics."""
    test: dict = field(default_factory=dict)
    """Test metrics, when a test callback was given."""
    best_epoch: int | None = None
    """The restored epoch (best validation ``monitor``), or None without validation."""
    timings: dict = field(default_factory=dict)
    cold_start: dict = field(default_factory=dict)
    """How the two-sided design chose its weight (ColdChoice as a dict); empty otherwise."""
    foldin: dict = field(default_factory=dict)
    """What later fold-ins read (:func:`graphrec.model.foldin.foldin_arrays`): every node's
    layers 0..K-1 and the self maps; numpy arrays, empty for a model without layers."""


def run_identity(graph: GraphData, cfg: TrainConfig) -> bytes:
    """What every process of a group must agree on: the graph's fingerprint and the
    resolved settings."""
    return json.dumps([graph.meta.get("fingerprint"), asdict(cfg)], sort_keys=True,
                      default=str).encode()


@torch.inference_mode()
def model_foldin_arrays(model: TextLightGCN, adj, warm: Tensor, cfg: TrainConfig,
                        user_final: Tensor, item_final: Tensor) -> dict:
    """:func:`foldin_arrays` of ``model`` over ``adj`` (on the model's device): an item
    without training edges (``warm`` False) keeps only its text projection as layer 0, its
    free embedding was never trained. Empty for a model without layers."""
    if cfg.layers == 0:
        return {}
    model.eval()
    xi0 = model.item_layer0().clone()
    cold = ~warm.to(xi0.device)
    base = None
    if model.text_proj is not None:
        base = model.text_proj(model.text_emb)
        xi0[cold] = base[cold]
    elif model.item_emb is not None:
        xi0[cold] = 0.0
    out = foldin_arrays(model.user_emb.weight, xi0, adj, cfg.layers, user_final, item_final,
                        base, cfg.ridge)
    if model.text_proj is not None:
        out["item_text_proj"] = model.text_proj.weight.T.detach().float().cpu().numpy()
    return out


def cosine_schedule(total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor at step ``s``: 0.5 (1 + cos(pi min(s / total, 1))), from 1 to 0."""
    total = max(total_steps, 1)
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step / total, 1.0)))


class Trainer:
    """Holds everything one training run needs on its device."""

    cold_choice = None
    """The two-sided design's last choice (graphrec.model.coldstart.ColdChoice), or None."""

    def __init__(self, graph: GraphData, cfg: TrainConfig,
                 focus: tuple[np.ndarray, np.ndarray] | None = None, group: Group = SOLO):
        """``focus``: (users, items) [n] training interactions that epochs go over (a
        fine-tune's new interactions and its sample of old ones); None: all of them.
        Propagation and the negatives' exclusions always use every training interaction.

        ``group``: the processes training together (data-parallel, graphrec.distributed).
        Every process holds the whole model, draws the same epoch of triples from the same
        seeded generator and trains on its share of each batch; the gradients are summed
        over the processes before every step, weighted so that the step is the one a single
        process takes on the whole batch. Evaluation is shared out by users."""
        cfg.validate(graph.text_emb is not None)
        self.cfg = cfg = cfg.resolve(graph)
        self.graph = graph
        self.group = group
        if not group.solo:
            if cfg.neg_top > 1:
                raise ConfigError("draws per process would differ from one process's; use 1 "
                                  "when training on several processes", parameter="neg_top",
                                  value=cfg.neg_top)
            if focus is not None:
                raise ConfigError("a fine-tune runs in one process", parameter="nproc",
                                  value=group.world)
            group.check_same("graph and training settings", run_identity(graph, cfg))
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and not group.solo:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if cfg.precision != "float32" and self.device.type != "cpu":
            raise ConfigError(f"for the CPU's products only; use float32 on {self.device.type}",
                              parameter="precision", value=cfg.precision)
        if self.device.type == "cpu":
            retain_freed_memory()  # no fresh zero-filled pages for every step's buffers
        u, i = graph.train
        # On the CPU, nodes reordered where the threads' shares of a product would be uneven
        # (ids in popularity order give the first thread the popular rows).
        threads = torch.get_num_threads() if self.device.type == "cpu" else 1
        self.adj = propagation_adjacency(u, i, graph.num_users, graph.num_items, threads,
                                         getattr(torch, cfg.precision)).to(self.device)
        self.batch_rows = uses_batch_rows(cfg.batch_size, graph.num_users + graph.num_items,
                                          self.device.type)
        self.degree = torch.as_tensor(graph.train_item_degree())
        self.warm = self.degree > 0
        text = torch.as_tensor(graph.text_emb) if graph.text_emb is not None else None
        self.text_emb = text.to(self.device) if text is not None else None
        self.textless = None  # items ID dropout never drops: those without text
        if cfg.id_dropout > 0:
            self.textless = (self.text_emb.abs().sum(1) == 0)
        init_gen = torch.Generator().manual_seed(cfg.seed)
        self.model = TextLightGCN(
            graph.num_users, graph.num_items, cfg.dim, cfg.layers,
            text_emb=text if cfg.item_init != "id" else None, item_init=cfg.item_init,
            generator=init_gen,
            text_head_dim=text.shape[1] if cfg.cold_start == "bpr" and text is not None else 0,
        ).to(self.device)
        self._start_run(u, i, focus)

    def _start_run(self, u: np.ndarray, i: np.ndarray,
                   focus: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """The optimizer over ``self.model``, the sampler over the training pairs (u, i),
        the run's generator, learning-rate schedule and counters."""
        cfg = self.cfg
        # The fused kernel updates each parameter in one pass instead of one pass per Adam
        # term (about 3x less time for the optimizer step on Gowalla, CPU).
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, fused=True)
        self.sampler = BPRSampler(torch.as_tensor(u), torch.as_tensor(i), self.graph.num_items,
                                  cfg.negatives, cfg.neg_alpha, device=self.device,
                                  share=cfg.neg_share)
        if focus is not None:
            self.sampler.focus(torch.as_tensor(focus[0]), torch.as_tensor(focus[1]))
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed + 1)
        self.total_steps = cfg.epochs * self.sampler.num_batches(cfg.batch_size)
        self.scheduler = None
        if cfg.lr_schedule == "cosine":  # decays per step over the configured epochs
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, cosine_schedule(self.total_steps))
        self.steps_done = 0
        self.history: list[dict] = []
        self.epoch = 0
        self.best: tuple[float, int, dict] | None = None  # (metric, epoch, state dict)
        self.bad_evals = 0

    # -- one step, one epoch ---------------------------------------------------------------
    def train_step(self, users: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
        """One Adam step on a batch of BPR triples; returns (loss, BPR part), detached.

        users, pos: [B]; neg: [B], or [B, K] candidates of which the hardest is trained on.
        In a group, this process trains on its share of the batch and the step is the whole
        batch's (:meth:`_sum_gradients`).
        """
        self.optimizer.zero_grad(set_to_none=True)
        size = len(users)
        id_keep = None
        if self.cfg.id_dropout > 0:  # drawn before the share: the same in every process
            id_keep = torch.rand(self.graph.num_items, device=self.device,
                                 generator=self.generator) >= self.cfg.id_dropout
            id_keep |= self.textless  # an item without text has only its ID
        if not self.group.solo:
            lo, hi = self.group.share(size)
            users, pos, neg = users[lo:hi], pos[lo:hi], neg[lo:hi]
            if hi == lo:  # a last batch smaller than the group: nothing to do here
                return self._sum_gradients(None, None, 0.0)
        if self.batch_rows:
            # Final embeddings of the batch's rows only (model.forward_batch): the layer sums
            # are gathered at these rows, never formed in full.
            bu, u_local = torch.unique(users, return_inverse=True)
            bi, i_local = torch.unique(torch.cat([pos, neg.flatten()]), return_inverse=True)
            p_local, n_local = i_local[: len(pos)], i_local[len(pos):].view(neg.shape)
            eu, ei, xu0, xi0 = self.model.forward_batch(self.adj, bu, bi, id_keep)
        else:
            # Every row: no torch.unique, whose output size would make a CUDA step wait on
            # the host, and cheaper on the CPU than two sorts once a batch names most nodes.
            # Same loss and gradients.
            eu, ei, xu0, xi0 = self.model(self.adj, id_keep)
            u_local, p_local, n_local = users, pos, neg
        cfg = self.cfg
        if cfg.loss == "softmax":
            n_local = n_local.view(len(users), -1)
            loss, bpr = softmax_loss(eu, ei, xu0, xi0, u_local, p_local, n_local, cfg.reg,
                                     cfg.temperature)
            neg = neg.view(len(users), -1)[:, 0]  # the text head's negative
        else:
            if neg.dim() == 2:
                pick = hardest(eu, u_local, ei, n_local, top=cfg.neg_top,
                               generator=self.generator).unsqueeze(1)
                n_local = n_local.gather(1, pick).squeeze(1)
                neg = neg.gather(1, pick).squeeze(1)
            loss, bpr = bpr_loss(eu, ei, xu0, xi0, u_local, p_local, n_local, cfg.reg)
        if self.model.text_head is not None:  # cold_start "bpr"
            head = self.model.text_head
            loss = loss + text_head_loss(eu.index_select(0, u_local).detach(),
                                         head(self.text_emb[pos]), head(self.text_emb[neg]),
                                         self.cfg.reg)
        if not self.group.solo:
            return self._sum_gradients(loss, bpr, len(users) / size)
        loss.backward()
        return self._step(loss.detach(), bpr)

    def _step(self, loss: Tensor, bpr: Tensor) -> tuple[Tensor, Tensor]:
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.steps_done += 1
        return loss, bpr

    def _sum_gradients(self, loss: Tensor | None, bpr: Tensor | None,
                       weight: float) -> tuple[Tensor, Tensor]:
        """Back-propagate ``weight`` (this process's share of the batch) times the loss of
        its share, sum the gradients and the two losses over the group in one collective,
        and step: every process takes the step one process would take on the whole batch."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if loss is not None:
            (loss * weight).backward()
        parts = [p.grad.flatten() if p.grad is not None else torch.zeros(
            p.numel(), dtype=p.dtype, device=p.device) for p in params]
        zero = torch.zeros(1, device=self.device)
        parts += [(loss.detach() * weight).reshape(1) if loss is not None else zero,
                  (bpr * weight).reshape(1) if bpr is not None else zero]
        flat = self.group.all_reduce_(torch.cat([x.float() for x in parts]), "gradient sum")
        at = 0
        for p in params:
            p.grad = flat[at:at + p.numel()].view_as(p).to(p.dtype)
            at += p.numel()
        return self._step(flat[at], flat[at + 1])

    def batches(self):
        """One epoch of (users, pos, neg) batches as this run trains on them: the configured
        batch size and negative candidates (neg [B, K] when K > 1), from the run's generator."""
        return self.sampler.epoch(self.cfg.batch_size, self.generator, self.cfg.neg_candidates)

    def train_epoch(self, progress: Callable | None = None) -> dict:
        """One pass over the training interactions; returns the epoch's history row."""
        self.model.train()
        total = torch.zeros((), device=self.device)
        bpr_total = torch.zeros((), device=self.device)
        steps = 0
        t0 = time.perf_counter()
        for batch in self.batches():
            loss, bpr = self.train_step(*batch)
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

    # -- embeddings ------------------------------------------------------------------------
    @torch.inference_mode()
    def propagate(self) -> tuple[Tensor, Tensor]:
        """Final user [U, d] and item [I, d] embeddings on the device as propagation gives
        them (eval mode, inference mode), before any cold placement: an item without
        training interactions keeps its own layer-0 row / (layers + 1). :meth:`embeddings`
        places those items; this is for callers that place them another way."""
        self.model.eval()
        eu, ei, _, _ = self.model(self.adj)
        return eu, ei

    @torch.inference_mode()
    def embeddings(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """Final user [U, d] and item [I, d] embeddings on the device, with items that have
        no training interaction placed from their text (zero without text), and the map."""
        eu, ei = self.propagate()
        warm = self.warm.to(self.device)
        text_map = None
        if self.text_emb is not None and warm.any():
            text_map = self.text_map(self.cfg.cold_start, eu, ei)
        return eu, place_cold_items(ei, warm, self.text_emb, text_map), text_map

    def text_map(self, design: str, user_final: Tensor, item_final: Tensor) -> Tensor:
        """The ``design``'s text map (graphrec.model.coldstart) on final embeddings as
        :meth:`propagate` gives them; the two-sided design's choice is kept in
        ``cold_choice``."""
        warm = self.warm.to(item_final.device)
        if design != "two-sided":
            return text_map_for(design, self.model, self.text_emb, item_final, warm,
                                self.cfg.ridge)
        tu, ti = self.graph.train
        valid = self.graph.fold_pairs(VALID) if self.graph.has_valid() else None
        data = PlacementData(
            user_final, (torch.as_tensor(tu, dtype=torch.long),
                         torch.as_tensor(ti, dtype=torch.long)),
            None if valid is None else tuple(torch.as_tensor(x, dtype=torch.long)
                                             for x in valid), self.cfg.seed)
        text_map, self.cold_choice = two_sided_map(self.model, self.text_emb, item_final, warm,
                                                   data, self.cfg.ridge)
        return text_map

    @torch.inference_mode()
    def foldin_arrays(self, user_final: Tensor, item_final: Tensor) -> dict:
        """:func:`model_foldin_arrays` of the current weights (final embeddings as
        propagation gives them)."""
        return model_foldin_arrays(self.model, self.adj, self.warm, self.cfg, user_final,
                                   item_final)

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict:
        """Everything a resumed run needs, as one plain dict."""
        return {
            "config": asdict(self.cfg), "graph": self.graph.meta.get("fingerprint"),
            "epoch": self.epoch, "history": self.history,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "generator": self.generator.get_state(), "bad_evals": self.bad_evals,
            "steps_done": self.steps_done,
            "best": None if self.best is None else
            {"metric": self.best[0], "epoch": self.best[1], "model": self.best[2]},
        }

    def load_state(self, state: dict) -> None:
        check_resumable(state, self.cfg, self.graph.meta.get("fingerprint"))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.epoch, self.history = state["epoch"], state["history"]
        self.bad_evals = state["bad_evals"]
        self.steps_done = state.get("steps_done", 0)
        if self.scheduler is not None:
            if state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            else:  # a checkpoint from before the scheduler: its step count says where
                self.scheduler.last_epoch = self.steps_done - 1
                with warnings.catch_warnings():  # "step() before optimizer.step()": on purpose
                    warnings.simplefilter("ignore", UserWarning)
                    self.scheduler.step()
        b = state["best"]
        self.best = None if b is None else (b["metric"], b["epoch"], b["model"])

    def save_checkpoint(self, path: Path) -> None:
        """Write :meth:`state` to ``path`` (the leader writes; in a group, every process
        calls this)."""
        if self.group.leader:
            save_checkpoint(self.state(), path)

    def load_checkpoint(self, path: Path) -> None:
        self.load_state(load_checkpoint(path, self.device))

    # -- the run ---------------------------------------------------------------------------
    def fit(self, validate: EvalFn | None = None, test: EvalFn | None = None, *,
            on_epoch: Callable[[dict], bool | None] | None = None,
            checkpoint: Path | None = None, resume: bool = False,
            progress_factory: Callable | None = None) -> TrainResult:
        """Train up to ``cfg.epochs`` epochs.

        ``validate``: called every ``cfg.eval_every`` epochs (and at the last) with the
        current final embeddings; its ``cfg.monitor`` decides early stopping (``patience``
        validations without a gain) and which epoch's weights are restored at the end.
        None: no validation, the run has its fixed length. ``test``: called once, on the
        final embeddings. ``on_epoch(row)``: called after every epoch with its history row
        while the model holds that epoch's weights (``embeddings()`` gives them); what it adds
        to ``row`` stays in the history, and a true return ends the run after this epoch (a
        time budget, a curve that selects nothing, logging). ``checkpoint``: written after
        every epoch; ``resume`` continues from it. ``progress_factory(total_steps, epoch)``:
        a progress bar per epoch.
        """
        cfg = self.cfg
        if resume:
            if checkpoint is None:
                raise ConfigError("no checkpoint path given", parameter="resume")
            self.load_checkpoint(checkpoint)
            log.info("resumed from %s at epoch %d", checkpoint, self.epoch)
        validating = validate is not None and cfg.eval_every > 0
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
            if validating and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs):
                t0 = time.perf_counter()
                eu, ei, _ = self.embeddings()
                metrics = validate(eu, ei)
                eval_seconds += time.perf_counter() - t0
                row["valid"] = {k: round(v, 6) for k, v in metrics.items()}
                stopped = self._track_best(metrics[cfg.monitor])
            self.history.append(row)
            log.info("epoch=%d loss=%.5f train_seconds=%.2f%s", row["epoch"], row["loss"],
                     row["train_seconds"],
                     "".join(f" {k}={v:.4f}" for k, v in row.get("valid", {}).items()
                             if "@" in k and k.split("@")[0] in ("recall", "ndcg")))
            if checkpoint is not None:
                self.save_checkpoint(checkpoint)
            if on_epoch is not None and on_epoch(row):
                log.info("the epoch callback ended the run at epoch %d", self.epoch)
                break
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
        foldin = self.foldin_arrays(*self.propagate())
        test_metrics = {}
        if test is not None:
            t0 = time.perf_counter()
            test_metrics = test(eu, ei)
            eval_seconds += time.perf_counter() - t0
        return TrainResult(
            model=self.model, config=cfg, user_emb=eu.float().cpu(), item_emb=ei.float().cpu(),
            text_map=None if text_map is None else text_map.cpu(), history=self.history,
            test=test_metrics, best_epoch=best_epoch, foldin=foldin,
            cold_start={} if self.cold_choice is None else asdict(self.cold_choice),
            timings={"total_seconds": round(train_seconds, 3),
                     "eval_seconds": round(eval_seconds, 3),
                     "device": str(self.device)},
        )

    def _track_best(self, score: float) -> bool:
        """Keep the weights of the best validation score so far; True when the run should
        stop (``patience`` validations in a row without a gain)."""
        if self.best is None or score > self.best[0]:
            self.best = (score, self.epoch, copy.deepcopy(
                {k: v.detach().cpu() for k, v in self.model.state_dict().items()}))
            self.bad_evals = 0
            return False
        self.bad_evals += 1
        return self.bad_evals >= self.cfg.patience
