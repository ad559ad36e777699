"""Item popularity from training degrees: the head / tail split, the serving-time tail boost
and each item's self-information.

Shared by evaluation (tail metrics, novelty, boosted evaluation) and serving (the boost), so
it sits below both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from graphrec.errors import ConfigError, DataError, check_range
from graphrec.options import TAIL_SHAPES

if TYPE_CHECKING:  # only the tensors' own methods are called here: no torch import needed
    import torch

HEAD_SHARE = 0.2
"""Share of the items, the most interacted with in training, that make up the head."""

def head_item_mask(train_item_degree: np.ndarray, head_share: float = HEAD_SHARE) -> np.ndarray:
    """Mark the ``head_share`` most popular items as head.

    ``train_item_degree``: [I] int or float, interactions per item in the training split.
    Returns [I] bool, True for the ``round(head_share * I)`` items of highest degree; ties are
    broken by the lower item index, so the result is deterministic. Tail items are ``~head``.
    """
    degree = np.asarray(train_item_degree)
    if degree.ndim != 1:
        raise DataError(
            f"train_item_degree: expected a 1-D [num_items] array, got shape {degree.shape}"
        )
    if not 0.0 <= head_share <= 1.0:
        raise ConfigError(parameter="head_share", value=head_share,
                          expected="a fraction in [0, 1]")
    num_head = int(round(head_share * degree.shape[0]))
    order = np.argsort(-degree, kind="stable")  # stable: equal degrees keep index order
    mask = np.zeros(degree.shape[0], dtype=bool)
    mask[order[:num_head]] = True
    return mask


def check_tail_boost(boost: float) -> None:
    """Raise ConfigError unless the tail boost is in [0, 10] (NaN refused)."""
    check_range("tail_boost", boost, 0.0, 10.0)


def check_tail_shape(shape: str) -> None:
    """Raise ConfigError unless ``shape`` is one of :data:`TAIL_SHAPES`."""
    if shape not in TAIL_SHAPES:
        raise ConfigError(parameter="tail_shape", value=shape,
                          expected=f"one of {', '.join(TAIL_SHAPES)}")


def tail_boost_weights(train_item_degree: np.ndarray, shape: str = "degree",
                       head_share: float = HEAD_SHARE) -> np.ndarray:
    """[I] float32: the share of the tail boost each item gets.

    Head items (:func:`head_item_mask`) get 0. Tail items get, with ``shape``:

    - "degree": their training degree over the smallest head item's degree, so items just
      below the head get nearly the whole boost and items nobody has interacted with none;
    - "flat": 1.

    On MovieLens "degree" reaches the same tail recall for about half the recall cost of
    "flat": tail items that some users took are the ones other users' held-out interactions
    fall on (experiments/RESULTS.md).
    """
    check_tail_shape(shape)
    degree = np.asarray(train_item_degree, dtype=np.float64)
    head = head_item_mask(degree, head_share)
    if shape == "flat":
        return (~head).astype(np.float32)
    edge = degree[head].min() if head.any() else degree.max(initial=0.0)
    return np.where(head, 0.0, np.minimum(degree / max(edge, 1.0), 1.0)).astype(np.float32)


def boost_tail(scores: torch.Tensor, weights: torch.Tensor, boost: float) -> torch.Tensor:
    """``scores`` [b, I] (unmasked) plus ``boost`` times each row's standard deviation times
    each item's weight (``weights`` [I], :func:`tail_boost_weights`; a bool tail mask is the
    flat shape): a tail item of weight w moves up by ``boost * w`` score spreads.

    A serving-time lever on the long tail, scale-free across users (experiments/RESULTS.md).
    """
    if boost == 0.0:
        return scores
    return scores + boost * scores.std(dim=1, keepdim=True) * weights.to(scores.dtype)



def self_information(train_item_degree: np.ndarray, num_users: int) -> np.ndarray:
    """[I] float64 ``-log2 p_i`` with ``p_i = (degree_i + 1) / (num_users + 1)``: the novelty
    of recommending item i (rarely seen items are more novel; +1 keeps unseen items finite)."""
    degree = np.asarray(train_item_degree, dtype=np.float64)
    return -np.log2((degree + 1.0) / (num_users + 1.0))


