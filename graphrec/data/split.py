"""Per-user train / validation / test splits, and the items held out of training (cold start)."""

from __future__ import annotations

import numpy as np

from graphrec.data.interactions import Interactions
from graphrec.options import SPLIT_STRATEGIES  # noqa: F401  (re-exported)

TRAIN, VALID, TEST = 0, 1, 2
"""Fold codes of an interaction."""
SPLITS = {"valid": VALID, "test": TEST}
"""Split names as the evaluation protocol spells them, and their fold codes."""


def _rank_within_user(users: np.ndarray, sort_key: np.ndarray,
                      tie_break: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row: its 0-based rank among the user's rows by ``sort_key``, then
    ``tie_break`` (both descending, so rank 0 is the row that goes to test first) and the
    user's row count."""
    # A random split ranks by the noise alone: one key fewer, the same order.
    keys = (-sort_key, users) if sort_key is tie_break else (-tie_break, -sort_key, users)
    order = np.lexsort(keys)
    counts = np.bincount(users)
    starts = np.cumsum(counts) - counts
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users)) - starts[users[order]]
    return rank, counts[users]


def assign_folds(
    inter: Interactions,
    strategy: str = "random",
    test_ratio: float = 0.2,
    valid_ratio: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Per-user split into TRAIN / VALID / TEST; returns [n] int8 fold codes.

    ``random``: a random ``test_ratio`` (and ``valid_ratio``) of each user's rows.
    ``temporal``: each user's latest rows by timestamp go to test, the ones before to valid.
    ``leave-one-out``: each user's latest row (random when there are no timestamps) to test,
    the one before to valid when ``valid_ratio`` > 0. Every user keeps at least one training
    row.
    """
    n = len(inter)
    rng = np.random.default_rng(seed)
    noise = rng.random(n)
    if strategy == "random":
        key = noise
    elif strategy in ("temporal", "leave-one-out"):
        if inter.timestamps is None:
            if strategy == "temporal":
                raise ValueError("temporal split needs timestamps")
            key = noise
        else:
            # Latest first; the noise only breaks ties (as a second sort key: added to the
            # time it would reorder timestamps closer together than the noise).
            key = inter.timestamps
    else:
        raise ValueError(f"unknown split strategy {strategy!r}")
    rank, count = _rank_within_user(inter.users, key, noise)
    if strategy == "leave-one-out":
        n_test = np.where(count >= 2, 1, 0)
        n_valid = np.where((count >= 3) & (valid_ratio > 0), 1, 0)
    else:
        n_test = np.floor(count * test_ratio + 0.5).astype(np.int64)
        n_valid = np.floor(count * valid_ratio + 0.5).astype(np.int64)
        # Keep at least one training row: shrink validation first, then test.
        over = np.maximum(n_test + n_valid - (count - 1), 0)
        cut_valid = np.minimum(over, n_valid)
        n_valid = n_valid - cut_valid
        n_test = np.maximum(n_test - (over - cut_valid), 0)
    fold = np.full(n, TRAIN, dtype=np.int8)
    fold[rank < n_test] = TEST
    fold[(rank >= n_test) & (rank < n_test + n_valid)] = VALID
    return fold


def choose_cold_items(num_items: int, fraction: float, seed: int) -> np.ndarray:
    """[num_items] bool: a random ``fraction`` of the items, to be held out of training."""
    cold = np.zeros(num_items, dtype=bool)
    n_cold = int(round(num_items * fraction))
    if n_cold:
        rng = np.random.default_rng([seed, 7919])
        cold[rng.choice(num_items, size=n_cold, replace=False)] = True
    return cold


def cold_item_folds(items: np.ndarray, cold: np.ndarray, test_ratio: float,
                    valid_ratio: float, seed: int) -> np.ndarray:
    """Fold of each interaction of a cold item: the cold items are divided between
    validation and test in proportion ``valid_ratio : test_ratio``, whole items at a time,
    so no cold item is seen during model selection and scored again at test."""
    cold_ids = np.flatnonzero(cold)
    rng = np.random.default_rng([seed, 104729])
    share = valid_ratio / (valid_ratio + test_ratio) if valid_ratio + test_ratio > 0 else 0.0
    n_valid = int(round(len(cold_ids) * share))
    item_fold = np.full(len(cold), TRAIN, dtype=np.int8)
    perm = rng.permutation(cold_ids)
    item_fold[perm[:n_valid]] = VALID
    item_fold[perm[n_valid:]] = TEST
    return item_fold[items]
