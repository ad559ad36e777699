"""graphrec.data: id maps, deduplication, k-core, and property tests of every split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphrec.data.build import BuildConfig, build_graph
from graphrec.data import (
    TEST,
    TRAIN,
    VALID,
    Csr,
    IdMap,
    Interactions,
    assign_folds,
    choose_cold_items,
    cold_item_folds,
    deduplicate,
    k_core,
)

# ----------------------------------------------------------------------------- IdMap


def test_integer_ids_keep_numeric_order() -> None:
    idmap, idx = IdMap.build(np.array(["10", "2", "1", "2", "-3"]))
    assert idmap.ids.tolist() == ["-3", "1", "2", "10"]
    assert idx.tolist() == [3, 2, 1, 2, 0]
    assert idx.dtype == np.int64


def test_zero_padded_integer_ids_keep_their_spelling() -> None:
    idmap, idx = IdMap.build(np.array(["010", "002", "001", "002"]))
    assert idmap.ids.tolist() == ["001", "002", "010"]
    assert idx.tolist() == [2, 1, 0, 1]
    assert idmap.get("002") == 1 and idmap.get("2") is None


def test_string_ids_sort_as_strings() -> None:
    idmap, idx = IdMap.build(np.array(["b", "a", "10", "2"]))
    assert idmap.ids.tolist() == ["10", "2", "a", "b"]
    assert idmap.ids[idx].tolist() == ["b", "a", "10", "2"]


def test_leading_zero_ids_are_not_merged() -> None:
    idmap, idx = IdMap.build(np.array(["01", "1", "2", "01"]))
    assert len(idmap) == 3
    assert idmap.get("01") != idmap.get("1")
    assert idmap.ids[idx].tolist() == ["01", "1", "2", "01"]


def test_get_and_unknown() -> None:
    idmap, _ = IdMap.build(np.array(["7", "3", "5"]))
    assert [idmap.get(r) for r in ("3", "5", "7")] == [0, 1, 2]
    assert idmap.get(5) == 1 and idmap.get(" 7 ") == 2
    assert idmap.get("4") is None and idmap.get("") is None


def test_subset_remaps() -> None:
    idmap, _ = IdMap.build(np.array(["a", "b", "c", "d"]))
    sub, remap = idmap.subset(np.array([True, False, True, True]))
    assert sub.ids.tolist() == ["a", "c", "d"]
    assert remap.tolist() == [0, -1, 1, 2]
    assert sub.get("c") == 1 and sub.get("b") is None


def test_csr_from_pairs() -> None:
    csr = Csr.from_pairs(np.array([2, 0, 2, 0]), np.array([5, 3, 1, 0]), num_rows=4)
    assert csr.indptr.tolist() == [0, 2, 2, 4, 4]
    assert [csr.row(u).tolist() for u in range(4)] == [[0, 3], [], [1, 5], []]
    assert csr.nnz == 4 and csr.row_index().tolist() == [0, 0, 2, 2]


# ----------------------------------------------------------------------------- dedup, k-core


def test_dedup_keeps_latest_and_counts() -> None:
    inter = Interactions(
        users=np.array([0, 0, 1, 0, 1, 0]),
        items=np.array([1, 1, 2, 1, 3, 2]),
        ratings=np.array([1.0, 5.0, 3.0, 2.0, 4.0, 1.0]),
        timestamps=np.array([10.0, 30.0, 5.0, 20.0, 1.0, 2.0]),
    )
    out, dropped = deduplicate(inter, num_items=4)
    assert dropped == 2
    pairs = {(u, i): (r, t) for u, i, r, t in zip(out.users.tolist(), out.items.tolist(),
                                                  out.ratings.tolist(),
                                                  out.timestamps.tolist(), strict=True)}
    assert pairs == {(0, 1): (5.0, 30.0), (1, 2): (3.0, 5.0), (1, 3): (4.0, 1.0),
                     (0, 2): (1.0, 2.0)}
    # Kept rows stay in file order.
    assert out.timestamps.tolist() == [30.0, 5.0, 1.0, 2.0]


def test_dedup_without_timestamps_keeps_last_in_file_order() -> None:
    inter = Interactions(np.array([0, 0, 0]), np.array([1, 1, 1]),
                         ratings=np.array([1.0, 2.0, 3.0]))
    out, dropped = deduplicate(inter, num_items=2)
    assert dropped == 2 and out.ratings.tolist() == [3.0]


def test_dedup_nothing_to_drop() -> None:
    inter = Interactions(np.array([0, 1]), np.array([1, 1]))
    out, dropped = deduplicate(inter, num_items=2)
    assert dropped == 0 and len(out) == 2


def _naive_k_core(pairs: set[tuple[int, int]], min_user: int, min_item: int) -> set:
    pairs = set(pairs)
    while True:
        du: dict[int, int] = {}
        di: dict[int, int] = {}
        for u, i in pairs:
            du[u] = du.get(u, 0) + 1
            di[i] = di.get(i, 0) + 1
        kept = {(u, i) for u, i in pairs if du[u] >= min_user and di[i] >= min_item}
        if kept == pairs:
            return kept
        pairs = kept


def test_k_core_cascades_to_fixed_point() -> None:
    # Item 3 has 1 interaction -> dropped; that leaves user 2 with 1 -> dropped; that
    # leaves item 2 with 1 -> dropped. Users 0, 1 and items 0, 1 form the 2-core.
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    items = np.array([0, 1, 0, 1, 2, 3, 2, 0])
    out = k_core(Interactions(users, items), 4, 4, min_user=2, min_item=2)
    got = set(zip(out.users.tolist(), out.items.tolist(), strict=True))
    assert got == {(0, 0), (0, 1), (1, 0), (1, 1)}


@pytest.mark.parametrize("seed", range(4))
def test_k_core_matches_naive_fixed_point(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, 30, 150), rng.integers(0, 25, 150),
                                              strict=True)}
    users, items = (np.array(x) for x in zip(*sorted(pairs), strict=True))
    out = k_core(Interactions(users, items), 30, 25, min_user=3, min_item=4)
    got = set(zip(out.users.tolist(), out.items.tolist(), strict=True))
    assert got == _naive_k_core(pairs, 3, 4)
    du = np.bincount(out.users)
    di = np.bincount(out.items)
    assert (du[du > 0] >= 3).all() and (di[di > 0] >= 4).all()


def test_k_core_of_one_is_identity() -> None:
    inter = Interactions(np.array([0, 1]), np.array([0, 0]))
    assert k_core(inter, 2, 1, 1, 1) is inter


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


@pytest.mark.parametrize("split", ["random", "temporal", "leave-one-out"])
@pytest.mark.parametrize("seed", [0, 1])
def test_build_cold_items_never_in_training(planted, tmp_path: Path, split: str,
                                            seed: int) -> None:
    cfg = BuildConfig(interactions=str(planted.interactions), no_text=True, split=split,
                      test_ratio=0.2, valid_ratio=0.1, cold_items=0.2, seed=seed)
    graph = build_graph(cfg, tmp_path / "graph")
    cold = graph.cold_items
    assert cold.sum() == round(graph.num_items * 0.2) == graph.meta["num_cold_items"]
    train_items = graph.items[graph.folds == TRAIN]
    assert not cold[train_items].any()
    valid_cold = set(graph.items[(graph.folds == VALID) & cold[graph.items]].tolist())
    test_cold = set(graph.items[(graph.folds == TEST) & cold[graph.items]].tolist())
    assert not valid_cold & test_cold  # whole items: none is validated on and tested again
    assert valid_cold | test_cold == set(np.flatnonzero(cold).tolist())
    # The folds partition the deduplicated interactions, with no (user, item) pair twice.
    assert len(graph.folds) == graph.meta["num_interactions"] == (
        graph.meta["num_train"] + graph.meta["num_valid"] + graph.meta["num_test"])
    keys = graph.users * graph.num_items + graph.items
    assert len(np.unique(keys)) == len(keys)
    # Same seed -> same graph.
    again = build_graph(cfg, tmp_path / "again")
    np.testing.assert_array_equal(again.folds, graph.folds)
    np.testing.assert_array_equal(again.cold_items, graph.cold_items)
    assert again.meta["fingerprint"] == graph.meta["fingerprint"]


def test_build_lightgcn_test_only_items_are_cold(lightgcn_files, tmp_path: Path) -> None:
    cfg = BuildConfig(train=str(lightgcn_files.train), test=str(lightgcn_files.test),
                      no_text=True)
    graph = build_graph(cfg, tmp_path / "graph")
    assert graph.meta["num_train"] == 13 and graph.meta["num_test"] == 6
    assert graph.meta["num_valid"] == 0 and graph.meta["split"]["strategy"] == "given"
    assert graph.item_ids[graph.cold_items].tolist() == ["6"]
    assert not graph.cold_items[graph.items[graph.folds == TRAIN]].any()
    # Integer ids keep index == raw id.
    assert graph.user_ids.tolist() == ["0", "1", "2", "3", "4"]
    assert graph.item_ids.tolist() == [str(i) for i in range(7)]


@pytest.mark.parametrize("seed", range(6))
def test_build_lightgcn_extra_cold_items_whole(lightgcn_files, tmp_path: Path, seed: int) -> None:
    cfg = BuildConfig(train=str(lightgcn_files.train), test=str(lightgcn_files.test),
                      no_text=True, cold_items=0.5, valid_ratio=0.2, seed=seed)
    graph = build_graph(cfg, tmp_path / "graph")
    cold = graph.cold_items
    assert cold[graph.item_ids.tolist().index("6")]
    assert not cold[graph.items[graph.folds == TRAIN]].any()
    valid_cold = set(graph.items[(graph.folds == VALID) & cold[graph.items]].tolist())
    test_cold = set(graph.items[(graph.folds == TEST) & cold[graph.items]].tolist())
    assert not valid_cold & test_cold
    # The given test file stays the test split.
    assert graph.meta["num_test"] >= 6
