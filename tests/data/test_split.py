"""graphrec.data.split: property tests of every split strategy, and cold items held out
whole."""

from __future__ import annotations

import numpy as np
import pytest

from graphrec.data import (
    TEST,
    TRAIN,
    VALID,
    Interactions,
    assign_folds,
    choose_cold_items,
    cold_item_folds,
)

# ----------------------------------------------------------------------------- split properties


def random_log(seed: int, num_users: int = 60, num_items: int = 80, timestamps: str = "int",
               max_rows: int = 25) -> Interactions:
    """Deduplicated random log; users have 1..max_rows rows; timestamps may tie ("int"),
    be fractional and closer than 1e-3 ("float") or be absent (None)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(num_users):
        n = int(rng.integers(1, max_rows + 1))
        users.append(np.full(n, u))
        items.append(rng.choice(num_items, size=n, replace=False))
    users, items = np.concatenate(users), np.concatenate(items)
    perm = rng.permutation(len(users))
    users, items = users[perm], items[perm]
    if timestamps == "int":
        ts = rng.integers(0, 50, len(users)).astype(np.float64)  # many ties
    elif timestamps == "float":
        ts = rng.random(len(users)) * 0.05  # gaps far below 1e-3
    else:
        ts = None
    return Interactions(users.astype(np.int64), items.astype(np.int64), timestamps=ts)


SPLIT_CASES = [
    ("random", 0.2, 0.1, "int"),
    ("random", 0.5, 0.0, None),
    ("random", 0.0, 0.3, None),
    ("temporal", 0.2, 0.1, "int"),
    ("temporal", 0.3, 0.2, "float"),
    ("temporal", 0.2, 0.0, "float"),
    ("leave-one-out", 0.0, 0.1, "int"),
    ("leave-one-out", 0.0, 0.0, "float"),
    ("leave-one-out", 0.0, 0.1, None),
]


@pytest.mark.parametrize(("strategy", "test_ratio", "valid_ratio", "ts"), SPLIT_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_properties(strategy: str, test_ratio: float, valid_ratio: float, ts: str | None,
                          seed: int) -> None:
    inter = random_log(seed, timestamps=ts)
    fold = assign_folds(inter, strategy, test_ratio, valid_ratio, seed=seed)
    # A partition: every row gets exactly one fold.
    assert fold.shape == (len(inter),) and fold.dtype == np.int8
    assert set(np.unique(fold).tolist()) <= {TRAIN, VALID, TEST}
    # Every user keeps at least one training row.
    n_users = int(inter.users.max()) + 1
    assert (np.bincount(inter.users[fold == TRAIN], minlength=n_users) >= 1).all()
    # Same seed, same split.
    np.testing.assert_array_equal(fold, assign_folds(inter, strategy, test_ratio, valid_ratio,
                                                     seed=seed))
    counts = np.bincount(inter.users, minlength=n_users)
    n_test = np.bincount(inter.users[fold == TEST], minlength=n_users)
    n_valid = np.bincount(inter.users[fold == VALID], minlength=n_users)
    if strategy == "leave-one-out":
        assert (n_test == (counts >= 2)).all()
        assert (n_valid == ((counts >= 3) & (valid_ratio > 0))).all()
    else:
        # Each user's share is the ratio rounded, short of taking the last training row.
        big = counts >= 10
        np.testing.assert_allclose(n_test[big] / counts[big], test_ratio, atol=0.5 / 10 + 1e-9)
        np.testing.assert_allclose(n_valid[big] / counts[big], valid_ratio, atol=0.5 / 10 + 1e-9)
    if inter.timestamps is not None and strategy != "random":
        # No test row is older than any of the user's training or validation rows, and no
        # validation row is older than a training row.
        for u in range(n_users):
            mine = inter.users == u
            t, f = inter.timestamps[mine], fold[mine]
            if (f == TEST).any():
                assert t[f == TEST].min() >= t[f != TEST].max()
            if (f == VALID).any():
                assert t[f == VALID].min() >= t[f == TRAIN].max()


@pytest.mark.parametrize(("strategy", "ts"), [("random", "int"), ("random", None),
                                              ("leave-one-out", None),
                                              ("temporal", "int")])
def test_different_seed_gives_different_split(strategy: str, ts: str | None) -> None:
    # temporal: only ties (integer timestamps with repeats) are broken by the seed.
    inter = random_log(0, timestamps=ts)
    a = assign_folds(inter, strategy, 0.2, 0.1, seed=0)
    b = assign_folds(inter, strategy, 0.2, 0.1, seed=1)
    assert (a != b).any()
    # ...but the per-user fold sizes do not depend on the seed.
    for f in (TRAIN, VALID, TEST):
        np.testing.assert_array_equal(np.bincount(inter.users[a == f], minlength=60),
                                      np.bincount(inter.users[b == f], minlength=60))


def test_temporal_split_with_distinct_times_ignores_the_seed() -> None:
    inter = random_log(3, timestamps=None)
    inter.timestamps = np.random.default_rng(0).permutation(len(inter)).astype(np.float64)
    np.testing.assert_array_equal(assign_folds(inter, "temporal", 0.2, 0.1, seed=0),
                                  assign_folds(inter, "temporal", 0.2, 0.1, seed=5))


def test_temporal_known_answer() -> None:
    inter = Interactions(np.zeros(10, dtype=np.int64), np.arange(10),
                         timestamps=np.array([5, 1, 9, 3, 7, 0, 8, 2, 6, 4], dtype=np.float64))
    fold = assign_folds(inter, "temporal", test_ratio=0.2, valid_ratio=0.2, seed=0)
    # Times 9, 8 -> test; 7, 6 -> valid; the rest train.
    assert fold.tolist() == [TRAIN, TRAIN, TEST, TRAIN, VALID, TRAIN, TEST, TRAIN, VALID, TRAIN]


def test_temporal_without_timestamps_is_refused() -> None:
    with pytest.raises(ValueError, match="timestamps"):
        assign_folds(random_log(0, timestamps=None), "temporal")


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown split strategy"):
        assign_folds(random_log(0), "by-moon-phase")


def test_single_row_users_stay_in_training() -> None:
    inter = Interactions(np.arange(5), np.arange(5), timestamps=np.arange(5.0))
    for strategy in ("random", "temporal", "leave-one-out"):
        assert (assign_folds(inter, strategy, 0.5, 0.3, seed=1) == TRAIN).all()


# ----------------------------------------------------------------------------- cold items


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("fraction", "test_ratio", "valid_ratio"),
                         [(0.2, 0.2, 0.1), (0.3, 0.3, 0.0), (0.1, 0.1, 0.1)])
def test_cold_item_folds_whole_items(seed: int, fraction: float, test_ratio: float,
                                     valid_ratio: float) -> None:
    num_items = 50
    cold = choose_cold_items(num_items, fraction, seed)
    assert cold.sum() == round(num_items * fraction)
    np.testing.assert_array_equal(cold, choose_cold_items(num_items, fraction, seed))
    items = np.random.default_rng(seed).integers(0, num_items, 500)
    folds = cold_item_folds(items, cold, test_ratio, valid_ratio, seed)
    cold_rows = cold[items]
    assert (folds[~cold_rows] == TRAIN).all()
    assert (folds[cold_rows] != TRAIN).all()
    for i in np.unique(items[cold_rows]):
        assert len(np.unique(folds[items == i])) == 1  # a cold item lives in one fold
    n_valid = len({int(i) for i in items[cold_rows & (folds == VALID)]})
    if valid_ratio == 0:
        assert n_valid == 0


def test_choose_cold_items_seeds_differ() -> None:
    assert (choose_cold_items(100, 0.2, 0) != choose_cold_items(100, 0.2, 1)).any()
    assert not choose_cold_items(100, 0.0, 0).any()
