"""The ensemble of TextLightGCN and the graph filter: each model's scores standardised per
user over the catalog, then blended,

    s_u = (1 - w) z(e_u E^T) + w z(f_u),    z(x) = (x - mean(x)) / sd(x),

with ``w`` the filter's weight (chosen on validation by ``graphrec.pipeline.train_ensemble``).
Standardising puts the two score scales on one footing: a LightGCN inner product and a
filter's co-occurrence mass differ by orders of magnitude, and by user. Items the filter
cannot score (cold items, items added after training: no training interactions) get a filter
score of 0, so their place in the blend comes from LightGCN's text placement.
"""

from __future__ import annotations

import torch
from torch import Tensor

from graphrec.errors import ConfigError
from graphrec.model.filter import GraphFilter


def check_weight(weight: float) -> None:
    """Raise ConfigError unless the blend weight is in [0, 1]."""
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(parameter="weight", value=weight, expected="in [0, 1]")


def standardise(scores: Tensor) -> Tensor:
    """Each row of scores [b, I] minus its mean, over its standard deviation (a row with no
    spread becomes 0)."""
    mean = scores.mean(dim=1, keepdim=True)
    sd = scores.std(dim=1, keepdim=True)
    return torch.where(sd > 0, (scores - mean) / sd.clamp_min(1e-30), torch.zeros_like(scores))


def blend(lightgcn: Tensor, filtered: Tensor, weight: float) -> Tensor:
    """(1 - ``weight``) z(lightgcn) + ``weight`` z(filtered), both [b, I]; ``filtered`` may
    cover only the first I' <= I items (the filter's catalog): the rest score 0 in it."""
    if filtered.shape[1] < lightgcn.shape[1]:
        filtered = torch.nn.functional.pad(filtered, (0, lightgcn.shape[1] - filtered.shape[1]))
    if weight == 0.0:
        return standardise(lightgcn)
    if weight == 1.0:
        return standardise(filtered)
    return (1.0 - weight) * standardise(lightgcn) + weight * standardise(filtered)


class EnsembleScorer:
    """Blended scores of known users: factors (user [U, d], item [I, d]) and a fitted
    :class:`GraphFilter` over the same users; :meth:`score` is an evaluation ``score_fn``."""

    def __init__(self, user_emb: Tensor, item_emb: Tensor, filter_: GraphFilter,
                 weight: float):
        check_weight(weight)
        self.user_emb, self.item_emb, self.filter, self.weight = (user_emb, item_emb, filter_,
                                                                  weight)

    @torch.no_grad()
    def score(self, users: Tensor) -> Tensor:
        lightgcn = self.user_emb[users.to(self.user_emb.device)] @ self.item_emb.T
        return blend(lightgcn, self.filter.score(users).to(lightgcn.device), self.weight)
