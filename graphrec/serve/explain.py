"""Exact explanations of a score through the graph.

LightGCN is linear: with K layers and the layer mean, a user's final embedding is

    e_u = (x_u + sum_j Â_uj S_j) / (K + 1),    S_j = h^(0)_j + ... + h^(K-1)_j,

over the user's training items j (Â_uj = 1 / sqrt(d_u d_j)), so the score of item i splits
exactly into a self term and one term per history item:

    score(u, i) = e_u . e_i = x_u . e_i / (K + 1) + sum_j Â_uj S_j . e_i / (K + 1).

The model directory keeps every S_j (its fold-in layers), so an explanation costs one
product per history item. The self term is taken as what is left of the served embedding
once the history terms are out (for a trained user exactly x_u . e_i / (K + 1)), so the terms
add up to the served score also after a live fold-in. Paths u -> j -> v -> i name other users
v who took both a contributing item j and i, strongest first (by the product of the edge
weights along the path); :func:`explanation_graph` makes the networkx subgraph to export.

The graph filter is linear in the user's row too (``graphrec.model.filter``): its score of i
is sum_j F[j, i] over the user's items, each term exact, no self term. The ensemble's score
(1 - w) z(e_u . e_i) + w z(f_ui) takes each part with its per-user scale, (1 - w) / sd and
w / sd of the two score rows; the self term then also holds the two means it subtracts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from graphrec.data.csr import Csr
from graphrec.errors import ConfigError
from graphrec.serve.recommender import Recommender

PATHS_PER_ITEM = 3
"""Paths u -> j -> v -> i shown for each of the top contributing items."""


@dataclass(frozen=True)
class Contribution:
    item: str
    contribution: float
    share: float
    """contribution / score (negative when the item pulls the score down)."""


@dataclass(frozen=True)
class Path:
    via_item: str
    via_user: str
    weight: float


@dataclass
class Explanation:
    user: str
    item: str
    score: float
    self: float
    contributions: list[Contribution]
    """Every history item, largest contribution first; self + their sum = score."""
    paths: list[Path] = field(default_factory=list)
    text_neighbours: list[tuple[str, float]] = field(default_factory=list)
    """For an item without training interactions: the warm items closest in text (cosine)."""

    def as_dict(self) -> dict:
        return {
            "user": self.user, "item": self.item, "score": round(self.score, 6),
            "self": round(self.self, 6),
            "contributions": [{"item": c.item, "contribution": round(c.contribution, 6),
                               "share": round(c.share, 6)} for c in self.contributions],
            "paths": [{"via_item": p.via_item, "via_user": p.via_user,
                       "weight": round(p.weight, 6)} for p in self.paths],
            "text_neighbours": [{"item": i, "cosine": round(c, 6)}
                                for i, c in self.text_neighbours],
        }


def explain(rec: Recommender, user: str, item: str, k: int = 5) -> Explanation:
    """Why ``rec`` scores ``item`` for ``user`` (raw ids): the exact split of the score over
    the user's training items, paths through other users for the ``k`` largest, and text
    neighbours for an item without interactions."""
    if k < 1:
        raise ConfigError(parameter="k", value=k, expected="an integer >= 1")
    u, i = rec.user_index(user), rec.item_index(item)
    history = rec.training_items(u)
    with torch.inference_mode():
        if rec.kind == "lightgcn":
            score = float(rec.user_emb[u].float() @ rec.item_emb[i].float())
            parts, _ = _lightgcn_parts(rec, u, i, history)
        else:
            score, parts = _blend_parts(rec, u, i, history)
    total = float(parts.sum())
    order = np.argsort(-parts.numpy(), kind="stable")
    denom = score if score != 0.0 else 1.0
    contributions = [Contribution(str(rec.item_ids[history[j]]), float(parts[j]),
                                  float(parts[j]) / denom) for j in order]
    out = Explanation(user=str(rec.user_ids[u]), item=str(rec.item_ids[i]), score=score,
                      self=score - total, contributions=contributions)
    by_item = rec.foldin_state().by_item if rec.user_emb is not None else _items_to_users(rec)
    out.paths = _paths(rec, by_item, u, len(history), i, history[order[:k]])
    degree = by_item.row_lengths() if i < by_item.num_rows else np.zeros(0)
    if (i >= len(degree) or degree[i] == 0) and rec.text_emb is not None:
        out.text_neighbours = _text_neighbours(rec, i, _full(degree, rec.num_items), k)
    return out


def _lightgcn_parts(rec: Recommender, u: int, i: int,
                    history: np.ndarray) -> tuple[torch.Tensor, float]:
    """([h] float32 history terms of e_u . e_i, e_u . e_i)."""
    state = rec.foldin_state()
    e_i = rec.item_emb[i].float()
    scale = 1.0 / (state.num_layers + 1)
    degree = state.item_degree.numpy()
    if not len(history):
        return torch.zeros(0), float(rec.user_emb[u].float() @ e_i)
    s = torch.as_tensor(np.asarray(state.item_layers[:, history]).sum(0))
    w = torch.as_tensor(1.0 / np.sqrt(len(history) * np.maximum(degree[history], 1)),
                        dtype=torch.float32)
    return (s @ e_i) * w * scale, float(rec.user_emb[u].float() @ e_i)


def _filter_parts(rec: Recommender, i: int, history: np.ndarray) -> torch.Tensor:
    """[h] float32 F[j, i] of the history items (0 for items the filter was not fitted on)."""
    known = history < rec.filter.num_items
    out = torch.zeros(len(history))
    if known.any():
        out[torch.as_tensor(known)] = rec.filter.weights_into(
            i, torch.as_tensor(history[known])).cpu().float()
    return out


def _blend_parts(rec: Recommender, u: int, i: int,
                 history: np.ndarray) -> tuple[float, torch.Tensor]:
    """(served score, [h] history terms) of a filter or ensemble model, tail boost aside."""
    served = rec.user_scores(torch.tensor([u]), tail_boost=0.0)[0].cpu()
    filtered = _filter_parts(rec, i, history)
    if rec.kind == "filter":
        return float(served[i]), filtered
    lightgcn, _ = _lightgcn_parts(rec, u, i, history)
    rows = rec.user_rows(torch.tensor([u]))
    raw = rec.filter.score_rows(rows)[0].cpu()
    raw = torch.nn.functional.pad(raw, (0, rec.num_items - raw.numel()))
    sd_l = float((rec.user_emb[u].float() @ rec.item_emb.float().T).std())
    sd_f = float(raw.std())
    w = rec.weight
    scale_l = (1.0 - w) / sd_l if sd_l > 0 else 0.0
    scale_f = w / sd_f if sd_f > 0 else 0.0
    return float(served[i]), lightgcn * scale_l + filtered * scale_f


def _items_to_users(rec: Recommender) -> Csr:
    """Item -> users of the training rows (a filter model has no fold-in arrays)."""
    train = rec.train_rows()
    return Csr.from_pairs(np.asarray(train.indices, dtype=np.int64), train.row_index(),
                          rec.num_items)


def _full(degree: np.ndarray, n: int) -> np.ndarray:
    """``degree`` padded with 0 to ``n`` items (items added after training)."""
    return np.pad(degree, (0, max(n - len(degree), 0)))


def _paths(rec: Recommender, by_item: Csr, u: int, degree_u: int, i: int,
           via: np.ndarray) -> list[Path]:
    """The strongest u -> j -> v -> i paths for each j in ``via`` (v != u took j and i);
    ``by_item``: item -> training users; ``degree_u``: the user's number of training items
    (live ones included)."""
    if i >= by_item.num_rows:
        return []
    takers_i = by_item.row(i)
    di = by_item.row_lengths()
    du = np.bincount(np.asarray(by_item.indices, dtype=np.int64),
                     minlength=rec.num_users)
    out = []
    for j in via.tolist():
        if j >= by_item.num_rows:
            continue
        both = np.intersect1d(by_item.row(j), takers_i)
        both = both[both != u]
        if not len(both):
            continue
        weight = 1.0 / (np.sqrt(max(degree_u, 1) * di[j]) * du[both] * np.sqrt(di[j] * di[i]))
        for v in both[np.argsort(-weight, kind="stable")[:PATHS_PER_ITEM]]:
            out.append(Path(str(rec.item_ids[j]), str(rec.user_ids[v]),
                            float(weight[both == v][0])))
    return out


def _text_neighbours(rec: Recommender, i: int, degree: np.ndarray, k: int) -> list:
    text = torch.nn.functional.normalize(rec.text_emb.float(), dim=1)
    cos = text @ text[i]
    cos[torch.as_tensor(degree == 0)] = float("-inf")  # placed by warm items only
    top = torch.topk(cos, min(k, int((degree > 0).sum())))
    return [(str(rec.item_ids[j]), float(c)) for c, j in zip(top.values.tolist(),
                                                            top.indices.tolist(), strict=True)]


def explanation_graph(exp: Explanation, k: int = 5):
    """The explanation as a networkx graph: the user, the ``k`` largest contributing items
    (edge weight: contribution), the item, and the paths' users; nodes carry ``kind``."""
    import networkx as nx

    g = nx.Graph()
    g.add_node(f"user:{exp.user}", kind="user", label=exp.user)
    g.add_node(f"item:{exp.item}", kind="recommended", label=exp.item, score=exp.score)
    for c in exp.contributions[:k]:
        g.add_node(f"item:{c.item}", kind="history", label=c.item)
        g.add_edge(f"user:{exp.user}", f"item:{c.item}", weight=c.contribution,
                   share=c.share)
    for p in exp.paths:
        g.add_node(f"user:{p.via_user}", kind="user", label=p.via_user)
        g.add_edge(f"item:{p.via_item}", f"user:{p.via_user}", weight=p.weight)
        g.add_edge(f"user:{p.via_user}", f"item:{exp.item}", weight=p.weight)
    for item, cos in exp.text_neighbours:
        g.add_node(f"item:{item}", kind="text neighbour", label=item)
        g.add_edge(f"item:{item}", f"item:{exp.item}", weight=cos, kind="text")
    return g
