"""Offline A/B calibration: are `graphrec compare`'s intervals and p-values right?

Parts (``--part``):

synthetic: R repetitions, each with its own data seed: 1,500 users drawn i.i.d. from 5
    latent communities over 300 items (about 20 interactions per user, a community's own
    items 8x as likely), a graph without text and a per-user random split (20% test, no
    validation), models A and B with the same settings and training seeds 0 and 1 (few
    epochs, dim 16, CPU), compared on test (recall@20, ndcg@20). Three comparisons per
    repetition: A against B (the two seeds), A against itself (must give [0, 0] and p = 1),
    and a null exchangeable by construction: every user's (A, B) values swapped with
    probability 1/2 (--swaps independent draws per repetition), so the true mean difference
    is 0 and the procedure alone is tested.
    Reported: the share of repetitions whose 95% interval covers 0 and the share with
    p < 0.05. A against B includes the training-seed effect: two seeds give two different
    models, whose difference on the population is not 0, so its coverage of 0 can fall
    below 95% without the procedure being wrong.
movielens: the bundled MovieLens (per-user random split 70/10/20, text items unless
    --no-text), two models trained as `graphrec train` does (early stopping) with seeds 0 and
    1, compared on test (recall@20, ndcg@20, tail_recall@20). Then the calibration against a
    known truth: with the evaluated users as the population and its mean difference D as
    the truth, draw 300 samples of users with replacement (the population's size, and half
    of it) and count how often the sample's interval covers D; also half the users without
    replacement (a finite-population sample: its true variance is half the bootstrap's, so
    coverage above 95% is expected there).
gowalla: the same on Gowalla (../shared/datasets/gowalla, the LightGCN split, no text;
    skipped when absent), --gowalla-epochs epochs (cosine, no validation), samples of 2,000
    users with replacement (and without).
timing: compare_values on 100,000 synthetic users x 3 metrics, 2,000 resamples, best of 3;
    and the whole compare_models (evaluation included) on the Gowalla graph and models of
    the gowalla part when they are there.

    python experiments/compare_aa.py --part synthetic [--reps 100]
    python experiments/compare_aa.py --part movielens [--no-text]
    python experiments/compare_aa.py --part gowalla [--gowalla-epochs 20]
    python experiments/compare_aa.py --part timing
    python experiments/compare_aa.py --part all --reuse

The command-line equivalent of one comparison: ``graphrec --workdir W build-graph ...``,
``graphrec --workdir W train --seed 0``, ``graphrec --workdir W train --seed 1 --output
W/model-b``, ``graphrec --workdir W compare W/model W/model-b``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphrec.artifacts import load_graph, save_model  # noqa: E402
from graphrec.build import build_graph  # noqa: E402
from graphrec.data.config import BuildConfig  # noqa: E402
from graphrec.eval.compare import (  # noqa: E402
    compare_models,
    compare_values,
    format_interval,
    format_p,
)
from graphrec.eval.context import EvalContext, model_factors  # noqa: E402
from graphrec.pipeline import train_model  # noqa: E402
from graphrec.train import TrainConfig, Trainer  # noqa: E402

GOWALLA = ROOT.parent / "shared" / "datasets" / "gowalla"
SYNTH_KEYS = ("recall@20", "ndcg@20")
REAL_KEYS = ("recall@20", "ndcg@20", "tail_recall@20")
REAL_METRICS = ("recall", "ndcg", "tail_recall")


# -- synthetic -------------------------------------------------------------------------------
def synthetic_log(path: Path, seed: int, users: int = 1500, items: int = 300,
                  communities: int = 5, mean_len: float = 20.0, boost: float = 8.0) -> Path:
    """Write ``user,item`` rows: item popularity Zipf(0.8) over a random order; each item
    belongs to one community; a user belongs to a random community and draws
    ``max(5, Poisson(mean_len))`` distinct items with probability proportional to popularity,
    times ``boost`` for the community's own items."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / (1.0 + rng.permutation(items)) ** 0.8
    owner = rng.integers(0, communities, size=items)
    prefs = [popularity * np.where(owner == c, boost, 1.0) for c in range(communities)]
    prefs = [p / p.sum() for p in prefs]
    community = rng.integers(0, communities, size=users)
    lengths = np.maximum(5, rng.poisson(mean_len, size=users))
    with open(path, "w", encoding="utf-8") as f:
        f.write("user,item\n")
        for u in range(users):
            for i in rng.choice(items, size=lengths[u], replace=False, p=prefs[community[u]]):
                f.write(f"u{u},i{i}\n")
    return path


