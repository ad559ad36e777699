"""Offline A/B: two models on the same graph and split, compared user by user.

Every evaluated user is scored by both models, so each metric gives one paired difference
per user, ``d_u = metric_B(u) - metric_A(u)``. For each metric the report holds the two means,
their difference, a BCa bootstrap interval for the mean difference (users resampled with
replacement), a two-sided paired permutation p-value (the signs of the ``d_u`` flipped at
random: under "A and B are exchangeable" every flip is as likely), Holm's step-down
correction of those p-values across the metrics compared, and how many users each model wins.

Why not ``scipy.stats.bootstrap`` / ``permutation_test`` themselves: BCa's acceleration
comes from a jackknife, which scipy computes by re-evaluating the statistic on all ``n``
leave-one-out samples, O(n²): 6 s for 10,000 users and 52 s for 30,000 on 2 cores, for one
metric. For the mean the jackknife has a closed form (below), so the interval here costs
the resampling alone; the tests check both procedures against scipy's on samples small
enough for it. The permutation test flips signs in batches through one matrix product
instead of scipy's per-resample loop (40 s for 100,000 users there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np

from graphrec.errors import ConfigError, DataError, check_positive_int
from graphrec.eval.metrics import METRICS

DEFAULT_METRICS = ("recall", "ndcg", "tail_recall")
"""What ``graphrec compare`` compares unless told otherwise."""
DEFAULT_RESAMPLES = 2000
"""Bootstrap resamples and sign-flip permutations per metric."""
FEW_DIFFERING_USERS = 50
"""Below this many users on which the two models differ, a metric's interval is flagged as
likely too narrow: on MovieLens, tail_recall@20 with 24 such users covered a known difference
in 87% of resamples instead of 95% (experiments/RESULTS.md, Offline A/B calibration)."""
BATCH_VALUES = 1 << 23
"""Resampled values held at once (resamples per batch x users): about 64 MiB of float64."""

_NORMAL = NormalDist()


@dataclass
class MetricComparison:
    """One metric of :class:`Comparison`: means over the ``users`` it applies to, ``diff`` =
    ``b - a``, the BCa ``ci`` of ``diff``, the permutation ``p_value`` and its Holm-adjusted
    ``p_holm``, and the users on which B scores higher (``wins_b``), lower (``wins_a``) or
    the same (``ties``)."""

    a: float
    b: float
    diff: float
    ci: tuple[float, float]
    p_value: float
    p_holm: float
    users: int
    wins_a: int
    wins_b: int
    ties: int


@dataclass
class Comparison:
    """The comparison of model A with model B: ``users`` evaluated, ``metrics`` by key
    (``recall@20``, ...), and how it was computed."""

    users: int
    metrics: dict[str, MetricComparison]
    confidence: float = 0.95
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    split: str = "test"
    models: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        """``{"users", "metrics": {key: {"a", "b", "diff", "ci", "p_value", "p_holm",
        "users", "wins_a", "wins_b", "ties"}}, ...}``."""
        out = asdict(self)
        for m in out["metrics"].values():
            m["ci"] = list(m["ci"])
        return out


def bca_interval(values: np.ndarray, resamples: int = DEFAULT_RESAMPLES,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bias-corrected and accelerated bootstrap interval for the mean of ``values`` [n].

    With ``theta`` the sample mean and ``theta*_b`` the means of ``resamples`` resamples:
    ``z0 = Phi^-1(share of theta*_b below theta, ties counted half)``; the acceleration
    ``a = sum (x_i - theta)^3 / (6 (sum (x_i - theta)^2)^1.5)``, which is the jackknife's
    ``sum (theta_. - theta_(i))^3 / (6 (sum (theta_. - theta_(i))^2)^1.5)`` for the mean,
    since there ``theta_(i) = (n theta - x_i) / (n - 1)``; the interval is the
    ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` quantiles of ``theta*`` at
    ``z = Phi^-1((1 -+ confidence) / 2)``. Constant ``values`` give ``(theta, theta)``.
    """
    x = _check_sample(values, "values")
    resamples = check_positive_int("resamples", resamples)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(parameter="confidence", value=confidence, expected="in (0, 1)")
    theta = float(x.mean())
    if x.min() == x.max():
        return theta, theta
    centred = x - theta
    spread = float(np.sum(centred ** 2))
    means = bootstrap_means(x, resamples, seed)
    below = (np.count_nonzero(means < theta) + np.count_nonzero(means <= theta)) / (
        2 * resamples)
    z0 = _NORMAL.inv_cdf(min(max(below, 0.5 / resamples), 1 - 0.5 / resamples))
    accel = float(np.sum(centred ** 3)) / (6.0 * spread ** 1.5)
    bounds = []
    for tail in ((1 - confidence) / 2, (1 + confidence) / 2):
        z = _NORMAL.inv_cdf(tail)
        bounds.append(_NORMAL.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z))))
    low, high = np.percentile(means, [100 * bounds[0], 100 * bounds[1]])
    return float(low), float(high)


