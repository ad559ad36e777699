"""graphrec.serve.index and the recommender's "ann" retrieval: the MIPS -> L2 augmentation,
recall against exact search on a clustered synthetic catalog, known items and padding never
leaking into lists, and the tail boost's spread computed without scoring every item."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from graphrec.data import Csr
from graphrec.errors import ConfigError
from graphrec.serve.index import (
    DEFAULT_NPROBE,
    AnnIndex,
    augment_items,
    augment_queries,
    default_nlist,
)
from graphrec.serve.recommender import Recommender, score_covariance, score_std

pytest.importorskip("faiss")


def clustered_catalog(num_items: int = 20_000, dim: int = 32, num_users: int = 300,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(items [I, d], users [U, d]) float32 from a mixture of 128 overlapping Gaussians,
    item norms log-normal (spread like LightGCN's), users drawn near the same centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((128, dim))
    items = centres[rng.integers(128, size=num_items)] + 0.75 * rng.standard_normal(
        (num_items, dim))
    items *= rng.lognormal(0.0, 0.4, size=(num_items, 1)) / np.sqrt(dim)
    users = centres[rng.integers(128, size=num_users)] + 0.75 * rng.standard_normal(
        (num_users, dim))
    return items.astype(np.float32), users.astype(np.float32)


def synthetic_arrays(items: np.ndarray, users: np.ndarray, known: list[np.ndarray],
                     seed: int = 0) -> dict:
    """Serving arrays (as ``load_arrays`` gives them) of a synthetic model; degrees grow
    with the item norm, as popular items' embeddings do."""
    rng = np.random.default_rng(seed)
    norms = np.linalg.norm(items, axis=1)
    rows = np.repeat(np.arange(len(users)), [len(k) for k in known])
    return {
        "user_ids": np.array([f"u{u}" for u in range(len(users))]),
        "item_ids": np.array([f"i{i}" for i in range(len(items))]),
        "item_titles": [f"Item {i}" for i in range(len(items))],
        "user_emb": users, "item_emb": items, "text_emb": None,
        "known": Csr.from_pairs(rows, np.concatenate(known).astype(np.int64), len(users)),
        "item_degree": rng.poisson(20 * (norms / norms.mean()) ** 3),
    }


@pytest.fixture(scope="module")
def catalog() -> tuple[np.ndarray, np.ndarray]:
    return clustered_catalog()


@pytest.fixture(scope="module")
def synthetic(catalog) -> tuple[Recommender, Recommender]:
    """(exact, ann) recommenders over the clustered catalog; each user knows 10 items."""
    items, users = catalog
    rng = np.random.default_rng(1)
    known = [rng.choice(len(items), 10, replace=False) for _ in users]
    arrays = synthetic_arrays(items, users, known)
    return (Recommender(arrays, {}, Path("synthetic")),
            Recommender(arrays, {}, Path("synthetic"), index="ann"))


def overlap(a, b) -> float:
    """Mean share of list b's items that list a has too, over pairs of lists."""
    return float(np.mean([len({r.item for r in x} & {r.item for r in y}) / len(y)
                          for x, y in zip(a, b, strict=True)]))


def test_the_augmentation_turns_l2_nearest_into_largest_inner_product() -> None:
    rng = np.random.default_rng(0)
    items = (rng.standard_normal((400, 8)) * rng.lognormal(0, 0.5, (400, 1))).astype(np.float32)
    queries = rng.standard_normal((50, 8)).astype(np.float32)
    lifted = augment_items(items)
    norms = np.linalg.norm(lifted, axis=1)
    np.testing.assert_allclose(norms, norms.max(), rtol=1e-5)  # every item on one sphere
    np.testing.assert_array_equal(augment_queries(queries)[:, -1], 0.0)
    index = AnnIndex.build(items, nlist=4, nprobe=4)  # every list scanned: exhaustive
    mips = np.argmax(queries @ items.T, axis=1)
    np.testing.assert_array_equal(index.search(queries, 1)[:, 0], mips)
    # Plain L2 nearest neighbours are another ranking: the augmentation is what makes it
    l2 = np.argmin(((queries[:, None, :] - items[None]) ** 2).sum(-1), axis=1)
    assert (l2 != mips).mean() > 0.3


def test_recall_at_20_against_exact_search(catalog) -> None:
    items, users = catalog
    index = AnnIndex.build(items)
    assert index.nlist == default_nlist(len(items)) == 512 and index.nprobe == DEFAULT_NPROBE
    assert index.build_seconds > 0 and index.memory_bytes >= items.nbytes
    exact = torch.topk(torch.from_numpy(users @ items.T), 20).indices
    cand = torch.from_numpy(index.search(users, 20 + 16))
    assert (cand >= 0).all()
    scores = (torch.from_numpy(items)[cand] @ torch.from_numpy(users)[:, :, None])[:, :, 0]
    found = cand.gather(1, torch.topk(scores, 20).indices)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 20
                      for a, b in zip(found, exact, strict=True)])
    assert recall >= 0.95, recall


