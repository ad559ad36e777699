"""Popularity-debiased negatives: the alpha sweep, with and without text, and its frontier.

Negatives are drawn with p(i) ~ (degree_i + 1)^alpha over items with training interactions;
alpha 0 is the uniform sampler. For each (items, alpha, seed) one model is trained with early
stopping on validation ndcg@20 and scored once on the test split (full ranking, seen items
masked). Head = the 20% most-interacted training items; tail = the rest.

    # MovieLens (bundled), text and id items, 3 seeds, 2 single-threaded workers
    python experiments/long_tail.py --seeds 0 1 2 --jobs 2
    # Gowalla (no text there: what the negatives alone do at scale)
    python experiments/long_tail.py --dataset gowalla --items id --seeds 0 --jobs 2 \\
        --batch-size 32768 --lr 0.004 --epochs 40 --eval-every 10

Each finished run is kept as JSON under OUT/runs/ and skipped when the script is rerun, so an
interrupted sweep resumes. Prints a Markdown table (mean ± std over seeds) and writes it, the
raw numbers and the tail_recall-vs-recall frontier plot (PNG) under OUT.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

KEYS = ("recall@20", "ndcg@20", "tail_recall@20", "tail_share@20", "coverage@20", "gini@20",
        "novelty@20", "ild@20")
GOWALLA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "gowalla"


def graph_dir(work: Path, dataset: str, seed: int) -> Path:
    return work / f"{dataset}-graph-{seed if dataset == 'movielens' else 'fixed'}"


def build(dataset: str, seed: int, work: Path, gowalla: Path) -> Path:
    from graphrec.build import BuildConfig, build_graph

    out = graph_dir(work, dataset, seed)
    if out.exists():
        return out
    if dataset == "movielens":
        cfg = BuildConfig(test_ratio=0.2, valid_ratio=0.1, seed=seed,
                          cache_dir=str(work / "text-cache"))
    else:
        # The fixed LightGCN split; 10% of each user's training items validate (early stop).
        cfg = BuildConfig(train=str(gowalla / "train.txt"),
                          test=str(gowalla / "test.txt"), no_text=True, valid_ratio=0.1,
                          seed=0)
    build_graph(cfg, out)
    return out


def run_one(job: dict) -> dict:
    """Train and test one (items, alpha, seed) in this (single-threaded) worker."""
    import torch

    torch.set_num_threads(job["threads"])
    from graphrec.artifacts import load_graph
    from graphrec.eval import EvalContext
    from graphrec.pipeline import train_model
    from graphrec.train import TrainConfig, Trainer

    graph = load_graph(Path(job["graph"]))
    alpha = job["alpha"]
    cfg = TrainConfig(epochs=job["epochs"], batch_size=job["batch_size"], lr=job["lr"],
                      negatives="uniform" if alpha == 0 else "popularity", neg_alpha=alpha,
                      neg_share=1.0,  # every candidate from the popularity sampler, as recorded
                      item_init=job["items"], seed=job["seed"], eval_every=job["eval_every"],
                      patience=job["patience"],
                      # as recorded in RESULTS.md, before hard negatives were the default
                      neg_candidates=1, reg=1e-4)
    t0 = time.perf_counter()
    trainer = Trainer(graph, cfg)
    result = train_model(graph, trainer=trainer)
    row = {k: result.test.get(k) for k in KEYS}
    # Validation metrics of the restored (best) epoch: what selection may look at.
    best = [h for h in result.history if h["epoch"] == result.best_epoch and "valid" in h]
    row["valid"] = {k: best[0]["valid"].get(k) for k in KEYS} if best else None
    if job.get("boosts"):
        row["boost"], row["valid_boost"] = {}, {}
        ctx = EvalContext.from_graph(graph, trainer.cfg.ks, trainer.device)
        emb = (result.user_emb, result.item_emb)  # the restored model's, computed once
        shape = row["boost_shape"] = job["boost_shape"]
        for b in job["boosts"]:
            m = ctx.evaluate("test", factors=emb, tail_boost=b, tail_shape=shape)
            row["boost"][f"{b:g}"] = {k: m.get(k) for k in KEYS}
            m = ctx.evaluate("valid", factors=emb, tail_boost=b, tail_shape=shape)
            row["valid_boost"][f"{b:g}"] = {k: m.get(k) for k in KEYS}
    row |= {"items": job["items"], "alpha": alpha, "seed": job["seed"],
            "epochs": len(result.history), "best_epoch": result.best_epoch,
            "batch_size": result.config.batch_size, "lr": result.config.lr,
            "seconds": round(time.perf_counter() - t0, 1)}
    Path(job["out"]).write_text(json.dumps(row, indent=1) + "\n")
    return row


def summarise(rows: list[dict], items_kinds: list[str], alphas: list[float]) -> tuple[str, dict]:
    table = ["| items | alpha | " + " | ".join(KEYS) + " | seeds | epochs (mean) |",
             "|---|---|" + "---|" * (len(KEYS) + 2)]
    means: dict = {}
    for items in items_kinds:
        for alpha in alphas:
            rs = [r for r in rows if r["items"] == items and r["alpha"] == alpha]
            if not rs:
                continue
            cells = []
            for k in KEYS:
                v = np.array([r[k] for r in rs if r[k] is not None], dtype=float)
                if v.size == 0:
                    cells.append("–")
                    continue
                means[(items, alpha, k)] = (float(v.mean()), float(v.std()))
                cells.append(f"{v.mean():.4f} ± {v.std():.4f}" if v.size > 1 else f"{v[0]:.4f}")
            table.append(f"| {items} | {alpha:g} | " + " | ".join(cells) +
                         f" | {len(rs)} | {np.mean([r['epochs'] for r in rs]):.0f} |")
    return "\n".join(table), means


def summarise_boosts(rows: list[dict], items_kinds: list[str]) -> tuple[str, dict]:
    """Table of metrics against the tail boost for every (items, alpha, boost shape) boosted,
    mean ± std over seeds; ``means`` is keyed ((items, shape), alpha, boost, metric)."""
    table = ["| items | alpha | boost shape | tail boost | " + " | ".join(KEYS) + " | seeds |",
             "|---|---|---|---|" + "---|" * (len(KEYS) + 1)]
    means: dict = {}
    for items, alpha, shape in sorted({(r["items"], r["alpha"], boost_shape(r)) for r in rows
                                       if r["items"] in items_kinds}):
        rs = [r for r in rows if r["items"] == items and r["alpha"] == alpha
              and boost_shape(r) == shape]
        for b in sorted({b for r in rs for b in r["boost"]}, key=float):
            have = [r for r in rs if b in r["boost"]]
            cells = []
            for k in KEYS:
                v = np.array([r["boost"][b][k] for r in have
                              if r["boost"][b].get(k) is not None])
                if v.size == 0:
                    cells.append("–")
                    continue
                means[((items, shape), alpha, float(b), k)] = (float(v.mean()),
                                                               float(v.std()))
                cells.append(f"{v.mean():.4f} ± {v.std():.4f}" if v.size > 1
                             else f"{v[0]:.4f}")
            table.append(f"| {items} | {alpha:g} | {shape} | {b} | " + " | ".join(cells) +
                         f" | {len(have)} |")
    return "\n".join(table), means


def boost_shape(row: dict) -> str:
    """The tail-boost shape a boost run used (runs from before shapes existed: flat)."""
    return row.get("boost_shape", "flat")


def select_boosts(every: list[dict], items: str, tolerance: float) -> tuple[str, list[dict]]:
    """The tail boost chosen on validation, per seed: the largest boost whose validation
    recall@20 stays within ``tolerance`` of the same seed's uniform-negative model (alpha 0,
    same items), then scored once on test. Returns a Markdown table and its rows."""
    rows = []
    for r in every:
        if r["items"] != items or "valid_boost" not in r:
            continue
        ref = [u for u in every if u["items"] == items and u["alpha"] == 0 and
               u["seed"] == r["seed"] and "boost" not in u and u.get("valid")]
        if not ref:
            continue
        floor = (1 - tolerance) * ref[0]["valid"]["recall@20"]
        ok = [b for b, m in r["valid_boost"].items() if m["recall@20"] >= floor]
        if not ok:
            continue
        b = max(ok, key=float)
        rows.append({"alpha": r["alpha"], "shape": boost_shape(r), "seed": r["seed"],
                     "boost": float(b),
                     "valid_recall": r["valid_boost"][b]["recall@20"],
                     "valid_floor": floor, "uniform_test_recall": ref[0]["recall@20"],
                     **{k: r["boost"][b][k] for k in KEYS}})
    table = ["| items | alpha | boost shape | boost per seed (chosen on validation) | recall@20 | "
             "uniform recall@20 | change | tail_recall@20 | tail_share@20 | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for alpha, shape in sorted({(r["alpha"], r["shape"]) for r in rows}):
        rs = sorted((r for r in rows if (r["alpha"], r["shape"]) == (alpha, shape)),
                    key=lambda r: r["seed"])
        rec = np.array([r["recall@20"] for r in rs])
        uni = np.array([r["uniform_test_recall"] for r in rs])
        tail = np.array([r["tail_recall@20"] for r in rs])
        share = np.array([r["tail_share@20"] for r in rs])
        boosts = ", ".join(f"{r['boost']:g}" for r in rs)
        table.append(
            f"| {items} | {alpha:g} | {shape} | {boosts} | "
            f"{rec.mean():.4f} ± {rec.std():.4f} | {uni.mean():.4f} | "
            f"{(rec.mean() / uni.mean() - 1) * 100:+.1f}% | "
            f"{tail.mean():.4f} ± {tail.std():.4f} | "
            f"{share.mean():.4f} | {len(rs)} |")
    return "\n".join(table), rows


def plot(means: dict, items_kinds: list[str], alphas: list[float], path: Path,
         title: str, boost_means: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for items, marker in zip(items_kinds, "os^", strict=False):
        pts = [(a, means[(items, a, "recall@20")], means[(items, a, "tail_recall@20")])
               for a in alphas if (items, a, "recall@20") in means]
        if not pts:
            continue
        x = [p[1][0] for p in pts]
        y = [p[2][0] for p in pts]
        ax.errorbar(x, y, xerr=[p[1][1] for p in pts], yerr=[p[2][1] for p in pts],
                    marker=marker, capsize=2, label=f"{items} items")
        for a, xi, yi in zip([p[0] for p in pts], x, y, strict=True):
            ax.annotate(f"α={a:g}", (xi, yi), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    curves = sorted({(it, a) for (it, a, _, _) in (boost_means or {})})
    for key, alpha in curves:
        pts = sorted((b, m) for (it, a, b, k), m in boost_means.items()
                     if (it, a, k) == (key, alpha, "recall@20"))
        x = [m[0] for _, m in pts]
        y = [boost_means[(key, alpha, b, "tail_recall@20")][0] for b, _ in pts]
        ax.plot(x, y, linestyle="--" if key[1] == "flat" else "-", marker="x",
                label=f"{key[0]} items, alpha={alpha:g}, {key[1]} tail boost")
        for (b, _), xi, yi in zip(pts, x, y, strict=True):
            if b > 0 and (2 * b).is_integer():  # every boost labelled would not be legible
                ax.annotate(f"b={b:g}", (xi, yi), textcoords="offset points", xytext=(4, -10),
                            fontsize=7)
    uniform = [means[(it, 0.0, "recall@20")][0] for it in items_kinds
               if (it, 0.0, "recall@20") in means]
    if uniform:  # issue target: tail_recall >= 0.02 within 3% of the best uniform recall
        ax.axvline(0.97 * max(uniform), color="grey", linestyle=":", linewidth=1)
        ax.axhline(0.02, color="grey", linestyle=":", linewidth=1)
        ax.annotate("0.97 x best uniform recall", (0.97 * max(uniform), 0.0),
                    textcoords="offset points", xytext=(-120, 2), fontsize=7, color="grey")
    ax.set_xlabel("recall@20 (all test items)")
    ax.set_ylabel("tail_recall@20 (tail = 80% least-interacted items)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", choices=["movielens", "gowalla"], default="movielens")
    p.add_argument("--gowalla", type=Path, default=GOWALLA)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--items", nargs="+", default=["text", "id"], choices=["text", "id", "text+id"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=8192,
                   help="8192 on MovieLens: 1/3 of the default schedule's time, recall@20 "
                        "within 2%% of it (seed 0).")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--boosts", type=float, nargs="*", default=[0, 0.25, 0.5, 0.75, 1.0, 1.5],
                   help="serving-time tail boosts (--tail-boost) scored on the default alpha's "
                        "models (--boost-alpha), trained again with the same seed")
    p.add_argument("--boost-alpha", type=float, nargs="+", default=[0.0, 0.5],
                   help="the alphas whose models are scored with every --boosts value")
    p.add_argument("--boost-shape", choices=["degree", "flat"], default="degree",
                   help="how the boost is shared among tail items (--tail-shape)")
    p.add_argument("--tolerance", type=float, default=0.03,
                   help="boost selection: validation recall may fall this far below the "
                        "uniform model's")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker "
                   "(0 = cores / jobs)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    if not 0 <= args.tolerance < 1:
        p.error(f"--tolerance {args.tolerance}: expected a number in [0, 1)")
    logging.basicConfig(level=logging.WARNING)
    if args.dataset == "gowalla" and not (args.gowalla / "train.txt").exists():
        raise SystemExit(f"Gowalla not found at {args.gowalla} (pass --gowalla DIR)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="graphrec-longtail-"))
    out = args.out / f"long_tail_{args.dataset}"
    (out / "runs").mkdir(parents=True, exist_ok=True)
    threads = (args.threads or int(os.environ.get("OMP_NUM_THREADS", 0))
               or max(1, (os.cpu_count() or 1) // args.jobs))

    jobs = []
    for seed in args.seeds:
        graph = build(args.dataset, seed, work, args.gowalla)
        for items in args.items:
            for alpha in args.alphas:
                name = out / "runs" / f"{items}-a{alpha:g}-s{seed}.json"
                if name.exists():
                    continue
                jobs.append({"graph": str(graph), "items": items, "alpha": alpha, "seed": seed,
                             "epochs": args.epochs, "batch_size": args.batch_size,
                             "lr": args.lr, "eval_every": args.eval_every,
                             "patience": args.patience, "threads": threads, "out": str(name)})
        for items, ba in [(it, a) for it in args.items for a in args.boost_alpha
                          if args.boosts]:
            suffix = "" if args.boost_shape == "flat" else f"-{args.boost_shape}"
            name = out / "runs" / f"{items}-a{ba:g}-s{seed}-boost{suffix}.json"
            if not name.exists():
                jobs.append({"graph": str(graph), "items": items, "alpha": ba,
                             "seed": seed, "epochs": args.epochs,
                             "batch_size": args.batch_size, "lr": args.lr,
                             "eval_every": args.eval_every, "patience": args.patience,
                             "threads": threads, "out": str(name), "boosts": args.boosts,
                             "boost_shape": args.boost_shape})
    print(f"{len(jobs)} runs to do ({args.jobs} workers x {threads} threads)", flush=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        for row in pool.map(run_one, jobs):
            print(f"{row['items']} alpha={row['alpha']:g} seed={row['seed']}: " +
                  " ".join(f"{k}={row[k]:.4f}" for k in KEYS[:3] if row[k] is not None) +
                  f" epochs={row['epochs']} ({row['seconds']:.0f} s)", flush=True)

    every = [json.loads(f.read_text()) for f in sorted((out / "runs").glob("*.json"))]
    every = [r for r in every if r["seed"] in args.seeds]
    rows = [r for r in every if "boost" not in r]
    boosted = [r for r in every if "boost" in r]
    table, means = summarise(rows, args.items, args.alphas)
    boost_table, boost_means = summarise_boosts(boosted, args.items)
    head = (f"{args.dataset}, seeds {args.seeds}, batch {args.batch_size}, lr {args.lr}, "
            "test split; mean ± std over seeds")
    boost_head = "serving-time tail boost (recommend/evaluate --tail-boost)"
    select = [table for table, chosen in (select_boosts(every, items, args.tolerance)
                                          for items in args.items) if chosen]
    select_head = (f"tail boost chosen on validation (largest with validation recall@20 within "
                   f"{args.tolerance:.0%} of the uniform model's, per seed), scored on test")
    select_table = "\n\n".join(select)
    print(f"\n{head}\n{table}\n\n{boost_head}\n{boost_table}\n\n{select_head}\n{select_table}")
    (out / "table.md").write_text(f"{head}\n\n{table}\n\n{boost_head}\n\n{boost_table}\n\n"
                                  f"{select_head}\n\n{select_table}\n")
    (out / "runs.json").write_text(json.dumps(every, indent=1) + "\n")
    plot(means, args.items, args.alphas, out / "frontier.png",
         f"{args.dataset}: tail vs overall recall (alpha sweep, tail boost)", boost_means)
    print(f"wrote {out}/table.md, runs.json, frontier.png")


if __name__ == "__main__":
    main()
