"""graphrec.train.sampling: the BPR sampler's guarantees (negatives never positives, always
warm), its distributions, the alias table, the membership test and the hardest-candidate
choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graphrec.train.sampling import BPRSampler, alias_table, hardest
from tests.helpers import sampler_graph


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
@pytest.mark.parametrize("seed", [0, 1])
def test_negatives_are_never_positives_and_always_warm(negatives: str, seed: int) -> None:
    users, items, ni = sampler_graph(seed)
    sampler = BPRSampler(users, items, ni, negatives, alpha=0.75)
    positives = set(zip(users.tolist(), items.tolist(), strict=True))
    gen = torch.Generator().manual_seed(seed)
    seen_users, seen_neg = [], []
    for _ in range(20):
        for u, p, n in sampler.epoch(64, gen):
            assert u.dtype == p.dtype == n.dtype == torch.long
            seen_users.append(u)
            seen_neg.append(n)
            assert all((uu, pp) in positives for uu, pp in zip(u.tolist(), p.tolist(),
                                                                strict=True))
    u, n = torch.cat(seen_users), torch.cat(seen_neg)
    assert not any((uu, nn) in positives for uu, nn in zip(u.tolist(), n.tolist(), strict=True))
    assert (n < 50).all()  # items 50..59 have no training interaction
    assert not sampler.is_positive(u, n).any()


def test_dense_user_never_gets_a_positive_negative() -> None:
    # User 0 holds 45 of the 50 warm items: 51 draws all colliding is likely over 20k rows.
    users = torch.tensor([0] * 45 + [1] * 50)
    items = torch.tensor(list(range(45)) + list(range(50)))
    sampler = BPRSampler(users, items, 50, "uniform")
    neg = sampler.negatives(torch.zeros(20_000, dtype=torch.long),
                            torch.Generator().manual_seed(0))
    assert (neg >= 45).all()


def test_epoch_covers_every_interaction_once() -> None:
    users, items, ni = sampler_graph(3)
    sampler = BPRSampler(users, items, ni)
    batches = list(sampler.epoch(37, torch.Generator().manual_seed(0)))
    assert len(batches) == sampler.num_batches(37) == math.ceil(len(users) / 37)
    got = sorted(zip(torch.cat([b[0] for b in batches]).tolist(),
                     torch.cat([b[1] for b in batches]).tolist(), strict=True))
    assert got == sorted(zip(users.tolist(), items.tolist(), strict=True))


def test_sampler_is_reproducible() -> None:
    users, items, ni = sampler_graph(0)
    sampler = BPRSampler(users, items, ni, "popularity")
    a = [b[2] for b in sampler.epoch(50, torch.Generator().manual_seed(7))]
    b = [b[2] for b in sampler.epoch(50, torch.Generator().manual_seed(7))]
    c = [b[2] for b in sampler.epoch(50, torch.Generator().manual_seed(8))]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("draw_chunk", [2**24, 100])  # one redraw loop, or several
@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_negative_candidates_are_independent_draws_and_never_positives(
        negatives: str, draw_chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("graphrec.train.sampling.DRAW_CHUNK", draw_chunk)
    users, items, ni = sampler_graph(2)
    sampler = BPRSampler(users, items, ni, negatives)
    positives = set(zip(users.tolist(), items.tolist(), strict=True))
    batches = list(sampler.epoch(64, torch.Generator().manual_seed(0), candidates=3))
    u = torch.cat([b[0] for b in batches])
    n = torch.cat([b[2] for b in batches])
    assert n.shape == (len(users), 3) and n.dtype == torch.long
    assert not any((uu, nn) in positives for uu, col in zip(u.tolist(), n.tolist(), strict=True)
                   for nn in col)
    assert (n < 50).all()
    # Three separate draws: the columns differ.
    assert (n[:, 0] != n[:, 1]).float().mean() > 0.9
    assert (n[:, 1] != n[:, 2]).float().mean() > 0.9
    # Every interaction once, as in a single-candidate epoch.
    pairs = zip(u.tolist(), torch.cat([b[1] for b in batches]).tolist(), strict=True)
    assert sorted(pairs) == sorted(positives)


@pytest.mark.parametrize("chunk", [8192, 7])  # one block, or several and a short last one
def test_hardest_picks_each_users_highest_scoring_candidate(chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    user_rows = torch.randn(50, 8, generator=gen)
    item_emb = torch.randn(30, 8, generator=gen)
    candidates = torch.randint(30, (50, 5), generator=gen)
    pick = hardest(user_rows, torch.arange(50), item_emb, candidates, chunk=chunk)
    assert pick.shape == (50,) and pick.dtype == torch.long
    for b in range(50):
        scores = [float(user_rows[b] @ item_emb[c]) for c in candidates[b].tolist()]
        assert int(pick[b]) == int(np.argmax(scores))


def draw_frequencies(negatives: str, alpha: float, n: int = 200_000):
    """Negative frequencies for a user whose only positive is item 0, and the degrees."""
    rng = np.random.default_rng(0)
    num_items = 40
    degree = np.concatenate([[3], rng.integers(1, 60, num_items - 5), [0, 0, 0, 0]])
    items = np.repeat(np.arange(num_items), degree)
    users = np.arange(len(items)) + 1  # every interaction its own user...
    users[0] = 0  # ...except user 0, who holds item 0
    sampler = BPRSampler(torch.as_tensor(users), torch.as_tensor(items), num_items, negatives,
                         alpha)
    neg = sampler.negatives(torch.zeros(n, dtype=torch.long), torch.Generator().manual_seed(1))
    return np.bincount(neg.numpy(), minlength=num_items) / n, degree


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_popularity_negatives_follow_degree_power(alpha: float) -> None:
    freq, degree = draw_frequencies("popularity", alpha)
    p = np.where(degree > 0, (degree + 1.0) ** alpha, 0.0)
    p[0] = 0.0  # the user's own positive is redrawn
    p /= p.sum()
    assert freq[0] == 0 and (freq[degree == 0] == 0).all()
    # Within 4.5 standard errors of a multinomial frequency, item by item.
    tolerance = 4.5 * np.sqrt(p * (1 - p) / 200_000) + 1e-4
    assert (np.abs(freq - p) <= tolerance).all(), np.abs(freq - p).max()


def test_uniform_negatives_are_uniform_over_warm_items() -> None:
    freq, degree = draw_frequencies("uniform", 0.5)
    allowed = degree > 0
    allowed[0] = False
    p = allowed / allowed.sum()
    assert freq[0] == 0 and (freq[degree == 0] == 0).all()
    assert np.abs(freq - p).max() <= 4.5 * np.sqrt(p.max() * (1 - p.max()) / 200_000)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alias_table_reproduces_the_probabilities_exactly(seed: int) -> None:
    # What each column gives to each item, summed: the table's distribution, no sampling.
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(200, generator=gen) ** 4  # skewed, a few items dominate
    probs[torch.randperm(200, generator=gen)[:30]] = 0.0  # items that must never be drawn
    probs /= probs.sum()
    accept, alias = alias_table(probs)
    implied = accept.double().clone()
    implied.index_add_(0, alias, 1.0 - accept.double())
    implied /= len(probs)
    assert torch.allclose(implied, probs.double(), atol=1e-6)
    assert (implied[probs == 0] == 0).all()


def test_alias_table_of_a_single_item_and_of_uniform_probabilities() -> None:
    accept, alias = alias_table(torch.tensor([0.0, 1.0, 0.0]))
    assert accept.tolist() == [0.0, 1.0, 0.0] and alias.tolist() == [1, 1, 1]
    accept, alias = alias_table(torch.full((7,), 1 / 7))
    assert torch.allclose(accept, torch.ones(7)) and alias.tolist() == list(range(7))


@pytest.mark.parametrize("use_filter", [True, False])
def test_membership_test_is_exact_for_every_pair(use_filter: bool) -> None:
    users, items, ni = sampler_graph(4)
    sampler = BPRSampler(users, items, ni)
    if not use_filter:
        sampler.filter = None  # the plain binary search, as for ids beyond 2^30
    else:
        # The pre-filter is not trivial: it stops most non-interactions, passes all positives.
        assert sampler.passes_filter(users, items).all()
    every_u, every_i = torch.meshgrid(torch.arange(int(users.max()) + 1), torch.arange(ni),
                                      indexing="ij")
    every_u, every_i = every_u.flatten(), every_i.flatten()
    got = sampler.is_positive(every_u, every_i)
    positives = set(zip(users.tolist(), items.tolist(), strict=True))
    want = [(u, i) in positives for u, i in zip(every_u.tolist(), every_i.tolist(), strict=True)]
    assert got.tolist() == want
    if use_filter:
        assert sampler.passes_filter(every_u, every_i)[~got].float().mean() < 0.5


def test_sampler_rejects_unknown_negatives() -> None:
    with pytest.raises(ValueError, match="negatives"):
        BPRSampler(torch.tensor([0]), torch.tensor([0]), 1, "hard")


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_popularity_share_draws_from_the_mixture(share: float) -> None:
    rng = np.random.default_rng(0)
    num_items = 40
    degree = np.concatenate([[3], rng.integers(1, 60, num_items - 5), [0, 0, 0, 0]])
    items = np.repeat(np.arange(num_items), degree)
    users = np.arange(len(items)) + 1
    users[0] = 0
    sampler = BPRSampler(torch.as_tensor(users), torch.as_tensor(items), num_items,
                         "popularity", 1.0, share=share)
    n = 200_000
    neg = sampler.negatives(torch.zeros(n, dtype=torch.long), torch.Generator().manual_seed(1))
    freq = np.bincount(neg.numpy(), minlength=num_items) / n
    warm = degree > 0
    pop = np.where(warm, degree + 1.0, 0.0)
    p = share * pop / pop.sum() + (1 - share) * warm / warm.sum()
    p[0] = 0.0  # the user's own positive is redrawn
    p /= p.sum()
    assert freq[0] == 0 and (freq[~warm] == 0).all()
    assert (np.abs(freq - p) <= 4.5 * np.sqrt(p * (1 - p) / n) + 1e-4).all()


def test_top_n_pick_draws_among_each_users_n_highest_candidates() -> None:
    # DNS(M, N): the picked column is always among the user's N highest-scoring candidates,
    # and over many draws every one of the N is picked.
    gen = torch.Generator().manual_seed(2)
    user_rows = torch.randn(40, 6, generator=gen)
    item_emb = torch.randn(30, 6, generator=gen)
    candidates = torch.randint(30, (40, 8), generator=gen)
    scores = torch.bmm(item_emb[candidates], user_rows.unsqueeze(2)).squeeze(2)
    top3 = scores.topk(3, dim=1).indices
    seen = torch.zeros(40, 8, dtype=torch.bool)
    draw = torch.Generator().manual_seed(0)
    for _ in range(60):
        pick = hardest(user_rows, torch.arange(40), item_emb, candidates, chunk=16, top=3,
                       generator=draw)
        assert (top3 == pick[:, None]).any(1).all()
        seen[torch.arange(40), pick] = True
    assert (seen.sum(1) == 3).all()
    assert torch.equal(hardest(user_rows, torch.arange(40), item_emb, candidates, top=1),
                       scores.argmax(1))