def test_search_pads_with_minus_one_when_the_scanned_lists_run_short() -> None:
    items, users = clustered_catalog(2000, 8, 20)
    index = AnnIndex.build(items, nlist=50, nprobe=1)
    cand = index.search(users, 200)  # one list of ~40 items scanned
    assert cand.shape == (20, 200) and cand.dtype == np.int64
    assert (cand == -1).any() and (cand >= -1).all()
    with pytest.raises(ConfigError, match="nlist"):
        AnnIndex.build(items[:10], nlist=11)


def test_ann_lists_match_exact_and_never_hold_known_items(synthetic) -> None:
    exact, ann = synthetic
    users = [f"u{u}" for u in range(100)]
    assert overlap(ann.recommend_batch(users, 20), exact.recommend_batch(users, 20)) >= 0.95
    for user in users[:20]:
        known = {f"i{i}" for i in ann.known.row(ann.user_index(user))}
        assert not known & {r.item for r in ann.recommend(user, 20)}


def test_known_sets_larger_than_k_are_fetched_past(catalog) -> None:
    # Each user already has their 100 best items: every one of them must be fetched past.
    items, users = catalog[0], catalog[1][:20]
    best = torch.topk(torch.from_numpy(users @ items.T), 100).indices.numpy()
    arrays = synthetic_arrays(items, users, list(best))
    exact = Recommender(arrays, {}, Path("synthetic"))
    ann = Recommender(arrays, {}, Path("synthetic"), index="ann")
    ids = [f"u{u}" for u in range(len(users))]
    lists = ann.recommend_batch(ids, 10)
    for u, recs in enumerate(lists):
        assert len(recs) == 10 and not {f"i{i}" for i in best[u]} & {r.item for r in recs}
    assert overlap(lists, exact.recommend_batch(ids, 10)) >= 0.9


def test_short_candidate_lists_fall_back_to_exact_and_leak_no_padding() -> None:
    items, users = clustered_catalog(2000, 8, 10)
    known = [np.arange(u, 60 + u) for u in range(len(users))]
    rec = Recommender(synthetic_arrays(items, users, known), {}, Path("synthetic"))
    exact = [rec.recommend(f"u{u}", 100) for u in range(len(users))]
    rec.build_index(nlist=50, nprobe=1)  # ~40 items a list: too few for 100 + 60 known
    ids = [f"u{u}" for u in range(len(users))]
    for lists in (rec.recommend_batch(ids, 100), [rec.recommend(u, 100) for u in ids]):
        assert [[r.item for r in x] for x in lists] == [[r.item for r in x] for x in exact]


def test_lists_shorter_than_k_when_the_catalog_is_small() -> None:
    items, users = clustered_catalog(40, 8, 3)
    known = [np.arange(5), np.arange(0), np.arange(39)]
    rec = Recommender(synthetic_arrays(items, users, known), {}, Path("synthetic"),
                      index="ann")
    assert rec.ann.nlist == 1
    lists = rec.recommend_batch(["u0", "u1", "u2"], 50)
    assert [len(x) for x in lists] == [35, 40, 1]
    assert lists[2][0].item == "i39"
    assert len(rec.recommend_batch(["u0"], 50, include_seen=True)[0]) == 40
    assert rec.recommend_batch([], 5) == []


def test_the_boosts_spread_is_the_std_of_the_whole_score_row(catalog) -> None:
    items, users = map(torch.from_numpy, catalog)
    std = score_std(users, score_covariance(items))
    np.testing.assert_allclose(std.numpy(), (users @ items.T).double().std(dim=1).numpy(),
                               rtol=1e-4)


@pytest.mark.parametrize("boost", [2.0, 5.0])
def test_boosted_ann_lists_overlap_boosted_exact_ones(synthetic, boost: float) -> None:
    # The index is asked with the boost (a tail coordinate), so the tail items it lifts
    # are among the candidates even when they are far down the plain ranking.
    exact, ann = synthetic
    users = [f"u{u}" for u in range(100)]
    boosted = exact.recommend_batch(users, 20, tail_boost=boost)
    assert overlap(boosted, exact.recommend_batch(users, 20)) < 0.7  # other lists, and ...
    assert overlap(ann.recommend_batch(users, 20, tail_boost=boost), boosted) >= 0.9  # found


def test_ann_with_diversity_and_for_new_users(synthetic) -> None:
    exact, ann = synthetic
    for user in ("u0", "u1", "u2"):
        assert overlap([ann.recommend(user, 10, diversity=0.5)],
                       [exact.recommend(user, 10, diversity=0.5)]) >= 0.8
    history = ["i1", "i2", "i3"]
    new = ann.recommend_new_user(history, 20)
    assert overlap([new], [exact.recommend_new_user(history, 20)]) >= 0.9
    assert not set(history) & {r.item for r in new}
