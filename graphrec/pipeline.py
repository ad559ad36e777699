"""Runs that bring layers together. Training as the command line does it: train with
validation-driven early stopping (when the graph has a validation split), then score the
test split once; ``graphrec.train`` never imports ``graphrec.eval``, this module hands the
trainer its evaluation callbacks. Updates: grow the graph, fold in, optionally fine-tune
(serve/ folds in but never imports the trainer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from graphrec.artifacts.graph_dir import GraphData, load_graph, save_graph
from graphrec.artifacts.model_dir import (
    load_filter_arrays,
    model_kind,
    read_model_config,
    save_model,
)
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
    validate = ctx.validator(VALID, trainer.group) if ctx.has_targets(VALID) else None
    test = ctx.validator(TEST, trainer.group) if ctx.has_targets(TEST) else None
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
    return RawInteractions(np.concatenate([a.users.astype(str), b.users.astype(str)]),
                           np.concatenate([a.items.astype(str), b.items.astype(str)]), ratings,
                           source=a.source)


def _update(graph_dir, model_dir, interactions, items, fine_tune, old_ratio, cache_dir, device,
            raw, record, lr_scale, self_shift) -> Updated:
    t0 = time.perf_counter()
    if model_kind(read_model_config(resolve_version(model_dir)[0])) == "filter":
        raise ConfigError(f"model directory {model_dir} is a filter model: nothing to fold "
                          "in (it has no TextLightGCN layers); refit it on the grown graph "
                          "instead, its fitting takes seconds to minutes")
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
    kept = {}  # an ensemble's filter stays as fitted: its users are their training rows
    if model_kind(config) == "ensemble":
        kept = {"model": config["model"], "filter_arrays": load_filter_arrays(src)}
    save_model(replace(result, config=original), graph, model_dir, built_from=built, **kept)
    return result


CARVE_RATIO = 0.1
"""Share of each user's training interactions that the filter and ensemble runs hold
out as validation on a graph without a validation split (then refits on all of them)."""
FILTER_EXPONENTS = (0.3, 0.4, 0.5)
"""Degree exponents b of the filter's validation grid (GF-CF: 0.5; ChebyCF: about 0.4)."""
FILTER_ALPHAS = (0.3, 0.6, 1.0)
"""Weights of the filter's low-pass term in its validation grid."""
ENSEMBLE_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0)
"""Filter weights w of the ensemble's validation grid (0: TextLightGCN alone, 1: the filter)."""


