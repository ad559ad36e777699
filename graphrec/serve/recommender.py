"""Serving: top-K for known users, new users from their items, similar items.

Works from a model directory alone: no raw data, no text encoder, no pickle.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphrec.artifacts.model_dir import load_arrays, read_model_config
from graphrec.data.csr import Csr
from graphrec.errors import ConfigError, UnknownItemError, UnknownUserError
from graphrec.popularity import boost_tail, check_tail_boost, tail_boost_weights
from graphrec.serve.scoring import check_diversity, check_k, mask_known, mmr_pool_size, mmr_rerank


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: raw id, title and score."""

    item: str
    title: str
    score: float

    def as_dict(self) -> dict:
        return {"item": self.item, "title": self.title, "score": round(self.score, 6)}


class Recommender:
    """Top-K recommendations from a trained model directory.

    >>> rec = Recommender.load("graphrec-run/model")
    >>> rec.recommend("1", k=10)
    """

    def __init__(self, arrays: dict, config: dict, path: Path, tail_boost: float = 0.0,
                 tail_shape: str = "degree"):
        check_tail_boost(tail_boost)
        self.path = path
        self.tail_boost = tail_boost
        """Serving-time tail boost (see :func:`boost_tail`); 0 ranks by the model alone."""
        self.config = config
        self.user_ids: np.ndarray = arrays["user_ids"]
        self.item_ids: np.ndarray = arrays["item_ids"]
        self.item_titles: list[str] = arrays["item_titles"]
        self.user_emb = torch.as_tensor(arrays["user_emb"])
        self.item_emb = torch.as_tensor(arrays["item_emb"])
        self.known: Csr = arrays["known"]
        self.text_emb = None if arrays["text_emb"] is None else torch.as_tensor(arrays["text_emb"])
        self.text_map = torch.as_tensor(arrays["text_map"]) if "text_map" in arrays else None
        self.item_degree = arrays["item_degree"]
        # Each item's share of the boost: 0 on the 20% most-interacted items; on the others
        # "degree" grows with their interactions (added items have none), "flat" is 1.
        self.tail = torch.as_tensor(tail_boost_weights(self.item_degree, tail_shape))
        self._user_index = {u: k for k, u in enumerate(self.user_ids)}
        self._item_index = {i: k for k, i in enumerate(self.item_ids)}

    @classmethod
    def load(cls, path: str | Path, tail_boost: float = 0.0,
             tail_shape: str = "degree") -> Recommender:
        path = Path(path)
        config = read_model_config(path)
        return cls(load_arrays(path), config, path, tail_boost, tail_shape)

    def scores(self, user_vecs: Tensor, tail_boost: float | None = None) -> Tensor:
        """[b, I] scores of user embeddings [b, d] against every item, with the tail boost
        ``tail_boost`` (None: the recommender's own, :attr:`tail_boost`)."""
        boost = self.tail_boost if tail_boost is None else tail_boost
        return boost_tail(user_vecs @ self.item_emb.T, self.tail, boost)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user: str) -> int:
        k = self._user_index.get(str(user).strip())
        if k is None:
            raise UnknownUserError(
                f"not in the model ({self.num_users} known users); for a new user, pass the "
                "items they liked as {history}", parameter="user", value=user)
        return k

    def item_index(self, item: str, parameter: str = "item") -> int:
        """Index of a raw item id; ``parameter`` names the argument it came from in errors."""
        k = self._item_index.get(str(item).strip())
        if k is None:
            raise UnknownItemError(f"not in the model ({self.num_items} known items)",
                                   parameter=parameter, value=item)
        return k

    @property
    def diversity_vectors(self) -> Tensor:
        """[I, d] item vectors whose cosine MMR penalises: the text embeddings, or the final
        item embeddings when the model has no text."""
        return self.text_emb if self.text_emb is not None else self.item_emb

    def rank(self, scores: Tensor, k: int, diversity: float = 0.0) -> tuple[Tensor, Tensor]:
        """(scores, item_idx) of the top-``k`` finite entries of scores [I], re-ranked by MMR
        over the ``mmr_pool_size(k)`` most relevant when ``diversity`` > 0."""
        finite = int(torch.isfinite(scores).sum())
        if diversity == 0.0:
            values, idx = torch.topk(scores, min(k, finite))
            return values, idx
        candidates = torch.topk(scores, min(mmr_pool_size(k), finite)).indices
        idx = mmr_rerank(scores, candidates, self.diversity_vectors, k, diversity)
        return scores[idx], idx

    def _top(self, scores: Tensor, k: int, diversity: float = 0.0) -> list[Recommendation]:
        values, idx = self.rank(scores, k, diversity)
        return [Recommendation(str(self.item_ids[i]), self.item_titles[i], float(v))
                for v, i in zip(values.tolist(), idx.tolist(), strict=True)]

    def recommend(self, user: str, k: int = 10, include_seen: bool = False,
                  diversity: float = 0.0,
                  tail_boost: float | None = None) -> list[Recommendation]:
        """Top-``k`` items for a known user (raw id); items they already have are excluded
        unless ``include_seen``. ``diversity`` > 0 re-ranks by MMR (see ``mmr_rerank``);
        ``tail_boost`` overrides the recommender's own for this call."""
        check_k(k)
        check_diversity(diversity)
        if tail_boost is not None:
            check_tail_boost(tail_boost)
        u = self.user_index(user)
        scores = self.scores(self.user_emb[u].unsqueeze(0), tail_boost)
        if not include_seen:
            mask_known(scores, torch.tensor([u]), self.known)
        return self._top(scores[0], k, diversity)

    def recommend_new_user(self, history: Sequence[str], k: int = 10,
                           include_seen: bool = False, diversity: float = 0.0,
                           tail_boost: float | None = None) -> list[Recommendation]:
        """Top-``k`` for a user not seen in training, from the raw ids of items they liked.

        The user's embedding is the mean of the history items' final embeddings: one
        LightGCN aggregation step from the new user's edges, without retraining.
        ``diversity`` > 0 re-ranks by MMR (see ``mmr_rerank``); ``tail_boost`` overrides the
        recommender's own for this call.
        """
        check_k(k)
        check_diversity(diversity)
        if tail_boost is not None:
            check_tail_boost(tail_boost)
        if not history:
            raise ConfigError(parameter="history", expected="at least one item id")
        idx = torch.tensor([self.item_index(h, "history") for h in history])
        scores = self.scores(self.item_emb[idx].mean(0, keepdim=True), tail_boost)[0]
        if not include_seen:
            scores[idx] = float("-inf")
        return self._top(scores, k, diversity)

    def similar_items(self, item: str, k: int = 10) -> list[Recommendation]:
        """The ``k`` items closest to ``item`` by cosine of final embeddings (cold items
        included: their embeddings come from their text)."""
        check_k(k)
        i = self.item_index(item)
        emb = torch.nn.functional.normalize(self.item_emb, dim=1)
        scores = emb @ emb[i]
        scores[i] = float("-inf")
        return self._top(scores, k)

    def recommend_all(self, k: int = 10, batch_users: int = 2048, include_seen: bool = False,
                      diversity: float = 0.0) -> Iterator[tuple[str, list[str], list[float]]]:
        """(user id, top-k item ids, scores) for every user, computed in user chunks;
        ``diversity`` > 0 re-ranks each list by MMR (see ``mmr_rerank``)."""
        check_k(k)
        check_diversity(diversity)
        k = min(k, self.num_items)
        for start in range(0, self.num_users, batch_users):
            users = torch.arange(start, min(start + batch_users, self.num_users))
            scores = self.scores(self.user_emb[users])
            if not include_seen:
                mask_known(scores, users, self.known)
            if diversity == 0.0:
                ranked = zip(*torch.topk(scores, k, dim=1), strict=True)
            else:  # MMR's greedy steps are per list; the scoring above stays batched
                ranked = (self.rank(row, k, diversity) for row in scores)
            for u, (values, idx) in zip(users.tolist(), ranked, strict=True):
                finite = torch.isfinite(values)
                yield (str(self.user_ids[u]),
                       [str(self.item_ids[i]) for i in idx[finite].tolist()],
                       [round(v, 6) for v in values[finite].tolist()])
