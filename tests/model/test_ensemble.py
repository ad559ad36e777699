"""graphrec.model.ensemble: the blend's formula, rows without spread, a filter narrower than
the catalog, and the weight check; and graphrec.eval.protocol.evaluate_variants, which
scores a validation grid in one pass, against evaluating each variant alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphrec.data.csr import Csr
from graphrec.errors import ConfigError
from graphrec.eval.protocol import evaluate_ranking, evaluate_variants
from graphrec.model.ensemble import EnsembleScorer, blend, check_weight, standardise
from graphrec.model.filter import FilterConfig, GraphFilter
from tests.model.test_filter import random_train


def test_standardise_and_blend_follow_the_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 9, generator=g) * 5 + 2, torch.randn(4, 9, generator=g) * 0.01
    z = standardise(a)
    assert torch.allclose(z.mean(1), torch.zeros(4), atol=1e-6)
    assert torch.allclose(z.std(1), torch.ones(4), atol=1e-5)
    want = 0.7 * (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True) \
        + 0.3 * (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True)
    assert torch.allclose(blend(a, b, 0.3), want, atol=1e-5)
    assert torch.equal(blend(a, b, 0.0), standardise(a))
    assert torch.equal(blend(a, b, 1.0), standardise(b))
    assert torch.equal(standardise(torch.full((2, 5), 3.0)), torch.zeros(2, 5))


def test_items_past_the_filter_score_0_in_it():
    a, b = torch.randn(3, 6), torch.randn(3, 4)
    padded = torch.nn.functional.pad(b, (0, 2))
    assert torch.equal(blend(a, b, 0.4), blend(a, padded, 0.4))


@pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan")])
def test_the_weight_is_checked(weight):
    with pytest.raises(ConfigError, match="weight"):
        check_weight(weight)


def test_the_scorer_blends_factors_and_filter_per_user():
    dense, train = random_train(2)
    users, items = dense.shape
    f = GraphFilter(train, items, FilterConfig(rank=4))
    g = torch.Generator().manual_seed(1)
    ue, ie = torch.randn(users, 3, generator=g), torch.randn(items, 3, generator=g)
    scorer = EnsembleScorer(ue, ie, f, 0.25)
    batch = torch.tensor([0, 7, 12])
    assert torch.allclose(scorer.score(batch), blend(ue[batch] @ ie.T, f.score(batch), 0.25))


def test_evaluate_variants_equals_each_variant_evaluated_alone():
    dense, train = random_train(3, users=60, items=30)
    rng = np.random.default_rng(0)
    pairs = np.argwhere((rng.random(dense.shape) < 0.1) & (dense == 0))
    target = Csr.from_pairs(pairs[:, 0], pairs[:, 1], dense.shape[0])
    f = GraphFilter(train, 30, FilterConfig(rank=6))
    ranks, alphas = (0, 3, 6), (0.3, 1.0)
    got = evaluate_variants(lambda u: f.score_grid(u, ranks, alphas), 6, train, target, 30,
                            ks=(5, 10), batch_users=16)
    settings = [(r, a) for r in ranks for a in alphas]
    for metrics, (rank, alpha) in zip(got, settings, strict=True):
        alone = evaluate_ranking(f.with_settings(rank, alpha).score, train, target, 30,
                                 ks=(5, 10))
        for key, value in metrics.items():
            assert value == pytest.approx(alone[key], abs=1e-6), (rank, alpha, key)
    assert len({round(m["ndcg@10"], 6) for m in got}) > 1  # the variants do differ
