"""One training run as the command line does it: train with validation-driven early stopping
(when the graph has a validation split), then score the test split once.

The one place where training and evaluation meet: ``graphrec.train`` never imports
``graphrec.eval``; this module hands the trainer its evaluation callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from graphrec.artifacts.graph_dir import GraphData
from graphrec.data.split import TEST, VALID
from graphrec.eval.context import EvalContext
from graphrec.train.config import TrainConfig
from graphrec.train.trainer import Trainer, TrainResult


def train_model(graph: GraphData, cfg: TrainConfig | None = None, *,
                trainer: Trainer | None = None, checkpoint: Path | None = None,
                resume: bool = False, progress_factory: Callable | None = None) -> TrainResult:
    """Train on ``graph`` with ``cfg`` (or continue the given ``trainer``): validation every
    ``cfg.eval_every`` epochs on the graph's validation split, when it has one, choosing the
    epoch; test metrics once at the end, when it has a test split (``result.test``)."""
    trainer = trainer or Trainer(graph, cfg or TrainConfig())
    ctx = EvalContext.from_graph(graph, trainer.cfg.ks, trainer.device)
    validate = ctx.validator(VALID) if ctx.has_targets(VALID) else None
    test = ctx.validator(TEST) if ctx.has_targets(TEST) else None
    return trainer.fit(validate, test, checkpoint=checkpoint, resume=resume,
                       progress_factory=progress_factory)