def filter_ranks(num_users: int, num_items: int) -> tuple[int, ...]:
    """The filter's rank grid for a training matrix of this shape: 0 (linear filter only)
    and a quarter, half and all of k_max, the largest power of two up to half the smaller
    side, at least 8 and at most 1024 (MovieLens' 610 users: 64 / 128 / 256; Gowalla: 256 /
    512 / 1024, where validation chose 128 and 1024, experiments/RESULTS.md)."""
    side = min(num_users, num_items) // 2
    kmax = 1 << max(3, min(10, side.bit_length() - 1)) if side >= 8 else 0
    kmax = min(kmax, side)
    return (0,) if kmax == 0 else tuple(sorted({0, max(kmax // 4, 1), max(kmax // 2, 1),
                                                kmax}))


def carve_validation(graph: GraphData, ratio: float = CARVE_RATIO, seed: int = 0) -> GraphData:
    """``graph`` with a seeded ``ratio`` of each user's training interactions moved to the
    validation fold (every user keeps at least one training interaction)."""
    from graphrec.data.interactions import Interactions
    from graphrec.data.split import assign_folds

    rows = np.flatnonzero(graph.folds == TRAIN)
    fold = assign_folds(Interactions(graph.users[rows], graph.items[rows]), "random", ratio,
                        0.0, seed)
    folds = graph.folds.copy()
    folds[rows[fold == TEST]] = VALID
    return replace(graph, folds=folds)


def _better(a: dict, b: dict | None, monitor: str) -> bool:
    """Whether validation metrics ``a`` beat ``b`` on ``monitor`` (then recall@20)."""
    if b is None:
        return True
    return (a[monitor], a.get("recall@20", 0.0)) > (b[monitor], b.get("recall@20", 0.0))


@dataclass
class FilterFit:
    """A graph filter chosen on validation: the fitted filter, its settings' validation
    rows (``{"degree_exponent", "rank", "alpha", metrics...}``) and the seconds spent."""

    filter: object  # graphrec.model.filter.GraphFilter
    grid: list[dict]
    seconds: float


def choose_filter(train, valid, num_items: int, monitor: str = "ndcg@20",
                  ks: tuple[int, ...] = (20,), seed: int = 0, device=None,
                  log: Callable[[str], None] | None = None) -> FilterFit:
    """The graph filter of ``train`` (user CSR) with the settings of the grid
    (:data:`FILTER_EXPONENTS` x :func:`filter_ranks` x :data:`FILTER_ALPHAS`) that score
    best on ``valid`` (user CSR of held-out items, ``train`` masked) by ``monitor``: one SVD
    per exponent at the largest rank, one evaluation pass per exponent for all its ranks
    and alphas (``GraphFilter.score_grid``, ``evaluate_variants``)."""
    import torch

    from graphrec.eval.protocol import evaluate_variants
    from graphrec.model.filter import FilterConfig, GraphFilter

    t0 = time.perf_counter()
    device = torch.device(device or "cpu")
    ranks = filter_ranks(train.num_rows, num_items)
    settings = [(r, a) for r in ranks for a in FILTER_ALPHAS]
    grid, best, best_row = [], None, None
    for b in FILTER_EXPONENTS:
        t1 = time.perf_counter()
        full = GraphFilter(train, num_items, FilterConfig(rank=max(ranks), alpha=1.0,
                                                          degree_exponent=b, seed=seed), device)
        fit_s = time.perf_counter() - t1
        results = evaluate_variants(lambda u, f=full: f.score_grid(u, ranks, FILTER_ALPHAS),
                                    len(settings), train, valid, num_items, ks, device=device)
        for (rank, alpha), m in zip(settings, results, strict=True):
            if rank == 0 and alpha != FILTER_ALPHAS[0]:
                continue  # the linear filter alone: alpha plays no part
            row = {"degree_exponent": b, "rank": rank, "alpha": alpha if rank else 0.0,
                   **{k: round(v, 5) for k, v in m.items() if "@" in k}}
            grid.append(row)
            if _better(m, best_row, monitor):
                best, best_row = (full, rank, row["alpha"]), m
        if log:
            top = max((r for r in grid if r["degree_exponent"] == b), key=lambda r: r[monitor])
            log(f"filter b {b}: SVD at rank {max(ranks)} {fit_s:.1f} s; best rank "
                f"{top['rank']}, alpha {top['alpha']}: {monitor} {top[monitor]:.4f}")
    full, rank, alpha = best
    return FilterFit(full.with_settings(rank, alpha), grid, time.perf_counter() - t0)


def choose_weight(user_emb, item_emb, filter_, train, valid, num_items: int,
                  monitor: str = "ndcg@20", ks: tuple[int, ...] = (20,),
                  device=None) -> tuple[float, list[dict]]:
    """The ensemble weight of :data:`ENSEMBLE_WEIGHTS` that scores best on ``valid``
    (``train`` masked) by ``monitor``, and every weight's validation row; TextLightGCN's
    factors and the filter are both fitted without ``valid``."""
    import torch

    from graphrec.eval.protocol import evaluate_variants
    from graphrec.model.ensemble import blend

    device = torch.device(device or "cpu")
    user_emb, item_emb = user_emb.to(device), item_emb.to(device)

    def variants(users):
        lightgcn = user_emb[users] @ item_emb.T
        filtered = filter_.score(users).to(device)
        return [blend(lightgcn, filtered, w) for w in ENSEMBLE_WEIGHTS]

    results = evaluate_variants(variants, len(ENSEMBLE_WEIGHTS), train, valid, num_items, ks,
                                device=device)
    rows = [{"weight": w, **{k: round(v, 5) for k, v in m.items() if "@" in k}}
            for w, m in zip(ENSEMBLE_WEIGHTS, results, strict=True)]
    best = None
    for w, m in zip(ENSEMBLE_WEIGHTS, results, strict=True):
        if best is None or _better(m, best[1], monitor):
            best = (w, m)
    return best[0], rows


@dataclass
class ModelRun:
    """What :func:`train_filter` and :func:`train_ensemble` produced: the TextLightGCN
    result (None for a filter), the fitted filter, config.json's ``model`` section, and the
    test metrics of the model as saved; for an ensemble, ``parts`` holds the filter's own
    test metrics and fitting seconds (reported next to the blend, never used to choose)."""

    result: TrainResult | None
    filter: object
    model: dict
    test: dict
    seconds: float
    parts: dict = field(default_factory=dict)


def _selection_split(graph: GraphData, seed: int) -> tuple[GraphData, bool]:
    """(graph to choose settings on, whether it was carved): the graph itself when it has
    a validation split, else one with :data:`CARVE_RATIO` carved out."""
    if graph.has_valid():
        return graph, False
    return carve_validation(graph, CARVE_RATIO, seed), True


def _filter_settings(filter_) -> dict:
    return {"kind": "filter", **{k: getattr(filter_.cfg, k) for k in
                                 ("rank", "alpha", "degree_exponent", "niter", "oversample",
                                  "seed")}}


def train_filter(graph: GraphData, cfg: TrainConfig | None = None,
                 log: Callable[[str], None] | None = None) -> ModelRun:
    """The graph-filter run: the filter with settings chosen on
    validation (carved when the graph has none, then refitted on all training
    interactions); test scored once."""
    from graphrec.device import resolve_device
    from graphrec.model.filter import GraphFilter

    cfg = cfg or TrainConfig()
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    chooser, carved = _selection_split(graph, cfg.seed)
    fit = choose_filter(chooser.csr(TRAIN), chooser.csr(VALID), graph.num_items, cfg.monitor,
                        cfg.ks, cfg.seed, device, log)
    filter_ = fit.filter
    if carved:  # refit the chosen settings on every training interaction
        filter_ = GraphFilter(graph.csr(TRAIN), graph.num_items, fit.filter.cfg, device)
    ctx = EvalContext.from_graph(graph, cfg.ks, device)
    test = ctx.evaluate(TEST, score_fn=filter_.score) if ctx.has_targets(TEST) else {}
    model = {**_filter_settings(filter_), "selection": {
        "carved": carved, "ratio": CARVE_RATIO if carved else None, "monitor": cfg.monitor,
        "grid": fit.grid}}
    return ModelRun(None, filter_, model, test, time.perf_counter() - t0)


def train_ensemble(graph: GraphData, cfg: TrainConfig | None = None, *,
                   checkpoint: Path | None = None, resume: bool = False,
                   progress_factory: Callable | None = None,
                   log: Callable[[str], None] | None = None) -> ModelRun:
    """The ensemble run: TextLightGCN and the graph filter, blended with
    the weight that scores best on validation (:func:`choose_weight`), the filter's settings
    chosen on validation first. On a graph without a validation split both are fitted on a
    carved one for the choices (TextLightGCN with the schedule it would get on the whole
    graph, no early stopping), then trained again on all training interactions. Test scored
    once, for the blend as saved."""
    from graphrec.model.ensemble import EnsembleScorer
    from graphrec.model.filter import GraphFilter

    cfg = cfg or TrainConfig()
    t0 = time.perf_counter()
    chooser, carved = _selection_split(graph, cfg.seed)
    if carved:
        trainer = Trainer(chooser, replace(cfg, eval_every=0))
        if log:
            log(f"carved {CARVE_RATIO:.0%} of each user's training interactions as validation; "
                "TextLightGCN on the rest")
        chosen = trainer.fit(progress_factory=progress_factory)
    else:
        chosen = train_model(graph, cfg, checkpoint=checkpoint, resume=resume,
                             progress_factory=progress_factory)
    device = chosen.user_emb.device
    train, valid = chooser.csr(TRAIN), chooser.csr(VALID)
    t_filter = time.perf_counter()
    fit = choose_filter(train, valid, graph.num_items, cfg.monitor, cfg.ks, cfg.seed,
                        device, log)
    filter_seconds = time.perf_counter() - t_filter
    weight, weights = choose_weight(chosen.user_emb, chosen.item_emb, fit.filter, train, valid,
                                    graph.num_items, cfg.monitor, cfg.ks, device)
    if log:
        best = next(r for r in weights if r["weight"] == weight)
        log(f"ensemble weight {weight} on validation: {cfg.monitor} {best[cfg.monitor]:.4f} "
            f"(TextLightGCN alone {weights[0][cfg.monitor]:.4f}, filter alone "
            f"{weights[-1][cfg.monitor]:.4f})")
    result, filter_ = chosen, fit.filter
    if carved:
        if log:
            log("training both again on all training interactions")
        result = train_model(graph, cfg, checkpoint=checkpoint, resume=resume,
                             progress_factory=progress_factory)
        t_filter = time.perf_counter()
        filter_ = GraphFilter(graph.csr(TRAIN), graph.num_items, fit.filter.cfg, device)
        filter_seconds += time.perf_counter() - t_filter
    ctx = EvalContext.from_graph(graph, cfg.ks, device)
    test, parts = {}, {"filter_seconds": round(filter_seconds, 2)}
    if ctx.has_targets(TEST):
        scorer = EnsembleScorer(result.user_emb.to(ctx.device),
                                result.item_emb.to(ctx.device), filter_, weight)
        test = ctx.evaluate(TEST, score_fn=scorer.score)
        parts["filter_test"] = ctx.evaluate(TEST, score_fn=filter_.score)
    model = {"kind": "ensemble", "weight": weight,
             "filter": {k: v for k, v in _filter_settings(filter_).items() if k != "kind"},
             "selection": {"carved": carved, "ratio": CARVE_RATIO if carved else None,
                           "monitor": cfg.monitor, "filter_grid": fit.grid,
                           "weights": weights}}
    return ModelRun(result, filter_, model, test, time.perf_counter() - t0, parts)


def save_run(run: ModelRun, graph: GraphData, path: str | Path) -> None:
    """Publish a :func:`train_filter` / :func:`train_ensemble` run as a model directory."""
    arrays = run.filter.arrays()
    info = {"model": run.model["kind"], "test": run.test,
            "timings": {"total_seconds": round(run.seconds, 2)}}
    if run.result is None:
        save_model(None, graph, path, model=run.model, filter_arrays=arrays,
                   metrics={"history": [], "best_epoch": None, **info})
    else:
        lightgcn_test = run.result.test
        result = replace(run.result, test=run.test,
                         timings={**run.result.timings, "total_seconds": round(run.seconds, 2)})
        save_model(result, graph, path, model=run.model, filter_arrays=arrays,
                   metrics={"lightgcn_test": lightgcn_test,
                            "lightgcn_seconds": run.result.timings.get("total_seconds"),
                            **run.parts})
