"""graphrec.eval.compare: the BCa interval and the sign-flip p-value against scipy's, Holm's
correction and the paired table by hand, and the A/A calibration as a seeded simulation."""

from __future__ import annotations

import numpy as np
import pytest

from graphrec.errors import ConfigError, DataError
from graphrec.eval.compare import (
    bca_interval,
    compare_values,
    holm,
    metric_keys,
    sign_flip_p_value,
)

stats = pytest.importorskip("scipy.stats")


def skewed(rng: np.random.Generator, n: int) -> np.ndarray:
    """recall-like values: mostly 0, a long right tail."""
    return (rng.random(n) < 0.3) * rng.beta(0.7, 2.0, n)


def test_bca_matches_scipy():
    rng = np.random.default_rng(1)
    for x in (skewed(rng, 300), rng.exponential(1.0, 150) - 0.4):
        ours = bca_interval(x, resamples=40_000, seed=2)
        ref = stats.bootstrap((x,), np.mean, method="BCa", n_resamples=40_000,
                              rng=np.random.default_rng(3)).confidence_interval
        width = ref.high - ref.low
        assert ours[0] == pytest.approx(ref.low, abs=0.04 * width)
        assert ours[1] == pytest.approx(ref.high, abs=0.04 * width)
        # skewed data: BCa is not the symmetric percentile interval around the mean
        assert ours[0] < x.mean() < ours[1]


def test_bca_degenerate_and_bad_input():
    assert bca_interval(np.zeros(50)) == (0.0, 0.0)
    assert bca_interval(np.full(10, 0.25)) == (0.25, 0.25)
    with pytest.raises(DataError, match="NaN"):
        bca_interval(np.array([0.1, np.nan, 0.2]))
    with pytest.raises(DataError, match="at least 2"):
        bca_interval(np.array([0.5]))
    with pytest.raises(ConfigError, match="confidence"):
        bca_interval(np.arange(5.0), confidence=1.5)


def test_sign_flip_exact_equals_scipy():
    d = np.array([0.3, -0.1, 0.25, 0.0, 0.4, 0.05, -0.2, 0.15])  # 2^8 = 256 flips
    ours = sign_flip_p_value(d, resamples=1000)
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples",
                                 n_resamples=np.inf).pvalue
    assert ours == pytest.approx(ref, abs=1e-12)


def test_sign_flip_sampled_agrees_with_scipy():
    rng = np.random.default_rng(4)
    d = skewed(rng, 200) - skewed(rng, 200) + 0.02
    ours = sign_flip_p_value(d, resamples=40_000, seed=5)
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples",
                                 n_resamples=40_000, rng=np.random.default_rng(6)).pvalue
    assert 0.01 < ref < 0.9
    assert ours == pytest.approx(ref, abs=0.01)
    assert sign_flip_p_value(np.zeros(30)) == 1.0


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, 2 * 0.03, max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.2]) == pytest.approx([0.2])


def test_paired_table_by_hand():
    a = {"recall@20": np.array([0.0, 1.0, 0.5, 0.5, 0.25]),
         "tail_recall@20": np.array([0.0, np.nan, 1.0, np.nan, 0.0])}
    b = {"recall@20": np.array([1.0, 1.0, 0.0, 0.5, 0.5]),
         "tail_recall@20": np.array([1.0, np.nan, 1.0, np.nan, 1.0])}
    out = compare_values(a, b, resamples=500)
    r = out.metrics["recall@20"]
    assert out.users == 5
    assert (r.a, r.b, r.diff) == pytest.approx((0.45, 0.6, 0.15))
    assert (r.wins_a, r.wins_b, r.ties, r.users) == (1, 2, 2, 5)
    # 5 users: all 32 sign flips are enumerated; |mean| >= 0.15 for the flips of
    # d = (1, 0, -0.5, 0, 0.25) whose signed sum is in {-1.75, -1.25, -0.75, 0.75, 1.25, 1.75}
    d = np.array([1.0, 0.0, -0.5, 0.0, 0.25])
    flips = [np.array([(c >> j & 1) * -2 + 1 for j in range(5)]) for c in range(32)]
    expected = np.mean([abs((s * d).mean()) >= 0.15 - 1e-12 for s in flips])
    assert r.p_value == pytest.approx(expected)
    t = out.metrics["tail_recall@20"]
    assert (t.users, t.wins_b, t.ties) == (3, 2, 1)
    assert t.p_holm == pytest.approx(min(1.0, max(holm([r.p_value, t.p_value]))))
    assert out.to_json()["metrics"]["recall@20"]["ci"] == list(r.ci)


def test_a_model_against_itself():
    rng = np.random.default_rng(7)
    values = {"recall@20": skewed(rng, 400), "ndcg@20": skewed(rng, 400)}
    out = compare_values(values, values)
    for m in out.metrics.values():
        assert m.diff == 0.0 and m.ci == (0.0, 0.0)
        assert m.p_value == 1.0 and m.p_holm == 1.0 and m.ties == 400


def test_misaligned_values_are_refused():
    a = {"tail_recall@20": np.array([0.0, np.nan, 1.0])}
    b = {"tail_recall@20": np.array([0.0, 1.0, np.nan])}
    with pytest.raises(DataError, match="different users"):
        compare_values(a, b)
    with pytest.raises(DataError, match="one length"):
        compare_values({"r": np.zeros(3)}, {"r": np.zeros(4)})
    with pytest.raises(ConfigError, match="metrics"):
        metric_keys(["recall", "coverage"], (20,))
    assert metric_keys(["recall", "cold_ndcg"], (10, 20)) == [
        "recall@10", "cold_ndcg@10", "recall@20", "cold_ndcg@20"]


def test_aa_calibration_simulation():
    """Seeded: 200 A/A pairs (each user's two values drawn independently from the user's
    own quality, so the true mean difference is 0): the 95% interval covers 0 in about 95%
    of them and p < 0.05 in about 5%; with a real gain (0.06 added, capped at 1) it almost
    never covers 0."""
    rng = np.random.default_rng(8)
    covered = rejected = power = 0
    reps, n = 200, 300
    for rep in range(reps):
        quality = rng.beta(0.8, 3.0, n)
        a = rng.binomial(5, quality) / 5
        b = rng.binomial(5, quality) / 5
        out = compare_values({"recall@20": a}, {"recall@20": b}, resamples=2000, seed=rep)
        m = out.metrics["recall@20"]
        covered += m.ci[0] <= 0.0 <= m.ci[1]
        rejected += m.p_value < 0.05
        better = np.minimum(b + 0.06, 1.0)
        gain = compare_values({"r": a}, {"r": better}, resamples=2000, seed=rep)
        power += gain.metrics["r"].ci[0] > 0
    assert 0.92 <= covered / reps <= 0.98
    assert 0.02 <= rejected / reps <= 0.08
    assert power / reps >= 0.9