def synthetic_rep(work: Path, rep: int, epochs: int, dim: int, reuse: bool) -> dict:
    """Per-user test values of models A (seed 0) and B (seed 1) on repetition ``rep``'s data
    (cached in ``work``)."""
    cache = work / f"rep-{rep:03d}.npz"
    if reuse and cache.exists():
        z = np.load(cache)
        return {"a": {k: z[f"a/{k}"] for k in SYNTH_KEYS},
                "b": {k: z[f"b/{k}"] for k in SYNTH_KEYS}, "seconds": float(z["seconds"])}
    t0 = time.perf_counter()
    tmp = work / f"rep-{rep:03d}"
    tmp.mkdir(parents=True, exist_ok=True)
    csv = synthetic_log(tmp / "interactions.csv", seed=10_000 + rep)
    graph = build_graph(BuildConfig(interactions=str(csv), no_text=True, test_ratio=0.2,
                                    valid_ratio=0.0, seed=rep), tmp / "graph")
    ctx = EvalContext.from_graph(graph, (20,), "cpu")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        cfg = TrainConfig(epochs=epochs, dim=dim, eval_every=0, device="cpu", seed=seed)
        result = Trainer(graph, cfg).fit()
        ranked = ctx.evaluate("test", factors=(result.user_emb, result.item_emb),
                              per_user=True)
        out[name] = {k: ranked.values[k] for k in SYNTH_KEYS}
    out["seconds"] = time.perf_counter() - t0
    np.savez(cache, seconds=out["seconds"],
             **{f"{m}/{k}": out[m][k] for m in ("a", "b") for k in SYNTH_KEYS})
    shutil.rmtree(tmp)
    return out


def covers(ci: tuple[float, float], value: float) -> bool:
    return ci[0] <= value <= ci[1]


