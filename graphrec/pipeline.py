"""Runs that bring layers together. Training as the command line does it: train with
validation-driven early stopping (when the graph has a validation split), then score the
test split once; ``graphrec.train`` never imports ``graphrec.eval``, this module hands the
trainer its evaluation callbacks. Updates: grow the graph, fold in, optionally fine-tune
(serve/ folds in but never imports the trainer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from graphrec.artifacts.graph_dir import GraphData, load_graph, save_graph
from graphrec.artifacts.model_dir import read_model_config, save_model
from graphrec.build import Growth, file_sha256, grow_graph, read_update
from graphrec.data.io import RawInteractions
from graphrec.data.split import TEST, TRAIN, VALID
from graphrec.errors import ConfigError
from graphrec.eval.context import EvalContext
from graphrec.fsio import resolve_version
from graphrec.serve.pending import PendingLog
from graphrec.serve.update import SELF_SHIFT, FoldedIn, fold_in_model, graph_position
from graphrec.train.config import TrainConfig
from graphrec.train.trainer import Trainer, TrainResult

TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


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


FINE_TUNE_OLD_RATIO = 4.0
"""Old interactions sampled per new one in a fine-tune's epochs (a seeded sample of the
training interactions the model had before): replaying old interactions keeps the model from
drifting towards the new ones only (catastrophic forgetting, as in GraphSAIL's and
replay-based incremental recommenders). Chosen on the per-user validation stream of
experiments/online_updates.py (606 users; 1 epoch: replay 4 0.1636 against replay 1 0.1600,
fold-in alone 0.1567); the time stream's validation block (15 users) preferred 1, within
its noise."""


@dataclass(frozen=True)
class Updated:
    """What :func:`update_model` did."""

    growth: Growth | None
    """What the batch added to the graph (None: no batch given)."""
    folded: FoldedIn
    fine_tuned: int
    """Fine-tune epochs run (0: none)."""
    version: str | None
    """The model version now current (None when nothing changed)."""
    seconds: float


def update_model(graph_dir: str | Path, model_dir: str | Path,
                 interactions: str | Path | None = None, items: str | Path | None = None,
                 fine_tune: int = 0, old_ratio: float = FINE_TUNE_OLD_RATIO,
                 cache_dir: str | Path | None = None, device: str | None = None,
                 raw: RawInteractions | None = None, record: dict | None = None,
                 pending: PendingLog | None = None, lr_scale: float = 1.0,
                 self_shift: bool = SELF_SHIFT) -> Updated:
    """``graphrec update``: append the batch (``interactions`` / ``items`` files, read with
    the graph's column settings, or ``raw`` already read) to the graph, publish it, fold the
    new interactions into the model and publish it; then, with ``fine_tune`` > 0, continue
    BPR training for that many epochs over the new interactions and ``old_ratio`` times as
    many sampled old ones, and publish that too. A model that is behind its graph (an update
    that stopped after the graph was published) is brought up to it first. Callers hold the
    work directory's lock. ``pending``: also take the service's acknowledged interactions
    from this log (removed from it once the update has published). ``self_shift``: see
    :func:`graphrec.serve.update.fold_in_model`; ``lr_scale``: the fine-tune's learning
    rate as a multiple of the model's."""
    if pending is None:
        return _update(graph_dir, model_dir, interactions, items, fine_tune, old_ratio,
                       cache_dir, device, raw, record, lr_scale, self_shift)
    with pending.take() as taken:
        if taken is not None:
            raw = taken if raw is None else _concat(raw, taken)
            record = {**(record or {}), "pending": len(taken)}
        return _update(graph_dir, model_dir, interactions, items, fine_tune, old_ratio,
                       cache_dir, device, raw, record, lr_scale, self_shift)


def _concat(a: RawInteractions, b: RawInteractions) -> RawInteractions:
    """Two batches as one (a batch without ratings passes any rating filter)."""
    ratings = None
    if a.ratings is not None or b.ratings is not None:
        ratings = np.concatenate([x.ratings if x.ratings is not None
                                  else np.full(len(x), np.inf) for x in (a, b)])
    return RawInteractions(np.concatenate([a.users, b.users]),
                           np.concatenate([a.items, b.items]), ratings, source=a.source)


def _update(graph_dir, model_dir, interactions, items, fine_tune, old_ratio, cache_dir, device,
            raw, record, lr_scale, self_shift) -> Updated:
    t0 = time.perf_counter()
    graph_src, _ = resolve_version(graph_dir)
    graph = load_graph(graph_src)
    growth = None
    text = None
    if interactions is not None or items is not None:
        raw_file, text = read_update(graph, interactions, items)
        if raw_file is not None:
            raw = raw_file if raw is None else _concat(raw_file, raw)
    if raw is not None or text is not None:
        record = {**(record or {}), **_sources(interactions, items)}
        grown, growth = grow_graph(graph, raw, text, record, cache_dir, device)
        if growth.interactions or growth.items:
            save_graph(grown, graph_dir, graph_src, same_users=not growth.users,
                       same_items=not growth.items)
            graph = grown
    src, _ = resolve_version(model_dir)
    start = graph_position(read_model_config(src), graph, Path(model_dir))
    folded = fold_in_model(model_dir, graph, record, self_shift)
    epochs = 0
    if fine_tune > 0 and start is not None:
        fine_tune_model(model_dir, graph, start, fine_tune, old_ratio, lr_scale=lr_scale,
                        device=device)
        epochs = fine_tune
    return Updated(growth, folded, epochs, resolve_version(model_dir)[1] if start is not None
                   else None, time.perf_counter() - t0)


def _sources(*paths: str | Path | None) -> dict:
    """``{"interactions": path, "interactions_sha256": ..., ...}`` of the files given."""
    out = {}
    for name, p in zip(("interactions", "items"), paths, strict=True):
        if p is not None:
            out[name] = str(Path(p).resolve())
            out[f"{name}_sha256"] = file_sha256(p)
    return out


def fine_tune_model(model_dir: str | Path, graph: GraphData, start: int, epochs: int,
                    old_ratio: float = FINE_TUNE_OLD_RATIO, seed: int = 0,
                    lr_scale: float = 1.0, device: str | None = None) -> TrainResult:
    """Continue training the model directory's current weights on ``graph`` for ``epochs``
    epochs over its interactions from row ``start`` on (the new ones) and ``old_ratio`` times
    as many sampled training interactions before it; publish the result as a new version
    whose ``built_from`` extends the folded one's. The learning rate is the model's own
    times ``lr_scale``, decayed to 0 over the fine-tune (cosine); no validation (a fine-tune
    is short and the update has no held-out data of its own). ``device``: where it trains
    (None: the model's own setting)."""
    import torch

    if epochs < 1:
        raise ConfigError(parameter="fine_tune", value=epochs, expected="an integer >= 1")
    if old_ratio < 0:
        raise ConfigError(parameter="old_ratio", value=old_ratio, expected="a number >= 0")
    if not lr_scale > 0:
        raise ConfigError(parameter="lr_scale", value=lr_scale, expected="a number > 0")
    src, version = resolve_version(model_dir)
    config = read_model_config(src)
    train_cfg = {k: v for k, v in config["train"].items() if k in TRAIN_FIELDS}
    cfg = TrainConfig(**{**train_cfg, "ks": tuple(train_cfg.get("ks", (20,))),
                         "epochs": epochs, "eval_every": 0, "lr_schedule": "cosine",
                         "seed": seed, "lr": train_cfg["lr"] * lr_scale,
                         "device": device or train_cfg.get("device", "auto")})
    new = np.flatnonzero(graph.folds[start:] == TRAIN) + start
    old = np.flatnonzero(graph.folds[:start] == TRAIN)
    rng = np.random.default_rng(seed)
    take = rng.choice(old, size=min(len(old), int(round(old_ratio * len(new)))), replace=False)
    rows = np.concatenate([new, take])
    trainer = Trainer(graph, cfg, focus=(graph.users[rows], graph.items[rows]))
    state = torch.load(src / "model.pt", map_location=trainer.device, weights_only=True)
    trainer.model.load_state_dict(state)
    result = trainer.fit()
    built = dict(config.get("built_from") or {})
    built["updates"] = [*built.get("updates", []), {
        "method": "fine-tune", "from_version": version, "epochs": epochs,
        "old_ratio": old_ratio, "lr": cfg.lr, "interactions": int(len(new)),
        "replayed": int(len(take)),
        "seconds": result.timings.get("total_seconds"),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]
    # config.json keeps the training run's settings (a later fine-tune scales the same lr).
    original = TrainConfig(**{**train_cfg, "ks": tuple(train_cfg.get("ks", (20,)))})
    save_model(replace(result, config=original), graph, model_dir, built_from=built)
    return result
