"""TextLightGCN against most-popular and item-kNN on the bundled MovieLens.

Split: per-user random, 20% test, 10% validation (early stopping), 70% train; full ranking
with training (+ validation) items masked. Baselines are fit on train + validation.

    python experiments/movielens_quality.py                 # default model + variants, seed 0
    python experiments/movielens_quality.py --seeds 0 1 2 --variants default

Prints a Markdown table and writes it (with the raw numbers as JSON) under experiments/results/.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from graphrec.artifacts import save_model
from graphrec.build import BuildConfig, build_graph
from graphrec.eval import evaluate_model
from graphrec.pipeline import train_model
from graphrec.train import TrainConfig

VARIANTS = {
    "default": {},
    "id-only (plain LightGCN)": {"item_init": "id"},
    "text-only items": {"item_init": "text"},
    "uniform negatives": {"negatives": "uniform"},
    "one negative per triple, reg 1e-4 (earlier default)": {"neg_candidates": 1, "reg": 1e-4},
    "hardest of 8, reg 1e-4": {"reg": 1e-4},
    "hardest of 4": {"neg_candidates": 4},
}
KEYS = ("recall@20", "ndcg@20", "precision@20", "hit@20", "coverage@20", "tail_recall@20",
        "tail_share@20")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="graphrec-ml-"))
    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        graph = build_graph(BuildConfig(test_ratio=0.2, valid_ratio=0.1, seed=seed,
                                        cache_dir=str(work / "cache")), work / f"graph-{seed}")
        first = True
        for name in args.variants:
            cfg = replace(TrainConfig(epochs=args.epochs, seed=seed), **VARIANTS[name])
            t0 = time.perf_counter()
            result = train_model(graph, cfg)
            seconds = time.perf_counter() - t0
            model_dir = work / f"model-{seed}-{len(rows.get(name, []))}-{hash(name) % 997}"
            save_model(result, graph, model_dir)
            ev = evaluate_model(graph, model_dir, "test", (20,), baselines=first)
            valid = [r["valid"] for r in result.history if "valid" in r]
            m = {k: ev["model"][k] for k in KEYS} | {
                "best_valid_ndcg@20": max(v["ndcg@20"] for v in valid) if valid else None,
                "epochs": len(result.history), "best_epoch": result.best_epoch,
                "seconds": round(seconds, 1)}
            rows.setdefault(f"graphrec: {name}", []).append(m)
            if first:
                for b, bm in ev["baselines"].items():
                    rows.setdefault(b, []).append({k: bm[k] for k in KEYS})
                first = False
            print(f"seed {seed} {name}: valid ndcg@20={m['best_valid_ndcg@20']:.4f} test " +
                  " ".join(f"{k}={m[k]:.4f}" for k in KEYS[:2]) +
                  f" tail_recall@20={m['tail_recall@20']:.4f} epochs={m['epochs']} "
                  f"({seconds:.0f} s)", flush=True)
    table = ["| model | " + " | ".join(KEYS) + " | epochs | seconds |",
             "|---|" + "---|" * (len(KEYS) + 2)]
    for name, ms in rows.items():
        cells = []
        for k in KEYS:
            v = np.array([m[k] for m in ms])
            cells.append(f"{v.mean():.4f}" + (f" ± {v.std():.4f}" if len(v) > 1 else ""))
        ep = " / ".join(str(m.get("epochs", "–")) for m in ms)
        sec = " / ".join(str(m.get("seconds", "–")) for m in ms)
        table.append(f"| {name} | " + " | ".join(cells) + f" | {ep} | {sec} |")
    text = "\n".join(table)
    print(f"\nMovieLens ml-latest-small, seeds {args.seeds}, test split (20%)\n{text}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "movielens_quality.md").write_text(text + "\n")
    (args.out / "movielens_quality.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
