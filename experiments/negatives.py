"""Popularity negatives on the recall / tail frontier: which exponent and share to ship.

Every setting is trained per seed and scored on validation and on test. The default is chosen
on validation only: among the popularity settings whose seed-mean validation recall@20 is
within ``--budget`` (1%) of the uniform sampler's on every dataset given, the one with the
largest mean relative tail_recall@20 gain over uniform. Test numbers are reported for the
record, never used to choose.

MovieLens (bundled, text items): per-user random 70/10/20 split, early stopping on
validation ndcg@20 as ``graphrec train`` does. Gowalla (the LightGCN split, id items): 10% of
each user's training interactions carved (seeded) as validation, a fixed-length cosine
schedule of ``--gowalla-epochs`` epochs, validation and test scored at the end.

    python experiments/negatives.py --datasets movielens gowalla --seeds 0 1 2 --workdir W
    python experiments/negatives.py --tables-only --workdir W

Each run's numbers are kept in W/negatives/<dataset>-<setting>-<seed>.json and reused; the
table and the choice go to experiments/results/negatives/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GOWALLA = Path(os.environ.get("GRAPHREC_GOWALLA", ROOT.parent / "shared/datasets/gowalla"))
SETTINGS = {
    "uniform": {"negatives": "uniform"},
    "alpha 0.5": {"negatives": "popularity", "neg_alpha": 0.5},
    "alpha 0.5, share 0.5": {"negatives": "popularity", "neg_alpha": 0.5, "neg_share": 0.5},
    "alpha 0.5, share 0.25": {"negatives": "popularity", "neg_alpha": 0.5, "neg_share": 0.25},
    "alpha 1, share 0.25": {"negatives": "popularity", "neg_alpha": 1.0, "neg_share": 0.25},
    "alpha 1, share 0.1": {"negatives": "popularity", "neg_alpha": 1.0, "neg_share": 0.1},
}
KEYS = ("recall@20", "ndcg@20", "tail_recall@20", "coverage@20")


def build(dataset: str, seed: int, work: Path):
    from graphrec.build import BuildConfig, build_graph
    from graphrec.pipeline import carve_validation

    if dataset == "movielens":
        return build_graph(BuildConfig(test_ratio=0.2, valid_ratio=0.1, seed=seed,
                                       cache_dir=str(work / "cache")), work / f"ml-{seed}")
    if not (GOWALLA / "train.txt").exists():
        raise SystemExit(f"{GOWALLA}: no train.txt (set GRAPHREC_GOWALLA)")
    graph = build_graph(BuildConfig(train=str(GOWALLA / "train.txt"),
                                    test=str(GOWALLA / "test.txt"), no_text=True),
                        work / "gowalla")
    return carve_validation(graph, seed=seed)


def run(dataset: str, name: str, seed: int, graph, gowalla_epochs: int) -> dict:
    from graphrec.eval import EvalContext
    from graphrec.train import TrainConfig, Trainer

    if dataset == "movielens":
        cfg = TrainConfig(seed=seed, **SETTINGS[name])
    else:
        cfg = TrainConfig(seed=seed, epochs=gowalla_epochs, eval_every=0, **SETTINGS[name])
    t0 = time.perf_counter()
    trainer = Trainer(graph, cfg)
    ctx = EvalContext.from_graph(graph, (20,), trainer.device)
    result = trainer.fit(ctx.validator("valid") if dataset == "movielens" else None)
    factors = (result.user_emb, result.item_emb)
    valid = ctx.evaluate("valid", factors=factors)
    test = ctx.evaluate("test", factors=factors)
    return {"valid": {k: valid[k] for k in KEYS}, "test": {k: test[k] for k in KEYS},
            "epochs": len(result.history), "seconds": round(time.perf_counter() - t0, 1)}


def table(runs: dict, datasets: list[str], budget: float) -> tuple[str, str | None]:
    """Markdown table of every setting (mean ± sd over seeds) and the validation choice."""
    def mean(ds, name, split, key):
        v = [r[split][key] for r in runs.get((ds, name), [])]
        return (float(np.mean(v)), float(np.std(v)), len(v)) if v else None

    eligible = {}
    for name in SETTINGS:
        if name == "uniform":
            continue
        gains, ok = [], True
        for ds in datasets:
            base, this = mean(ds, "uniform", "valid", "recall@20"), mean(ds, name, "valid",
                                                                           "recall@20")
            if base is None or this is None:
                ok = False
                break
            ok &= this[0] >= (1 - budget) * base[0]
            tb, tt = (mean(ds, "uniform", "valid", "tail_recall@20"),
                      mean(ds, name, "valid", "tail_recall@20"))
            gains.append(tt[0] / max(tb[0], 1e-9) - 1)
        if ok:
            eligible[name] = float(np.mean(gains))
    choice = max(eligible, key=eligible.get) if eligible else None
    lines = []
    for ds in datasets:
        lines += [f"\n{ds} (seeds: {len(runs.get((ds, 'uniform'), []))})\n",
                  "| negatives | valid recall@20 (vs uniform) | valid tail_recall@20 | "
                  "test recall@20 (vs uniform) | test ndcg@20 | test tail_recall@20 | "
                  "test coverage@20 |", "|---|---|---|---|---|---|---|"]
        base_v = mean(ds, "uniform", "valid", "recall@20")
        base_t = mean(ds, "uniform", "test", "recall@20")
        for name in SETTINGS:
            if (ds, name) not in runs:
                continue
            vr, vt = mean(ds, name, "valid", "recall@20"), mean(ds, name, "valid",
                                                                "tail_recall@20")
            tr, tn = mean(ds, name, "test", "recall@20"), mean(ds, name, "test", "ndcg@20")
            tt, tc = mean(ds, name, "test", "tail_recall@20"), mean(ds, name, "test",
                                                                    "coverage@20")
            mark = " **(chosen)**" if name == choice else ""
            lines.append(
                f"| {name}{mark} | {vr[0]:.4f} ({vr[0] / base_v[0] - 1:+.1%}) | {vt[0]:.4f} | "
                f"{tr[0]:.4f} ± {tr[1]:.4f} ({tr[0] / base_t[0] - 1:+.1%}) | {tn[0]:.4f} | "
                f"{tt[0]:.4f} ± {tt[1]:.4f} | {tc[0]:.3f} |")
    lines.append(f"\nEligible (validation recall within {budget:.0%} of uniform on "
                 f"{', '.join(datasets)}), mean validation tail gain: "
                 + (", ".join(f"{k} {v:+.0%}" for k, v in eligible.items()) or "none")
                 + f". Chosen: {choice or 'none'}.")
    return "\n".join(lines), choice


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["movielens", "gowalla"],
                   choices=["movielens", "gowalla"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--gowalla-epochs", type=int, default=40)
    p.add_argument("--budget", type=float, default=0.01,
                   help="largest validation recall loss against uniform negatives")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--tables-only", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "negatives")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = args.workdir / "negatives"
    store.mkdir(parents=True, exist_ok=True)
    if not args.tables_only:
        for ds in args.datasets:
            for seed in args.seeds:
                graph = None
                for name in args.settings:
                    path = store / f"{ds}-{name.replace(' ', '').replace(',', '_')}-{seed}.json"
                    if path.exists():
                        continue
                    graph = graph or build(ds, seed, args.workdir)
                    r = run(ds, name, seed, graph, args.gowalla_epochs)
                    path.write_text(json.dumps({"dataset": ds, "setting": name, "seed": seed}
                                               | r, indent=1) + "\n")
                    print(f"{ds} seed {seed} {name}: valid recall@20 "
                          f"{r['valid']['recall@20']:.4f} tail {r['valid']['tail_recall@20']:.4f}"
                          f"; test {r['test']['recall@20']:.4f} ({r['seconds']:.0f} s)",
                          flush=True)
    runs: dict = {}
    for path in sorted(store.glob("*.json")):
        r = json.loads(path.read_text())
        if r["dataset"] in args.datasets and r["setting"] in SETTINGS:
            runs.setdefault((r["dataset"], r["setting"]), []).append(r)
    text, choice = table(runs, args.datasets, args.budget)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text.lstrip() + "\n")
    (args.out / "runs.json").write_text(json.dumps(
        {f"{d}|{n}": v for (d, n), v in runs.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
