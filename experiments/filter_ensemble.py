"""TextLightGCN blended with the graph filter: is the ensemble better than either, with the
blend weight chosen on validation only?

Scores are standardised per user over the whole catalog (z = (s - mean_u) / sd_u) and
blended as (1 - w) z_lightgcn + w z_filter. Protocol, for a graph without a validation split
(Gowalla from --train/--test): carve 10% of each user's training interactions (seeded, as
experiments/graph_filter.py does), train TextLightGCN on the rest with the recipe
`graphrec train` picks for the full graph (the same epochs and schedule, no validation) and
fit the filter on the rest; choose w on the carved interactions; then train and fit both again
on all training interactions and score test once with that w. Filter settings come from
experiments/graph_filter.py's JSON (its validation choice).

    python experiments/filter_ensemble.py --graph /tmp/gw/graph \
        --filter experiments/results/graph_filter/gowalla_wide.json [--epochs 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from graph_filter import carve  # noqa: E402

from graphrec.artifacts import load_graph  # noqa: E402
from graphrec.data.csr import Csr  # noqa: E402
from graphrec.data.split import TEST, TRAIN, VALID  # noqa: E402
from graphrec.eval.protocol import evaluate_ranking  # noqa: E402
from graphrec.model.filter import FilterConfig, GraphFilter  # noqa: E402
from graphrec.train import TrainConfig, Trainer  # noqa: E402

WEIGHTS = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)


def with_carved_valid(graph, held: Csr):
    """The graph with the ``held`` (user, item) pairs moved from TRAIN to VALID."""
    keys = held.row_index() * graph.num_items + np.asarray(held.indices, dtype=np.int64)
    mine = graph.users * graph.num_items + graph.items
    folds = graph.folds.copy()
    folds[(folds == TRAIN) & np.isin(mine, keys)] = VALID
    return replace(graph, folds=folds)


def train_lightgcn(graph, epochs: int | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    cfg = TrainConfig(eval_every=0, device="cpu", **({"epochs": epochs} if epochs else {}))
    t0 = time.perf_counter()
    result = Trainer(graph, cfg).fit(validate=None)
    return result.user_emb, result.item_emb, time.perf_counter() - t0


def blended(user_emb, item_emb, scorer: GraphFilter, w: float):
    item_mean = item_emb.mean(0)
    centred = item_emb - item_mean

    def score(users: torch.Tensor) -> torch.Tensor:
        e = user_emb[users]
        lgcn = e @ centred.T
        lgcn = lgcn / lgcn.std(dim=1, keepdim=True).clamp_min(1e-12)
        if w == 0.0:
            return lgcn
        f = scorer.score(users)
        f = (f - f.mean(dim=1, keepdim=True)) / f.std(dim=1, keepdim=True).clamp_min(1e-12)
        return (1 - w) * lgcn + w * f
    return score


def evaluate(score, seen: Csr, target: Csr, num_items: int) -> dict:
    m = evaluate_ranking(score, seen, target, num_items, ks=(20,), batch_users=256)
    return {"recall@20": round(m["recall@20"], 4), "ndcg@20": round(m["ndcg@20"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graph", required=True)
    ap.add_argument("--filter", required=True, type=Path,
                    help="experiments/graph_filter.py's JSON: its 'chosen' settings are used")
    ap.add_argument("--epochs", type=int, default=None, help="default: train's own default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    graph = load_graph(args.graph)
    if graph.has_valid():
        sys.exit("this protocol is for a graph without a validation split")
    chosen = json.loads(args.filter.read_text())["chosen"]
    fcfg = FilterConfig(rank=chosen["rank"], alpha=chosen["alpha"],
                        degree_exponent=chosen["exponent"], seed=args.seed)
    print(f"filter: rank {fcfg.rank}, alpha {fcfg.alpha}, exponent {fcfg.degree_exponent}")
    out = {"filter": chosen, "valid": {}, "test": {}}
    fit_train, held = carve(graph.csr(TRAIN), 0.1, args.seed)
    u, v, secs = train_lightgcn(with_carved_valid(graph, held), args.epochs)
    print(f"carved: TextLightGCN trained in {secs:.0f} s", flush=True)
    scorer = GraphFilter(fit_train, graph.num_items, fcfg)
    for w in WEIGHTS:
        out["valid"][w] = evaluate(blended(u, v, scorer, w), fit_train, held, graph.num_items)
        print(f"valid  w {w:.2f}: {out['valid'][w]}", flush=True)
    best = max(WEIGHTS, key=lambda w: out["valid"][w]["recall@20"])
    train = graph.csr(TRAIN)
    u, v, secs = train_lightgcn(graph, args.epochs)
    t0 = time.perf_counter()
    scorer = GraphFilter(train, graph.num_items, fcfg)
    fit_s = time.perf_counter() - t0
    print(f"full: TextLightGCN trained in {secs:.0f} s, filter fitted in {fit_s:.0f} s")
    for w in sorted({0.0, best, 1.0}):
        out["test"][w] = evaluate(blended(u, v, scorer, w), train, graph.csr(TEST),
                                  graph.num_items)
        label = "chosen" if w == best else ("TextLightGCN alone" if w == 0 else "filter alone")
        print(f"test   w {w:.2f} ({label}): {out['test'][w]}", flush=True)
    out.update(chosen_weight=best, lightgcn_seconds=round(secs, 1), filter_seconds=round(fit_s, 1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