def part_synthetic(args) -> None:
    work = args.workdir / "synthetic"
    work.mkdir(parents=True, exist_ok=True)
    cases = ("A vs B (seeds 0, 1)", "exchangeable (values swapped at random)", "A vs A")
    counts = {c: {k: {"cover": 0, "sig": 0, "width": []} for k in SYNTH_KEYS} for c in cases}
    diffs = {k: [] for k in SYNTH_KEYS}
    means = {k: [] for k in SYNTH_KEYS}
    exact_self = 0
    seconds = []
    t_all = time.perf_counter()
    for rep in range(args.reps):
        vals = synthetic_rep(work, rep, args.synthetic_epochs, args.synthetic_dim, args.reuse)
        seconds.append(vals["seconds"])
        a, b = vals["a"], vals["b"]
        n = len(a[SYNTH_KEYS[0]])
        swap_rng = np.random.default_rng(20_000 + rep)
        runs = [(cases[0], a, b), (cases[2], a, a)]
        for _ in range(args.swaps):
            swap = swap_rng.random(n) < 0.5
            runs.append((cases[1], {k: np.where(swap, b[k], a[k]) for k in SYNTH_KEYS},
                         {k: np.where(swap, a[k], b[k]) for k in SYNTH_KEYS}))
        for j, (case, x, y) in enumerate(runs):
            cmp = compare_values(x, y, SYNTH_KEYS, resamples=args.resamples,
                                 seed=1000 * rep + j)
            for k, m in cmp.metrics.items():
                c = counts[case][k]
                c["cover"] += covers(m.ci, 0.0)
                c["sig"] += m.p_value < 0.05
                c["width"].append(m.ci[1] - m.ci[0])
                if case == cases[0]:
                    diffs[k].append(m.diff)
                    means[k].append(m.a)
            if case == cases[2]:
                exact_self += all(m.ci == (0.0, 0.0) and m.p_value == 1.0
                                  for m in cmp.metrics.values())
        if (rep + 1) % 10 == 0:
            print(f"  {rep + 1} repetitions, {time.perf_counter() - t_all:.0f} s", flush=True)
    r = args.reps
    print(f"\nsynthetic: {r} repetitions (1,500 users x 300 items, 5 communities, "
          f"{args.synthetic_epochs} epochs, dim {args.synthetic_dim}), "
          f"{args.resamples} resamples, {args.swaps} random swaps per repetition; "
          f"{np.median(seconds):.1f} s per repetition, median (data + graph + 2 models + "
          f"evaluation), {time.perf_counter() - t_all:.0f} s in all")
    print("| comparison | metric | comparisons | 95% interval covers 0 | p < 0.05 | "
          "mean interval width |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        for k in SYNTH_KEYS:
            c = counts[case][k]
            total = len(c["width"])
            print(f"| {case} | {k} | {total} | {c['cover'] / total:.1%} | "
                  f"{c['sig'] / total:.1%} | {np.mean(c['width']):.4f} |")
    print(f"\nA vs A exactly [0, 0] with p = 1 (every metric): {exact_self} of {r}")
    print("\nA vs B across repetitions: the spread of the observed difference against the "
          "interval's own standard error (width / 3.92)")
    print("| metric | mean A | mean diff | sd of diff over repetitions | mean interval SE | "
          "ratio | B ahead |")
    print("|---|---|---|---|---|---|---|")
    for k in SYNTH_KEYS:
        d = np.asarray(diffs[k])
        se = np.mean(counts[cases[0]][k]["width"]) / 3.92
        print(f"| {k} | {np.mean(means[k]):.4f} | {d.mean():+.4f} | {d.std(ddof=1):.4f} | "
              f"{se:.4f} | {d.std(ddof=1) / se:.2f} | {np.mean(d > 0):.0%} |")


# -- real data: two models, compare, calibration by resampling users ------------------------
def two_models(work: Path, graph, cfgs: list[TrainConfig], reuse: bool) -> list[Path]:
    paths = [work / "model", work / "model-b"]
    for path, cfg in zip(paths, cfgs, strict=True):
        if reuse and (path / "config.json").exists():
            print(f"  reusing {path}")
            continue
        t0 = time.perf_counter()
        result = train_model(graph, cfg)
        save_model(result, graph, path)
        epochs = len(result.history)
        print(f"  trained {path.name} (seed {cfg.seed}): {epochs} epochs"
              + (f", best {result.best_epoch}" if result.best_epoch else "")
              + f", {time.perf_counter() - t0:.0f} s; test "
              + " ".join(f"{k}={result.test[k]:.4f}" for k in REAL_KEYS), flush=True)
    return paths


def print_comparison(cmp) -> None:
    print(f"test split, {cmp.users} users; B - A; BCa 95% intervals, {cmp.resamples} "
          "resamples; p: sign-flip permutation, Holm across the metrics")
    print("| metric | users | A | B | B - A | 95% interval | p | p Holm | A wins / B wins / "
          "ties |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, m in cmp.metrics.items():
        print(f"| {k} | {m.users} | {m.a:.4f} | {m.b:.4f} | {m.diff:+.4f} | "
              f"{format_interval(m.ci)} | {format_p(m.p_value)} | {format_p(m.p_holm)} | "
              f"{m.wins_a} / {m.wins_b} / {m.ties} |")


def user_values(graph, paths: list[Path]) -> list[dict]:
    ctx = EvalContext.from_graph(graph, (20,), "cpu")
    out = []
    for path in paths:
        ranked = ctx.evaluate("test", factors=model_factors(graph, path, ctx.device),
                              per_user=True)
        out.append({k: ranked.values[k] for k in REAL_KEYS})
    return out


def calibration(a: dict, b: dict, designs: list[tuple[str, int, bool]], reps: int,
                resamples: int, seed: int) -> None:
    """Coverage of the population difference D by the intervals of ``reps`` user samples per
    design (name, sample size, with replacement)."""
    truth = {k: float(np.nanmean(b[k] - a[k])) for k in REAL_KEYS}
    n = len(a[REAL_KEYS[0]])
    print(f"\npopulation: {n} users; D = " +
          ", ".join(f"{k} {truth[k]:+.5f}" for k in REAL_KEYS))
    print(f"{reps} samples per design; coverage of D by the 95% interval "
          "(and the share with p < 0.05)")
    print("| design | " + " | ".join(REAL_KEYS) + " |")
    print("|---|" + "---|" * len(REAL_KEYS))
    seconds = []
    for name, size, replace in designs:
        rng = np.random.default_rng(seed)
        cover = dict.fromkeys(REAL_KEYS, 0)
        sig = dict.fromkeys(REAL_KEYS, 0)
        t0 = time.perf_counter()
        for rep in range(reps):
            idx = rng.choice(n, size=size, replace=replace)
            cmp = compare_values({k: a[k][idx] for k in REAL_KEYS},
                                 {k: b[k][idx] for k in REAL_KEYS}, REAL_KEYS,
                                 resamples=resamples, seed=rep)
            for k, m in cmp.metrics.items():
                cover[k] += covers(m.ci, truth[k])
                sig[k] += m.p_value < 0.05
        print(f"| {name} | " + " | ".join(f"{cover[k] / reps:.1%} ({sig[k] / reps:.0%})"
                                          for k in REAL_KEYS) + " |", flush=True)
        seconds.append(time.perf_counter() - t0)
    print("calibration: " + ", ".join(f"{s:.0f} s" for s in seconds) + " per design")


def real_part(name: str, work: Path, build_cfg: BuildConfig, cfgs: list[TrainConfig],
              designs, args) -> None:
    t_all = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    graph_dir = work / "graph"
    if args.reuse and graph_dir.exists():
        graph = load_graph(graph_dir)
        print(f"{name}: reusing {graph_dir}")
    else:
        t0 = time.perf_counter()
        graph = build_graph(build_cfg, graph_dir)
        print(f"{name}: built {graph_dir} ({graph.num_users} users, {graph.num_items} items) "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
    paths = two_models(work, graph, cfgs, args.reuse)
    t0 = time.perf_counter()
    cmp = compare_models(graph, paths[0], paths[1], "test", (20,), REAL_METRICS,
                         resamples=args.resamples, seed=0, device="cpu")
    print(f"\n{name}: compare_models {time.perf_counter() - t0:.1f} s (evaluation included)")
    print_comparison(cmp)
    a, b = user_values(graph, paths)
    calibration(a, b, designs(len(a[REAL_KEYS[0]])), args.calibration_reps, args.resamples,
                seed=1)
    print(f"\n{name}: {time.perf_counter() - t_all:.0f} s in all")


def part_movielens(args) -> None:
    work = args.workdir / "movielens"
    build_cfg = BuildConfig(test_ratio=0.2, valid_ratio=0.1, seed=0, no_text=args.no_text,
                            cache_dir=str(args.workdir / "cache"))
    cfgs = [TrainConfig(epochs=args.movielens_epochs, seed=s, device="cpu") for s in (0, 1)]

    def designs(n: int):
        return [(f"with replacement, {n} users (the population's size)", n, True),
                (f"with replacement, {n // 2} users", n // 2, True),
                (f"without replacement, {n // 2} users (half the population)", n // 2, False)]

    real_part("movielens", work, build_cfg, cfgs, designs, args)


def part_gowalla(args) -> None:
    data = args.gowalla
    if not (data / "train.txt").exists() or not (data / "test.txt").exists():
        print(f"gowalla: {data} not found, skipped")
        return
    work = args.workdir / "gowalla"
    build_cfg = BuildConfig(train=str(data / "train.txt"), test=str(data / "test.txt"),
                            no_text=True)
    cfgs = [TrainConfig(epochs=args.gowalla_epochs, seed=s, device="cpu") for s in (0, 1)]

    def designs(n: int):
        return [("with replacement, 2000 users", 2000, True),
                ("without replacement, 2000 users", 2000, False)]

    real_part("gowalla", work, build_cfg, cfgs, designs, args)


# -- timing ----------------------------------------------------------------------------------
def skewed_values(n: int, seed: int) -> tuple[dict, dict]:
    """Recall-like per-user values of two correlated models: 1 + Poisson(4) targets, hits
    binomial with a Beta(0.5, 2) hit rate per user, B's rate the same nudged by noise; the
    third metric NaN for a third of the users (as tail_recall)."""
    rng = np.random.default_rng(seed)
    targets = 1 + rng.poisson(4, size=n)
    rate = rng.beta(0.5, 2.0, size=n)
    rate_b = np.clip(rate + rng.normal(0.005, 0.05, size=n), 0, 1)
    a, b = {}, {}
    for key in ("recall@20", "ndcg@20", "tail_recall@20"):
        a[key] = rng.binomial(targets, rate) / targets
        b[key] = rng.binomial(targets, rate_b) / targets
    missing = rng.random(n) < 1 / 3
    a["tail_recall@20"][missing] = np.nan
    b["tail_recall@20"][missing] = np.nan
    return a, b


def part_timing(args) -> None:
    import torch

    a, b = skewed_values(100_000, seed=0)
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        compare_values(a, b, resamples=2000, seed=0)
        runs.append(time.perf_counter() - t0)
    print(f"timing: compare_values, 100,000 users x 3 metrics, 2000 resamples, "
          f"{torch.get_num_threads()} torch threads: best {min(runs):.2f} s "
          f"(runs {', '.join(f'{s:.2f}' for s in runs)})")
    work = args.workdir / "gowalla"
    paths = [work / "model", work / "model-b"]
    if not (work / "graph").exists() or not all(p.exists() for p in paths):
        print("timing: no Gowalla graph and models under the work directory (run --part "
              "gowalla first); compare_models not timed")
        return
    graph = load_graph(work / "graph")
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        cmp = compare_models(graph, paths[0], paths[1], "test", (20,), REAL_METRICS,
                             resamples=2000, seed=0, device="cpu")
        runs.append(time.perf_counter() - t0)
    print(f"timing: compare_models on Gowalla ({cmp.users} users, 3 metrics, evaluation of "
          f"both models included): best {min(runs):.2f} s "
          f"(runs {', '.join(f'{s:.2f}' for s in runs)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("synthetic", "movielens", "gowalla", "timing", "all"),
                   default="all")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/graphrec-compare-aa"))
    p.add_argument("--reuse", action="store_true",
                   help="Keep graphs, models and synthetic repetitions already there.")
    p.add_argument("--reps", type=int, default=100, help="Synthetic repetitions.")
    p.add_argument("--swaps", type=int, default=10,
                   help="Exchangeable comparisons (random swaps) per synthetic repetition.")
    p.add_argument("--synthetic-epochs", type=int, default=30)
    p.add_argument("--synthetic-dim", type=int, default=16)
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--calibration-reps", type=int, default=300)
    p.add_argument("--no-text", action="store_true", help="MovieLens without item text.")
    p.add_argument("--movielens-epochs", type=int, default=200,
                   help="Upper bound; early stopping on validation ends the run.")
    p.add_argument("--gowalla", type=Path, default=GOWALLA)
    p.add_argument("--gowalla-epochs", type=int, default=20)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    parts = {"synthetic": part_synthetic, "movielens": part_movielens,
             "gowalla": part_gowalla, "timing": part_timing}
    for name, fn in parts.items():
        if args.part in (name, "all"):
            fn(args)
            print(flush=True)


if __name__ == "__main__":
    main()
