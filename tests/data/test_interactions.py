"""graphrec.data.interactions: id maps, deduplication and k-core."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrec.data import IdMap, Interactions, deduplicate, k_core
from graphrec.data.interactions import IdGrower

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


def test_an_id_map_grows_in_order_of_first_appearance_and_keeps_its_indices() -> None:
    from graphrec.data.interactions import IdMap

    base = IdMap(np.asarray(["a", "b", "c"]))
    grown, idx = base.grow(np.asarray(["z", "b", "y", "z", "a"]))
    assert grown.ids.tolist() == ["a", "b", "c", "z", "y"]
    assert idx.tolist() == [3, 1, 4, 3, 0]
    same, idx = base.grow(np.asarray(["c"]))
    assert same.ids.tolist() == ["a", "b", "c"] and idx.tolist() == [2]


@pytest.mark.parametrize("seed", range(5))
def test_deduplicate_keeps_the_rows_a_two_key_sort_keeps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    users, items = rng.integers(0, 7, n), rng.integers(0, 5, n)
    times = rng.integers(0, 4, n).astype(np.float64)  # many ties: file order decides
    inter = Interactions(users, items, None, times)
    out, dropped = deduplicate(inter, num_items=5)
    key = users * 5 + items
    order = np.lexsort((times, key))  # the reference: stable, latest time then last row
    last = np.ones(n, dtype=bool)
    last[:-1] = key[order][1:] != key[order][:-1]
    keep = np.sort(order[last])
    assert np.array_equal(out.users, users[keep]) and np.array_equal(out.items, items[keep])
    assert np.array_equal(out.timestamps, times[keep]) and dropped == n - len(keep)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.lists(st.integers(-5, 40), min_size=1,
                                                  max_size=30)), min_size=1, max_size=6))
def test_ids_grown_chunk_by_chunk_are_numbered_as_the_whole_log(chunks) -> None:
    # Each chunk holds integers, or text (some not integers: "x3"), as a log's chunks may.
    parts = [np.asarray(v, dtype=np.int64) if as_int else
             np.asarray([f"x{x}" if x % 4 == 0 else str(x) for x in v]) for as_int, v in chunks]
    grower = IdGrower()
    provisional = [grower.add(part) for part in parts]
    id_map, renumber = grower.finish()
    whole, index = IdMap.build(np.concatenate([p.astype(str) for p in parts]))
    assert id_map.ids.tolist() == whole.ids.tolist()
    assert np.array_equal(np.concatenate([renumber[p] for p in provisional]), index)
