"""TextLightGCN (the defaults), the graph filter and their ensemble, side by side over seeds:
what `graphrec train`, `graphrec train --model filter` and `graphrec train --model ensemble`
give on one graph, every setting chosen on validation (carved from the training interactions
when the graph has none), test scored once per run.

The ensemble run contains a defaults run: its TextLightGCN is trained by `graphrec train`'s
own code with the same settings and seed (on a graph without validation, after the carved
round that chooses the weight), so its test numbers are the defaults' row.

    python experiments/model_kinds.py --graph GW/graph --seeds 0,1,2 \
        --json experiments/results/model_kinds/gowalla.json \
        --curve experiments/results/gowalla_quality_cpu_hard8.json \
        --plot experiments/results/model_kinds/gowalla.png

``--curve``: a experiments/gowalla_quality.py JSON of the defaults (recall@20 against wall
minutes), drawn with the filter and ensemble runs of seed 0 as points at their fitting time.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphrec.artifacts import load_graph  # noqa: E402
from graphrec.pipeline import train_ensemble  # noqa: E402
from graphrec.train import TrainConfig  # noqa: E402

METRICS = ("recall@20", "ndcg@20", "tail_recall@20")


def one_seed(graph, seed: int, device: str, log) -> list[dict]:
    """The three rows of one seed from one ensemble run: its TextLightGCN is the defaults'
    run and its filter is what `train --model filter` fits (the same chooser on the same
    carved split, refitted on all training interactions)."""
    cfg = TrainConfig(seed=seed, device=device)
    t0 = time.perf_counter()
    ens = train_ensemble(graph, cfg, log=log)
    ens_s = time.perf_counter() - t0
    f = ens.model["filter"]
    rows = [
        {"kind": "lightgcn (defaults)", "seed": seed, "seconds": ens.result.timings.get(
            "total_seconds"), "settings": {"best_epoch": ens.result.best_epoch},
         **{m: ens.result.test.get(m) for m in METRICS}},
        {"kind": "filter", "seed": seed, "seconds": ens.parts["filter_seconds"],
         "settings": {k: f[k] for k in ("degree_exponent", "rank", "alpha")},
         **{m: ens.parts["filter_test"].get(m) for m in METRICS}},
        {"kind": "ensemble", "seed": seed, "seconds": round(ens_s, 1),
         "settings": {"weight": ens.model["weight"],
                      **{k: f[k] for k in ("degree_exponent", "rank", "alpha")}},
         "carved": ens.model["selection"]["carved"],
         **{m: ens.test.get(m) for m in METRICS}},
    ]
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows


def imported(filter_dir: Path, ensemble_dir: Path) -> list[dict]:
    """The rows of one seed from model directories that `graphrec train --model filter` and
    `--model ensemble` wrote (their metrics.json and config.json), for a run already made."""
    def read(folder: Path, name: str) -> dict:
        return json.loads((folder / "current" / name).read_text())

    fm, fc = read(filter_dir, "metrics.json"), read(filter_dir, "config.json")
    em, ec = read(ensemble_dir, "metrics.json"), read(ensemble_dir, "config.json")
    seed = fc["model"]["seed"]
    f = ec["model"]["filter"]
    return [
        {"kind": "lightgcn (defaults)", "seed": seed,
         "seconds": em.get("lightgcn_seconds"), "settings": {"best_epoch": em.get("best_epoch")},
         **{m: em["lightgcn_test"].get(m) for m in METRICS}},
        {"kind": "filter", "seed": seed, "seconds": fm["timings"]["total_seconds"],
         "settings": {k: fc["model"][k] for k in ("degree_exponent", "rank", "alpha")},
         **{m: fm["test"].get(m) for m in METRICS}},
        {"kind": "ensemble", "seed": seed, "seconds": em["timings"]["total_seconds"],
         "settings": {"weight": ec["model"]["weight"],
                      **{k: f[k] for k in ("degree_exponent", "rank", "alpha")}},
         "carved": ec["model"]["selection"]["carved"],
         **{m: em["test"].get(m) for m in METRICS}},
    ]


def summary(rows: list[dict]) -> str:
    out = ["| model | " + " | ".join(METRICS) + " | wall (s) | chosen on validation |",
           "|---" * (len(METRICS) + 3) + "|"]
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]

        def cell(key, mine=mine):
            vals = [r[key] for r in mine if r[key] is not None]
            if len(vals) < 2:
                return f"{vals[0]:.4f}" if vals else "–"
            return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"
        timed = [float(r["seconds"]) for r in mine if r["seconds"] is not None]
        secs = f"{statistics.mean(timed):.0f}" if timed else "–"
        chosen = "; ".join(", ".join(f"{k} {v}" for k, v in r["settings"].items())
                           for r in mine)
        out.append(f"| {kind} ({len(mine)} seeds) | " + " | ".join(cell(m) for m in METRICS)
                   + f" | {secs} | {chosen} |")
    return "\n".join(out)


def plot(rows: list[dict], curve: Path | None, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if curve is not None:
        points = json.loads(curve.read_text())["curve"]
        ax.plot([p["wall_seconds"] / 60 for p in points], [p["recall@20"] for p in points],
                marker=".", label="TextLightGCN, defaults (curve)")
    first = [r for r in rows if r["seed"] == rows[0]["seed"]]
    for r, marker in zip(first, ("s", "^", "*"), strict=True):
        if r["seconds"] is None:
            continue
        ax.scatter([float(r["seconds"]) / 60], [r["recall@20"]], marker=marker, s=80,
                   label=f"{r['kind']}: {r['recall@20']:.4f}", zorder=3)
    ax.axhline(0.1830, color="grey", lw=0.8, ls="--", label="LightGCN paper 0.1830")
    ax.axhline(0.1941, color="black", lw=0.8, ls=":", label="ChebyCF 0.1941 (tuned on test)")
    ax.set_xlabel("wall minutes, 2-core CPU (fit; the ensemble includes its carved round)")
    ax.set_ylabel("test recall@20")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--graph", type=Path, required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path)
    p.add_argument("--curve", type=Path)
    p.add_argument("--plot", type=Path)
    p.add_argument("--from-json", action="store_true",
                   help="redraw the table and plot from --json without training")
    p.add_argument("--import-runs", nargs=2, type=Path, metavar=("FILTER_DIR", "ENSEMBLE_DIR"),
                   help="start from the rows of model directories already trained by "
                        "`graphrec train --model filter` / `--model ensemble` (their seed "
                        "is then skipped)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.from_json:
        rows = json.loads(args.json.read_text())["rows"]
    else:
        graph = load_graph(args.graph)
        rows = imported(*args.import_runs) if args.import_runs else []
        done = {r["seed"] for r in rows}
        for seed in (int(s) for s in args.seeds.split(",") if int(s) not in done):
            rows += one_seed(graph, seed, args.device, lambda line: print(line, file=sys.stderr))
            if args.json:  # after every seed: a long run keeps what it has
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({"graph": str(args.graph), "rows": rows},
                                                indent=1))
    print(summary(rows))
    if args.plot:
        plot(rows, args.curve, args.plot)


if __name__ == "__main__":
    main()
