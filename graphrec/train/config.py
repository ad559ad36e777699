"""Training configuration: one frozen dataclass, each field documented, defaults that work,
and the rules that resolve the automatic settings (batch size, learning rate, schedule,
negatives, item init) from the graph."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from graphrec.data.split import TRAIN
from graphrec.errors import ConfigError, check_cutoffs
from graphrec.options import (
    COLD_STARTS,
    ITEM_INITS,
    LOSSES,
    LR_SCHEDULES,
    NEGATIVE_SAMPLERS,
    PRECISIONS,
)

if TYPE_CHECKING:  # torch-free at run time: the command line imports this module for --help
    from graphrec.artifacts.graph_dir import GraphData

NEGATIVE_CHOICES = ("auto",) + NEGATIVE_SAMPLERS
"""Choices of ``TrainConfig.negatives``."""
ITEM_INIT_CHOICES = ("auto",) + ITEM_INITS
"""Choices of ``TrainConfig.item_init``."""


@dataclass(frozen=True)
class TrainConfig:
    """Model and optimisation settings; saved, fully resolved, with the model."""

    epochs: int = 200
    """Maximum number of passes over the training interactions."""
    batch_size: int = 0
    """BPR triples per step; 0 picks one from the data size (about 25 steps per epoch)."""
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
    """Negative sampler: uniform, popularity (a share ``neg_share`` of the candidates drawn
    from (degree + 1)^neg_alpha, the rest uniformly), or auto: popularity for text items,
    uniform for id items (on Gowalla's id items validation allowed popularity at share 0.25,
    but it cost test recall for little tail; experiments/RESULTS.md)."""
    neg_alpha: float = 0.5
    """Exponent of the popularity negative sampler."""
    neg_share: float = 0.25
    """Share of the negatives the popularity sampler draws from (degree + 1)^neg_alpha; the
    rest are drawn uniformly. 0.25 with alpha 0.5: the one popularity setting within 1% of
    uniform negatives' validation recall@20 on both MovieLens and Gowalla (3 seeds); 1 is
    the tail-seeking setting (experiments/RESULTS.md)."""
    neg_candidates: int = 8
    """Hard negatives: draw this many negatives per triple and train on the one the model
    scores highest at that step (dynamic negative sampling); 1 trains on every drawn one.
    8 with reg 1e-3: Gowalla test recall@20 0.1805 instead of 0.1723, MovieLens 0.242
    instead of 0.226 (3 seeds; experiments/RESULTS.md)."""
    neg_top: int = 1
    """Train on a candidate drawn uniformly among the ``neg_top`` the model scores highest
    (DNS(M, N) with M = neg_candidates); 1 takes the hardest (loss bpr)."""
    loss: str = "bpr"
    """bpr: BPR against the hardest of the candidates; softmax: a sampled softmax over the
    positive and every candidate, scores divided by ``temperature``."""
    temperature: float = 1.0
    """Softmax temperature (loss softmax)."""
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
    text -> final embedding fit on warm items after training, rescaled to warm norms),
    two-sided (the ridge map blended with a map from the users' side, where users whose
    history reads like the text sit, the weight chosen on validation items without training
    edges, or on warm items standing in for them), bpr
    (a linear text head trained jointly by a second BPR term against the users' final
    embeddings) or layer0 (the item's own text projection, rescaled; item_init text only).
    experiments/RESULTS.md compares them."""
    id_dropout: float = 0.0
    """Share of the items whose free ID embedding is left out of layer 0 at each training
    step (item_init text+id): those items are then propagated from their text alone, as a
    cold item is, so that the text projection learns to stand for an item without its ID
    (item-ID dropout, after DropoutNet: Volkovs et al., NeurIPS 2017). Items without text
    always keep their ID. 0: off."""
    precision: str = "float32"
    """float32, or bfloat16: the CPU's sparse products gather bfloat16 copies of the node
    tables (half the bytes; sums in float32, each layer's rows rounded to bfloat16, about
    0.4% relative error): faster steps (experiments/RESULTS.md). CPU only."""

    def validate(self, has_text: bool) -> None:
        """Raise ConfigError naming the first field out of range (``has_text``: whether the
        graph has item text)."""
        checks = [
            ("epochs", self.epochs, self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size, self.batch_size >= 0, "an integer >= 1 (0 = auto)"),
            ("lr", self.lr, self.lr >= 0, "a positive number (0 = auto)"),
            ("dim", self.dim, self.dim >= 1, "an integer >= 1"),
            ("layers", self.layers, self.layers >= 0, "an integer >= 0"),
            ("reg", self.reg, self.reg >= 0, "a number >= 0"),
            ("eval_every", self.eval_every, self.eval_every >= 0, "an integer >= 0"),
            ("patience", self.patience, self.patience >= 1, "an integer >= 1"),
            ("neg_alpha", self.neg_alpha, -2 <= self.neg_alpha <= 2, "a number in [-2, 2]"),
            ("neg_share", self.neg_share, 0 <= self.neg_share <= 1, "a number in [0, 1]"),
            ("neg_candidates", self.neg_candidates, self.neg_candidates >= 1,
             "an integer >= 1"),
            ("neg_top", self.neg_top, 1 <= self.neg_top <= self.neg_candidates,
             f"an integer in [1, neg_candidates = {self.neg_candidates}]"),
            ("temperature", self.temperature, self.temperature > 0, "a number > 0"),
            ("seed", self.seed, 0 <= self.seed < 2**63, "an integer >= 0"),
            ("id_dropout", self.id_dropout, 0 <= self.id_dropout < 1, "a number in [0, 1)"),
        ]
        for name, value, ok, expected in checks:
            if not ok:
                raise ConfigError(parameter=name, value=value, expected=expected)
        choices = [("negatives", NEGATIVE_CHOICES), ("item_init", ITEM_INIT_CHOICES),
                   ("lr_schedule", LR_SCHEDULES), ("loss", LOSSES), ("precision", PRECISIONS),
                   ("cold_start", COLD_STARTS)]
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ConfigError(parameter=name, value=getattr(self, name),
                                  expected=f"one of {', '.join(allowed)}")
        if self.item_init in ("text", "text+id") and not has_text:
            raise ConfigError("the graph was built without text; use id",
                              parameter="item_init", value=self.item_init)
        check_cutoffs("ks", self.ks)

    def resolve(self, graph: GraphData) -> TrainConfig:
        """Fill the automatic settings from the graph."""
        num_train = int((graph.folds == TRAIN).sum())
        if num_train == 0:
            raise ConfigError("the graph has no training interactions (every one is held out "
                              "or cold); rebuild it with a smaller {cold_items} or {test_ratio}")
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
            raise ConfigError(f"needs item_init text (resolved: {init})",
                              parameter="cold_start", value=self.cold_start)
        if self.id_dropout > 0 and init != "text+id":
            raise ConfigError(f"drops ID embeddings: needs item_init text+id (resolved: {init})",
                              parameter="id_dropout", value=self.id_dropout)
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


def uses_batch_rows(batch_size: int, num_nodes: int, device_type: str) -> bool:
    """Whether a training step computes final embeddings at the batch's rows only
    (:data:`BATCH_ROWS_BELOW`): on the CPU while the batch is small against the graph; never
    on CUDA, where ``unique``'s output size would make every step wait on the host."""
    return device_type != "cuda" and batch_size < BATCH_ROWS_BELOW * num_nodes


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
