"""Time to quality on Gowalla (the LightGCN split): recall@20 / ndcg@20 against wall time.

Trains graphrec with the settings a user gets by default (or the ones given), evaluates the
test split every few epochs for the curve only (the split has no validation set; nothing is
selected on these numbers), and stops at a time budget or an epoch limit. Wall time includes
the evaluations.

    python experiments/gowalla_quality.py --minutes 30 --eval-every 10 --tag _defaults
    python experiments/gowalla_quality.py --minutes 8 --device cuda
    python experiments/gowalla_quality.py --valid --epochs 100 --loss softmax --tag _screen

``--valid`` screens settings honestly: 10% of each user's training interactions (seeded) are
carved out as validation, the model trains on the rest, and the curve scores the carved
fold; the test split is not touched.

Writes the curve as JSON (and a PNG when matplotlib is installed) under experiments/results/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from graphrec.artifacts import save_model
from graphrec.build import BuildConfig, build_graph
from graphrec.data import TEST, VALID
from graphrec.errors import ConfigError
from graphrec.eval import EvalContext
from graphrec.pipeline import carve_validation
from graphrec.serve import Recommender, write_recommendations
from graphrec.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("GRAPHREC_GOWALLA", ROOT.parent / "shared/datasets/gowalla"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--epochs", type=int, default=TrainConfig().epochs,
                   help="epoch limit (default: graphrec's default)")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.0)
    p.add_argument("--lr-schedule", default="auto",
                   help="auto (graphrec's default: cosine over --epochs here, since the split "
                        "has no validation set), constant or cosine")
    p.add_argument("--negatives", default="auto")
    p.add_argument("--neg-alpha", type=float, default=0.5)
    p.add_argument("--neg-candidates", type=int, default=TrainConfig().neg_candidates,
                   help="hard negatives: the hardest of this many per triple")
    p.add_argument("--neg-top", type=int, default=TrainConfig().neg_top,
                   help="train on a candidate drawn among the N hardest (DNS(M, N))")
    p.add_argument("--loss", default=TrainConfig().loss, help="bpr or softmax")
    p.add_argument("--temperature", type=float, default=TrainConfig().temperature)
    p.add_argument("--valid", action="store_true",
                   help="score a carved validation fold instead of the test split")
    p.add_argument("--reg", type=float, default=TrainConfig().reg)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="float32", help="float32 or bfloat16 (CPU products)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    if not (args.data / "train.txt").exists():
        raise SystemExit(f"--data {args.data}: no train.txt (Gowalla LightGCN split)")
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="graphrec-gowalla-"))
    t_start = time.perf_counter()
    graph = build_graph(BuildConfig(train=str(args.data / "train.txt"),
                                    test=str(args.data / "test.txt"), no_text=True),
                        work / "graph")
    build_s = time.perf_counter() - t_start
    fold = TEST
    if args.valid:
        graph, fold = carve_validation(graph, seed=args.seed), VALID
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      lr_schedule=args.lr_schedule, negatives=args.negatives,
                      neg_alpha=args.neg_alpha, neg_candidates=args.neg_candidates,
                      reg=args.reg, layers=args.layers, loss=args.loss,
                      temperature=args.temperature, neg_top=args.neg_top,
                      dim=args.dim, device=args.device, seed=args.seed, eval_every=0,
                      precision=args.precision)
    try:
        trainer = Trainer(graph, cfg)
    except ConfigError as exc:  # a bad option: one line, as graphrec train gives it
        raise SystemExit(f"gowalla_quality.py: {exc}") from None
    c = trainer.cfg
    print(f"device {trainer.device} ({c.precision}), batch {c.batch_size}, lr {c.lr} "
          f"({c.lr_schedule}), "
          f"{c.negatives} negatives (alpha {c.neg_alpha}, {c.neg_candidates} candidates, "
          f"top {c.neg_top}), "
          f"loss {c.loss} (temperature {c.temperature}), "
          f"reg {c.reg:g}, dim {c.dim}, {c.layers} layers; build {build_s:.1f} s",
          flush=True)
    # The test split scored for the curve only: a fixed-length run (nothing selected on these
    # numbers), ended by the epoch limit or the time budget.
    ctx = EvalContext.from_graph(graph, c.ks, trainer.device)
    curve = []
    t0 = time.perf_counter()
    train_s = 0.0

    def on_epoch(row: dict) -> bool:
        nonlocal train_s
        train_s += row["train_seconds"]
        elapsed = time.perf_counter() - t0
        last = elapsed > args.minutes * 60 or trainer.epoch == args.epochs
        if trainer.epoch % args.eval_every == 0 or last or trainer.epoch == 1:
            m = ctx.evaluate(fold, factors=trainer.embeddings()[:2])
            elapsed = time.perf_counter() - t0
            curve.append({"epoch": trainer.epoch, "wall_seconds": round(elapsed, 1),
                          "train_seconds": round(train_s, 1), "loss": row["loss"],
                          "recall@20": m["recall@20"], "ndcg@20": m["ndcg@20"],
                          "tail_recall@20": m.get("tail_recall@20")})
            print(f"epoch {trainer.epoch:4d}  wall {elapsed:7.1f} s  loss {row['loss']:.4f}  "
                  f"{'valid' if args.valid else 'test'} "
                  f"recall@20 {m['recall@20']:.4f}  ndcg@20 {m['ndcg@20']:.4f}", flush=True)
        return last

    result = trainer.fit(on_epoch=on_epoch)  # no validate callback: a fixed-length run
    best = max(curve, key=lambda r: r["recall@20"])
    first_170 = next((r for r in curve if r["recall@20"] >= 0.170), None)
    print(f"best recall@20 {best['recall@20']:.4f} / ndcg@20 {best['ndcg@20']:.4f} at epoch "
          f"{best['epoch']} ({best['wall_seconds']:.0f} s); recall@20 >= 0.170 "
          + (f"at epoch {first_170['epoch']} ({first_170['wall_seconds']:.0f} s)"
             if first_170 else "not reached"))
    # Serving: save the model, load it back and write top-20 for every user (JSON lines).
    save_model(result, graph, work / "model")
    t1 = time.perf_counter()
    rec = Recommender.load(work / "model")
    with open(work / "recs.jsonl", "w", encoding="utf-8") as f:
        n_users = write_recommendations(f, rec.recommend_all(20))
    print(f"recommend --all-users -k 20: {n_users} users in {time.perf_counter() - t1:.1f} s "
          "(load + score + write)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"gowalla_quality_{trainer.device.type}{args.tag}"
    (args.out / f"{name}.json").write_text(json.dumps(
        {"config": {k: str(v) for k, v in vars(args).items()}, "resolved_batch": c.batch_size,
         "resolved_lr": c.lr, "curve": curve}, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["wall_seconds"] / 60 for r in curve], [r["recall@20"] for r in curve], "o-",
            label="graphrec")
    ax.axhline(0.1830, ls="--", c="gray", label="LightGCN paper (0.1830)")
    ax.set_xlabel("wall minutes (training + evaluation)")
    ax.set_ylabel("test recall@20")
    ax.set_title(f"Gowalla, {trainer.device.type}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / f"{name}.png", dpi=120)


if __name__ == "__main__":
    main()