def bootstrap_means(values: np.ndarray, resamples: int, seed: int = 0) -> np.ndarray:
    """[resamples] means of ``values`` resampled with replacement (seeded), in batches of
    about :data:`BATCH_VALUES` values."""
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    batch = max(1, BATCH_VALUES // x.size)
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, batch):
        stop = min(start + batch, resamples)
        picks = rng.integers(0, x.size, size=(stop - start, x.size))
        out[start:stop] = x[picks].mean(axis=1)
    return out


def sign_flip_p_value(diffs: np.ndarray, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0) -> float:
    """Two-sided paired permutation p-value of ``mean(diffs) = 0``: the share of sign flips
    ``s`` (each ``s_u`` = +-1) with ``|mean(s * diffs)| >= |mean(diffs)|``.

    All ``2^n`` flips when there are at most ``resamples`` of them (the exact p-value);
    otherwise ``resamples`` random ones, counting the observed as one of them:
    ``(1 + hits) / (1 + resamples)``. All-zero ``diffs`` give 1."""
    d = _check_sample(diffs, "diffs")
    resamples = check_positive_int("resamples", resamples)
    observed = abs(float(d.mean()))
    if not np.any(d):
        return 1.0
    # |mean| is compared with a relative tolerance, or exact ties would split by rounding.
    threshold = observed * (1 - 1e-12)
    n = d.size
    if n < 63 and (1 << n) <= resamples:
        codes = np.arange(1 << n, dtype=np.int64)
        signs = 1 - 2 * ((codes[:, None] >> np.arange(n)) & 1)
        return float(np.mean(np.abs(signs @ d) / n >= threshold))
    rng = np.random.default_rng(seed)
    batch = max(1, BATCH_VALUES // n)
    hits = 0
    for start in range(0, resamples, batch):
        rows = min(batch, resamples - start)
        bits = np.unpackbits(rng.integers(0, 256, size=(rows, (n + 7) // 8), dtype=np.uint8),
                             axis=1, count=n)
        signs = 1.0 - 2.0 * bits  # float64 {-1, +1}
        hits += int(np.count_nonzero(np.abs(signs @ d) / n >= threshold))
    return (1 + hits) / (1 + resamples)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``m`` p-values (family-wise error): the i-th smallest
    becomes ``max_{j <= i} min(1, (m - j) p_(j))``, j counted from 0."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (p.size - np.arange(p.size)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


def compare_values(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray],
                   keys: Sequence[str] | None = None, *, resamples: int = DEFAULT_RESAMPLES,
                   confidence: float = 0.95, seed: int = 0) -> Comparison:
    """Compare per-user metric values: ``a[key]`` and ``b[key]`` are [n] float arrays over
    the same users in the same order, NaN where the metric does not apply to a user (it
    must then be NaN in both). ``keys``: the metrics to compare (default: all of ``a``'s)."""
    keys = list(a) if keys is None else list(keys)
    if not keys:
        raise ConfigError("metrics: nothing to compare")
    sizes = {np.asarray(a[k]).shape for k in keys} | {np.asarray(b[k]).shape for k in keys}
    if len(sizes) != 1 or len(next(iter(sizes))) != 1:
        raise DataError(f"per-user values: expected [n] arrays of one length, got {sizes}")
    rows = {}
    for offset, key in enumerate(keys):
        va, vb = (np.asarray(v[key], dtype=np.float64) for v in (a, b))
        mask = ~np.isnan(va)
        if not np.array_equal(mask, ~np.isnan(vb)):
            raise DataError(f"{key}: the two models' values apply to different users; "
                            "were they evaluated on the same graph and split?")
        va, vb = va[mask], vb[mask]
        if va.size == 0:
            raise DataError(f"{key}: no evaluated user has a value to compare")
        d = vb - va
        # One seed per metric, so that adding a metric leaves the others' numbers unchanged.
        metric_seed = seed + 7919 * (offset + 1)
        rows[key] = dict(
            a=float(va.mean()), b=float(vb.mean()), diff=float(d.mean()),
            ci=bca_interval(d, resamples, confidence, metric_seed),
            p_value=sign_flip_p_value(d, resamples, metric_seed + 1), users=int(d.size),
            wins_a=int(np.count_nonzero(d < 0)), wins_b=int(np.count_nonzero(d > 0)),
            ties=int(np.count_nonzero(d == 0)))
    adjusted = holm([r["p_value"] for r in rows.values()])
    metrics = {key: MetricComparison(p_holm=p, **r)
               for (key, r), p in zip(rows.items(), adjusted, strict=True)}
    return Comparison(users=int(next(iter(sizes))[0]), metrics=metrics, confidence=confidence,
                      resamples=resamples, seed=seed)


def metric_keys(names: Sequence[str], ks: Sequence[int]) -> list[str]:
    """``recall,ndcg`` x ``(10, 20)`` -> ``recall@10, ndcg@10, recall@20, ndcg@20``; every
    name must be a per-user metric of the registry, or ``cold_`` + one that has a cold form."""
    allowed = [m.name for m in METRICS.values() if not m.catalog]
    allowed += [f"cold_{m.name}" for m in METRICS.values() if m.cold]
    for name in names:
        if name not in allowed:
            raise ConfigError(parameter="metrics", value=name,
                              expected=f"per-user metrics: {', '.join(allowed)}")
    if not names:
        raise ConfigError(parameter="metrics", value="", expected="at least one metric")
    return [f"{name}@{k}" for k in ks for name in names]


def compare_models(graph, model_a: str | Path, model_b: str | Path, split: str = "test",
                   ks: Sequence[int] = (20,), metrics: Sequence[str] = DEFAULT_METRICS, *,
                   resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                   seed: int = 0, device: str | None = None) -> Comparison:
    """:func:`compare_values` of two model directories trained on ``graph``, on its
    ``split`` (full ranking, as ``graphrec evaluate``). A model trained on another graph is
    refused, as is a metric the split cannot score (``cold_*`` without cold items)."""
    from graphrec.eval.context import EvalContext, model_scoring

    keys = metric_keys(metrics, ks)
    ctx = EvalContext.from_graph(graph, ks, device)
    fold = ctx.fold(split)
    if not ctx.has_targets(fold):
        raise DataError(f"the graph has no {split} interactions to compare on")
    a, b = (ctx.evaluate(fold, **model_scoring(graph, path, ctx.device), per_user=True)
            for path in (model_a, model_b))
    return compare_rankings(a, b, keys, split, {"a": str(model_a), "b": str(model_b)},
                            resamples=resamples, confidence=confidence, seed=seed)


def compare_rankings(a, b, keys: Sequence[str], split: str, models: dict[str, str], *,
                     resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                     seed: int = 0) -> Comparison:
    """:func:`compare_values` of two per-user evaluations (``RankingResult``) of one split:
    what :func:`compare_models` and the report share once the models are scored."""
    for result in (a, b):
        missing = [k for k in keys if k not in result.values]
        if missing:
            raise ConfigError(parameter="metrics", value=",".join(missing),
                              expected=f"metrics the {split} split can score: "
                                       f"{', '.join(result.values)}")
    out = compare_values(a.values, b.values, keys, resamples=resamples,
                         confidence=confidence, seed=seed)
    out.split = split
    out.models = models
    return out


def _check_sample(values: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise DataError(f"{name}: expected a 1-D sample of at least 2 values, got shape "
                        f"{x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{name}: the sample has NaN or infinite values")
    return x


def format_interval(ci: tuple[float, float]) -> str:
    """``[-0.0012, +0.0034]``."""
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def format_p(p: float) -> str:
    """A p-value in 4 significant figures, or ``<1e-4`` style for tiny ones."""
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


__all__ = [
    "DEFAULT_METRICS", "DEFAULT_RESAMPLES", "FEW_DIFFERING_USERS", "Comparison",
    "MetricComparison", "bca_interval", "bootstrap_means", "compare_models", "compare_rankings",
    "compare_values",
    "holm", "metric_keys", "sign_flip_p_value",
]
