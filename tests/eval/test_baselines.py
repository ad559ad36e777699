"""Baselines: MostPopular ranks by degree; ItemKNN equals a dense numpy cosine computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphrec.data import Csr
from graphrec.errors import ConfigError, DataError
from graphrec.eval.baselines import ItemKNN, MostPopular
from graphrec.eval.protocol import evaluate_ranking

# 6 users x 6 items; item 5 has no training user; every other item has a unique best
# neighbour (cosines below), so top-1 neighbour selection has a single right answer.
#   0: [0, 0, .447, .577, .5, 0]        1: [0, 0, .516, .333, .577, 0]
#   2: [.447, .516, 0, .775, .894, 0]   3: [.577, .333, .775, 0, .866, 0]
#   4: [.5, .577, .894, .866, 0, 0]
X = np.array(
    [
        [0, 0, 1, 1, 1, 0],
        [1, 0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 1, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 0],
        [0, 1, 1, 0, 1, 0],
    ],
    dtype=np.float64,
)


def as_csr(x: np.ndarray) -> Csr:
    rows, cols = np.nonzero(x)
    return Csr.from_pairs(rows, cols, x.shape[0])


def dense_cosine(x: np.ndarray, shrink: float = 0.0) -> np.ndarray:
    co = x.T @ x
    norm = np.sqrt(np.diag(co))
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = co / (np.outer(norm, norm) + shrink)
    sim = np.nan_to_num(sim)
    np.fill_diagonal(sim, 0.0)
    return sim


def test_most_popular_ranks_by_degree():
    train = as_csr(X)
    model = MostPopular(train, 6)
    scores = model.score(torch.tensor([0, 3]))
    assert scores.dtype == torch.float32 and scores.shape == (2, 6)
    assert scores[0].tolist() == [1, 3, 5, 3, 4, 0]
    assert torch.equal(scores[0], scores[1])
    # Evaluated with the shared code: user 3 has seen {1}; unseen degrees 2:5 4:4 3:3 0:1 5:0,
    # so its top-2 is [2, 4] and target {3} is missed at K=2, found at K=3.
    target = Csr.from_pairs(np.array([3]), np.array([3]), 6)
    out = evaluate_ranking(model.score, train, target, num_items=6, ks=(2, 3))
    assert out["recall@2"] == 0.0 and out["recall@3"] == 1.0


def test_most_popular_counts_repeated_pairs_once():
    train = Csr.from_pairs(np.array([0, 0, 1]), np.array([2, 2, 1]), 2)
    assert MostPopular(train, 3).score(torch.tensor([0]))[0].tolist() == [0, 1, 1]


@pytest.mark.parametrize("shrink", [0.0, 2.5])
def test_item_knn_equals_dense_cosine_with_all_neighbours(shrink):
    model = ItemKNN(as_csr(X), 6, neighbors=6, shrink=shrink)
    expected = dense_cosine(X, shrink)
    assert np.allclose(model.similarity.to_dense().numpy(), expected, atol=1e-6)
    users = torch.arange(6)
    assert np.allclose(model.score(users).numpy(), X @ expected, atol=1e-6)
    assert not torch.isnan(model.score(users)).any()  # item 5 has no users: zeros, not NaN


def test_item_knn_chunked_fit_matches_single_block():
    a = ItemKNN(as_csr(X), 6, neighbors=2, chunk_items=1).similarity.to_dense()
    b = ItemKNN(as_csr(X), 6, neighbors=2).similarity.to_dense()
    assert torch.equal(a, b)


def test_item_knn_single_neighbour_keeps_the_best():
    sim = dense_cosine(X)
    kept = ItemKNN(as_csr(X), 6, neighbors=1).similarity.to_dense().numpy()
    for i in range(5):
        assert np.flatnonzero(kept[i]).tolist() == [np.argmax(sim[i])]
        assert kept[i].max() == pytest.approx(sim[i].max(), abs=1e-6)
    assert not kept[5].any()  # no training user, no neighbour


def test_item_knn_random_matrix_against_dense():
    rng = np.random.default_rng(0)
    x = (rng.random((40, 30)) < 0.2).astype(np.float64)
    model = ItemKNN(as_csr(x), 30, neighbors=5, shrink=1.0, chunk_items=7)
    sim = dense_cosine(x, 1.0)
    kept = model.similarity.to_dense().numpy()
    assert ((kept > 0).sum(axis=1) <= 5).all()
    # the kept entries are the true similarities, and each row keeps its 5 largest values
    assert np.allclose(kept[kept > 0], sim[kept > 0], atol=1e-6)
    for i in range(30):
        top = np.sort(sim[i])[::-1][:5]
        assert np.allclose(np.sort(kept[i])[::-1][:5], top[:5] * (top[:5] > 0), atol=1e-6)
    users = torch.tensor([3, 0, 17])
    assert np.allclose(model.score(users).numpy(), x[[3, 0, 17]] @ kept, atol=1e-5)


def test_item_knn_bad_arguments():
    with pytest.raises(ConfigError, match="neighbors"):
        ItemKNN(as_csr(X), 6, neighbors=0)
    with pytest.raises(ConfigError, match="shrink"):
        ItemKNN(as_csr(X), 6, shrink=-1.0)
    with pytest.raises(DataError, match="item indices"):
        ItemKNN(as_csr(X), 4)


def test_item_knn_through_the_shared_evaluation():
    train = as_csr(X)
    target = Csr.from_pairs(np.array([0, 2, 3, 5]), np.array([0, 4, 2, 3]), 6)
    model = ItemKNN(train, 6, neighbors=2)
    dense_scores = torch.from_numpy(X @ model.similarity.to_dense().numpy().astype(np.float64))
    from graphrec.eval.protocol import evaluate_scores

    expected = evaluate_scores(dense_scores.float(), train, target, ks=(1, 3))
    got = evaluate_ranking(model.score, train, target, num_items=6, ks=(1, 3), batch_users=2)
    assert got == pytest.approx(expected, abs=1e-6)
