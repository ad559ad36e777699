"""EvalContext: everything full-ranking evaluation on one graph needs, built once; and the
evaluation of a trained model directory on its graph's split (``graphrec evaluate``).

The trainer's validation, ``graphrec evaluate`` and the experiments all evaluate through one
of these, so the seen / target sets, the head / tail split and the item inputs of the
beyond-accuracy metrics are defined in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphrec.artifacts.graph_dir import GraphData
from graphrec.artifacts.model_dir import (
    check_compatible,
    load_arrays,
    load_filter_arrays,
    mapped_tensor,
    model_kind,
    read_model_config,
)
from graphrec.data.csr import Csr
from graphrec.data.split import SPLITS, TEST, TRAIN, VALID
from graphrec.device import resolve_device
from graphrec.distributed import SOLO, Group
from graphrec.errors import ConfigError, DataError
from graphrec.eval.protocol import RankingResult, evaluate_ranking
from graphrec.fsio import read_consistently
from graphrec.popularity import (
    boost_tail,
    check_tail_boost,
    check_tail_shape,
    head_item_mask,
    self_information,
    tail_boost_weights,
)


@dataclass
class EvalContext:
    """Full-ranking evaluation sets of one graph.

    ``folds``: fold code -> (seen, target): VALID is scored with the training items masked,
    TEST with training and validation items masked (or recall is inflated).
    ``head_items`` [I] bool (the 20% most-interacted training items); ``cold_items`` [I]
    bool or None when no item is held out; ``information`` [I] float64 self-information;
    ``item_vectors`` [I, t] text embeddings or None; ``item_degree`` [I] training degrees.
    """

    num_users: int
    num_items: int
    folds: dict[int, tuple[Csr, Csr]]
    head_items: np.ndarray
    cold_items: np.ndarray | None
    information: np.ndarray
    item_vectors: np.ndarray | Tensor | None
    item_degree: np.ndarray
    device: torch.device
    ks: tuple[int, ...] = (20,)

    @classmethod
    def from_graph(cls, graph: GraphData, ks: Sequence[int] = (20,),
                   device: torch.device | str | None = None) -> EvalContext:
        """The evaluation sets of ``graph``'s split, on ``device`` (the device policy's
        choice when None)."""
        device = resolve_device(device) if not isinstance(device, torch.device) else device
        degree = graph.train_item_degree()
        vectors = graph.text_emb
        if vectors is not None and device.type != "cpu":
            vectors = torch.as_tensor(vectors).to(device)
        return cls(
            num_users=graph.num_users, num_items=graph.num_items,
            folds={VALID: (graph.csr(TRAIN), graph.csr(VALID)),
                   TEST: (graph.csr(TRAIN, VALID), graph.csr(TEST))},
            head_items=head_item_mask(degree),
            cold_items=graph.cold_items if graph.cold_items.any() else None,
            information=self_information(degree, graph.num_users),
            item_vectors=vectors, item_degree=degree, device=device, ks=tuple(ks),
        )

    def fold(self, split: str | int) -> int:
        """The fold code of ``split`` ("valid", "test", VALID or TEST)."""
        fold = SPLITS.get(split, split) if isinstance(split, str) else split
        if fold not in self.folds:
            raise ConfigError(parameter="split", value=split, expected="valid or test")
        return fold

    def has_targets(self, split: str | int) -> bool:
        """Whether the split has any held-out interaction to score."""
        return self.folds[self.fold(split)][1].nnz > 0

    def evaluate(self, split: str | int, *, factors: tuple[Tensor, Tensor] | None = None,
                 score_fn: Callable[[Tensor], Tensor] | None = None,
                 ks: Sequence[int] | None = None, tail_boost: float = 0.0,
                 tail_shape: str = "degree", per_user: bool = False,
                 group: Group = SOLO) -> dict[str, float] | RankingResult:
        """Metrics on ``split`` of exactly one of ``factors`` (user [U, d], item [I, d]
        embeddings) and ``score_fn`` (user_idx [b] -> [b, I] scores), with the serving-time
        tail boost of ``tail_shape`` when ``tail_boost`` is not 0 (factors only); with
        ``per_user``, a :class:`RankingResult` that also holds every user's values.
        ``group``: processes that share the users out (:func:`evaluate_ranking`)."""
        fold = self.fold(split)
        seen, target = self.folds[fold]
        if target.nnz == 0:
            raise DataError(f"the graph has no {split} interactions to evaluate on")
        weights = tail_boost_weights(self.item_degree, tail_shape) if tail_boost else None
        return evaluate_ranking(
            score_fn, seen, target, self.num_items, tuple(ks or self.ks),
            head_items=self.head_items, cold_items=self.cold_items, device=self.device,
            item_information=self.information, item_vectors=self.item_vectors,
            factors=factors, tail_boost=tail_boost, boost_weights=weights, per_user=per_user,
            group=group,
        )

    def validator(self, split: str | int = VALID,
                  group: Group = SOLO) -> Callable[[Tensor, Tensor], dict]:
        """``(user_emb, item_emb) -> metrics`` on ``split``: the trainer's evaluation
        callback (shared out over ``group``'s processes)."""
        fold = self.fold(split)
        return lambda user_emb, item_emb: self.evaluate(fold, factors=(user_emb, item_emb),
                                                        group=group)


def model_factors(graph: GraphData, model_path: str | Path, device: torch.device,
                  cfg: dict | None = None) -> tuple[Tensor, Tensor]:
    """(user [U, d], item [I, d]) embeddings of the model in ``model_path`` on ``device``,
    after checking that it was trained on ``graph``. Only the graph's items: rows past them
    were appended by add-items, have no interactions in any split and would only push real
    held-out items down the ranking."""
    check_compatible(cfg or read_model_config(model_path), graph, model_path)
    arrays = load_arrays(model_path)
    user_emb = mapped_tensor(arrays["user_emb"]).to(device)
    item_emb = mapped_tensor(arrays["item_emb"][:graph.num_items]).to(device)
    return user_emb, item_emb


def model_scoring(graph: GraphData, model_path: str | Path, device: torch.device,
                  cfg: dict | None = None) -> dict:
    """How :meth:`EvalContext.evaluate` scores the model in ``model_path`` on ``graph``:
    ``{"factors": (user, item)}`` for TextLightGCN (:func:`model_factors`), ``{"score_fn":
    ...}`` for a graph filter or an ensemble (graphrec.model.filter, graphrec.model.ensemble),
    after checking that it was trained on ``graph``. As with factors, only the graph's
    items are ranked."""
    from graphrec.model.ensemble import EnsembleScorer
    from graphrec.model.filter import GraphFilter

    cfg = cfg or read_model_config(model_path)
    kind = model_kind(cfg)
    if kind == "lightgcn":
        return {"factors": model_factors(graph, model_path, device, cfg)}
    check_compatible(cfg, graph, model_path)
    arrays = read_consistently(model_path, load_filter_arrays)
    filter_ = GraphFilter.from_arrays(arrays, cfg["model"].get("filter", cfg["model"]), device)
    if kind == "filter":
        return {"score_fn": filter_.score}
    user_emb, item_emb = model_factors(graph, model_path, device, cfg)
    return {"score_fn": EnsembleScorer(user_emb, item_emb, filter_,
                                       float(cfg["model"]["weight"])).score}


def evaluate_model(graph: GraphData, model_path: str | Path, split: str = "test",
                   ks: tuple[int, ...] = (20,), baselines: bool = False,
                   device: str | None = None, tail_boost: float = 0.0,
                   tail_shape: str = "degree") -> dict:
    """Full-ranking metrics of the model in ``model_path`` on ``graph``'s ``split``.

    ``tail_boost`` / ``tail_shape`` score the model as served with that boost
    (``graphrec.popularity.boost_tail``); baselines are never boosted.

    Seen items (masked) are the training items, plus validation items when scoring test.
    With ``baselines``, most-popular and item-kNN are scored by the same code on the same
    split. Items appended after training (add-items) are not ranked: the metrics are those
    of the model as trained. Returns {"split", "model": metrics, "baselines": {name:
    metrics}, "seconds"}.
    """
    from graphrec.eval.baselines import ItemKNN, MostPopular

    check_tail_boost(tail_boost)
    check_tail_shape(tail_shape)
    if split not in SPLITS:
        raise ConfigError(parameter="split", value=split, expected="valid or test")
    cfg = read_model_config(model_path)
    fold = SPLITS[split]
    ctx = EvalContext.from_graph(graph, ks, device)
    if not ctx.has_targets(fold):
        raise DataError(f"graph has no {split} interactions to evaluate on")
    scoring = model_scoring(graph, model_path, ctx.device, cfg)
    if tail_boost and "score_fn" in scoring:  # boosted as served (Recommender.scores)
        score_fn = scoring["score_fn"]
        weights = torch.as_tensor(tail_boost_weights(ctx.item_degree, tail_shape)).to(ctx.device)
        scoring = {"score_fn": lambda users: boost_tail(score_fn(users), weights, tail_boost)}
        tail_boost = 0.0
    t0 = time.perf_counter()
    out = {"split": split,
           "model": ctx.evaluate(fold, **scoring, tail_boost=tail_boost,
                                 tail_shape=tail_shape)}
    out["seconds"] = round(time.perf_counter() - t0, 3)
    if baselines:
        # Baselines see everything the model may not recommend: train (+ valid at test time).
        seen = ctx.folds[fold][0]
        pop = MostPopular(seen, graph.num_items)
        knn = ItemKNN(seen, graph.num_items, device=ctx.device)
        out["baselines"] = {
            "most-popular": ctx.evaluate(fold, score_fn=pop.score),
            "item-knn": ctx.evaluate(fold, score_fn=knn.score),
        }
    return out
