"""graphrec.model.filter: the graph filter's scores against the formula on a dense matrix,
cold items, chunking, and the argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphrec.data.csr import Csr
from graphrec.errors import ConfigError
from graphrec.eval.protocol import evaluate_ranking
from graphrec.model.filter import FilterConfig, GraphFilter


def random_train(seed: int, users: int = 40, items: int = 25, density: float = 0.2):
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, items)) < density).astype(np.float64)
    dense[:, -2:] = 0.0  # two items nobody has trained on
    dense[np.arange(users), rng.integers(0, items - 2, users)] = 1.0  # no empty user
    pairs = np.argwhere(dense > 0)
    return dense, Csr.from_pairs(pairs[:, 0], pairs[:, 1], users)


def expected_scores(dense: np.ndarray, rank: int, alpha: float, b: float) -> np.ndarray:
    du = np.maximum(dense.sum(1), 1) ** -b
    di_raw = dense.sum(0)
    di = np.maximum(di_raw, 1) ** -b
    norm = du[:, None] * dense * di[None, :]
    linear = dense @ norm.T @ norm
    if rank == 0:
        return linear
    _, _, vt = np.linalg.svd(norm, full_matrices=False)
    v = vt[:rank].T
    unscale = np.where(di_raw > 0, di_raw ** b, 0.0)
    return linear + alpha * ((dense * di) @ v @ v.T) * unscale


@pytest.mark.parametrize("rank,alpha,b", [(0, 0.3, 0.5), (5, 0.3, 0.5), (8, 1.0, 0.3)])
def test_scores_match_the_dense_formula(rank, alpha, b):
    dense, train = random_train(rank)
    f = GraphFilter(train, dense.shape[1], FilterConfig(rank=rank, alpha=alpha,
                                                        degree_exponent=b, niter=10))
    got = f.score(torch.arange(dense.shape[0])).numpy()
    want = expected_scores(dense, rank, alpha, b)
    assert np.allclose(got, want, atol=2e-4 * np.abs(want).max())
    assert np.all(got[:, -2:] == 0.0)  # items without training interactions score 0


def test_scores_do_not_depend_on_the_chunk():
    dense, train = random_train(1)
    f = GraphFilter(train, dense.shape[1], FilterConfig(rank=6))
    whole = f.score(torch.arange(40))
    parts = torch.cat([f.score(torch.arange(s, min(s + 7, 40))) for s in range(0, 40, 7)])
    assert torch.allclose(whole, parts, atol=1e-6)
    # the same filter fitted twice (seeded SVD) gives the same scores
    again = GraphFilter(train, dense.shape[1], FilterConfig(rank=6)).score(torch.arange(40))
    assert torch.allclose(whole, again, atol=1e-6)


def test_it_ranks_a_planted_block_above_chance():
    # two blocks of users and items; held-out items come from the user's own block
    rng = np.random.default_rng(3)
    users, items = 60, 30
    block = (np.arange(users)[:, None] < 30) == (np.arange(items)[None, :] < 15)
    dense = (rng.random((users, items)) < 0.5) & block
    held = (rng.random((users, items)) < 0.3) & block & ~dense
    pairs, test = np.argwhere(dense), np.argwhere(held)
    train = Csr.from_pairs(pairs[:, 0], pairs[:, 1], users)
    target = Csr.from_pairs(test[:, 0], test[:, 1], users)
    f = GraphFilter(train, items, FilterConfig(rank=4))
    scores = f.score(torch.arange(users))
    scores[torch.from_numpy(dense)] = float("-inf")
    top = scores.topk(5, dim=1).indices.numpy()
    in_block = block[np.arange(users)[:, None], top]
    assert in_block.mean() > 0.95  # a random order: about 0.5
    out = evaluate_ranking(f.score, train, target, items, ks=(5,))
    assert out["recall@5"] > 0.5


def test_with_settings_equals_a_filter_fitted_with_them():
    dense, train = random_train(2)
    full = GraphFilter(train, dense.shape[1], FilterConfig(rank=10, niter=10))
    users = torch.arange(dense.shape[0])
    for rank, alpha in ((0, 0.3), (4, 0.5), (10, 1.0)):
        want = expected_scores(dense, rank, alpha, 0.5)
        got = full.with_settings(rank, alpha).score(users).numpy()
        assert np.allclose(got, want, atol=2e-4 * np.abs(want).max())
    assert full.cfg.rank == 10 and full.basis.shape[1] == 10  # unchanged
    with pytest.raises(ConfigError, match="rank"):
        full.with_settings(11, 0.3)


def test_bad_settings():
    for kwargs, name in (({"rank": -1}, "rank"), ({"alpha": -0.1}, "alpha"),
                         ({"degree_exponent": 2.0}, "degree_exponent"),
                         ({"niter": -1}, "niter"), ({"oversample": -2}, "oversample")):
        with pytest.raises(ConfigError, match=name):
            FilterConfig(**kwargs)


def test_the_closed_form_within_1e_5_for_rows_grids_and_a_saved_filter():
    # Full-width randomised SVD on a tiny matrix: the low-pass subspace is exact, so every
    # path (fitted users, arbitrary rows, the validation grid, a reloaded filter) gives the
    # closed form up to float32 rounding.
    dense, train = random_train(5)
    ranks, alphas = (0, 4, 8), (0.3, 1.0)
    f = GraphFilter(train, dense.shape[1], FilterConfig(rank=8, alpha=0.3, niter=10))
    scale = np.abs(expected_scores(dense, 8, 1.0, 0.5)).max()
    users = torch.arange(dense.shape[0])
    grid = f.score_grid(users, ranks, alphas)
    for n, (rank, alpha) in enumerate([(r, a) for r in ranks for a in alphas]):
        want = expected_scores(dense, rank, alpha, 0.5)
        assert np.abs(grid[n].numpy() - want).max() <= 1e-5 * scale, (rank, alpha)
        assert np.abs(f.with_settings(rank, alpha).score(users).numpy() - want).max() \
            <= 1e-5 * scale
    rows = torch.from_numpy(dense).float()
    assert torch.allclose(f.score_rows(rows), f.score(users), atol=1e-6 * scale)
    reloaded = GraphFilter.from_arrays(f.arrays(), vars(f.cfg))
    assert torch.equal(reloaded.score(users), f.score(users))


def test_a_new_row_is_scored_by_the_filter_as_fitted():
    dense, train = random_train(6)
    f = GraphFilter(train, dense.shape[1], FilterConfig(rank=5, niter=10))
    row = np.zeros(dense.shape[1])
    row[[0, 3, 7]] = 1.0
    du = np.maximum(dense.sum(1), 1) ** -0.5
    di_raw = dense.sum(0)
    di = np.maximum(di_raw, 1) ** -0.5
    norm = du[:, None] * dense * di[None, :]
    v = np.linalg.svd(norm, full_matrices=False)[2][:5].T
    unscale = np.where(di_raw > 0, di_raw ** 0.5, 0.0)
    want = row @ norm.T @ norm + 0.3 * ((row * di) @ v @ v.T) * unscale
    got = f.score_rows(torch.from_numpy(row)[None].float())[0].numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_weights_into_split_each_score_exactly_over_the_users_items():
    dense, train = random_train(7)
    f = GraphFilter(train, dense.shape[1], FilterConfig(rank=6, alpha=0.6))
    scores = f.score(torch.arange(dense.shape[0]))
    for u, i in [(0, 1), (3, 10), (11, 24), (5, 23)]:  # 23, 24: no training interactions
        history = torch.as_tensor(train.row(u))
        parts = f.weights_into(i, history)
        assert parts.shape == history.shape
        assert abs(float(parts.sum()) - float(scores[u, i])) <= 1e-5 * scores.abs().max()
    assert torch.equal(f.weights_into(99, torch.tensor([0, 1])), torch.zeros(2))


def test_the_grid_and_a_basis_are_checked():
    _, train = random_train(8)
    f = GraphFilter(train, 25, FilterConfig(rank=4))
    with pytest.raises(ConfigError, match="ranks"):
        f.score_grid(torch.arange(3), (4, 0), (0.3,))
    with pytest.raises(ConfigError, match="rank"):
        f.score_grid(torch.arange(3), (0, 8), (0.3,))
    with pytest.raises(ConfigError, match="basis"):
        GraphFilter(train, 25, FilterConfig(rank=4), basis=torch.zeros(25, 3))
