"""Cold start on the bundled MovieLens: items nobody interacted with during training.

Protocol (DESIGN.md, ``build-graph --cold-items 0.2``): 20% of the items are cold; every
interaction with them goes to validation or test (whole items), none to training. Warm items
are split per user 70/10/20. Reported on the test split, full ranking, seen items masked:

- cold_recall@20 / cold_ndcg@20: each user with a cold test item ranks the cold items only;
- warm_recall@20 / warm_ndcg@20: ranking among warm items only, against warm test items;
- recall@20 / ndcg@20 ("hybrid"): all items compete, all test items count; cold_share@20 is
  the share of cold items in those top-20 lists.

Rows: the three ways graphrec places a text-only item (``--cold-start``; ridge and layer0 are
read off the same trained model as bpr, whose text head never changes the warm model), the
model with text off (no text: cold items score 0), text-kNN (cosine between an item's text
embedding and the mean text embedding of the user's training items), random, and the same
model trained on all items (the cold items' interactions split 70/10/20 like the rest; the warm
test set is identical), the reference for warm recall.

    python experiments/cold_start.py --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

KEYS = ("cold_recall@20", "cold_ndcg@20", "warm_recall@20", "warm_ndcg@20", "recall@20",
        "ndcg@20", "cold_share@20")
TRAIN_ARGS = dict(epochs=300, batch_size=8192, lr=0.02)


def graphs(seed: int, work: Path) -> dict[str, Path]:
    """The cold split (with and without text) and the all-items twin of the same split."""
    from graphrec.artifacts import load_graph, save_graph
    from graphrec.build import BuildConfig, build_graph
    from graphrec.data import TRAIN

    paths = {name: work / f"{name}-{seed}" for name in ("cold", "cold-notext", "all")}
    if all(p.exists() for p in paths.values()):
        return paths
    common = dict(test_ratio=0.2, valid_ratio=0.1, seed=seed, cold_items=0.2)
    cold = build_graph(BuildConfig(**common, cache_dir=str(work / "text-cache")), paths["cold"])
    notext = build_graph(BuildConfig(**common, no_text=True), paths["cold-notext"])
    if not (np.array_equal(cold.folds, notext.folds) and
            np.array_equal(cold.cold_items, notext.cold_items)):
        raise SystemExit("the no-text graph split differs from the text graph split")
    # All items: the cold items' interactions are split like warm ones; warm folds unchanged.
    rng = np.random.default_rng([seed, 31])
    folds = cold.folds.copy()
    on_cold = cold.cold_items[cold.items]
    folds[on_cold] = rng.choice([0, 1, 2], size=int(on_cold.sum()), p=[0.7, 0.1, 0.2])
    assert (folds[~on_cold] == cold.folds[~on_cold]).all()
    every = replace(cold, folds=folds.astype(cold.folds.dtype),
                    cold_items=np.zeros_like(cold.cold_items),
                    meta={**cold.meta, "fingerprint": f"{cold.meta['fingerprint']}-all-items",
                          "num_cold_items": 0})
    assert ((every.folds == TRAIN) | ~on_cold).any()
    save_graph(every, paths["all"])
    load_graph(paths["all"])  # it must load
    return paths


def text_profiles(graph):
    """The text-kNN scorer: (profiles [U, t], text [I, t]) float32, ``text`` the items' unit
    text embeddings and a user's profile the unit mean of their training items' ``text``
    rows, so that ``profiles[u] @ text.T`` is the cosine between each item's text and the
    user's mean text. graphrec itself has no such scorer (its users are scored by their
    trained embeddings); this is the one copy, for the text-kNN row here and the text lever
    of tail_levers.py."""
    import torch

    from graphrec.data import TRAIN

    text = torch.nn.functional.normalize(torch.as_tensor(graph.text_emb).float(), dim=1)
    u, i = graph.fold_pairs(TRAIN)
    profile = torch.zeros(graph.num_users, text.shape[1]).index_add_(
        0, torch.as_tensor(u), text[torch.as_tensor(i)])
    return torch.nn.functional.normalize(profile, dim=1), text


def score_table(graph, score_fn, cold_split=None) -> dict:
    """Cold-only, warm-only and hybrid metrics of ``score_fn`` on ``graph``'s test split.

    ``cold_split``: the cold items' mask of the cold split, to tell warm from cold on the
    all-items twin (whose own mask is empty); default ``graph.cold_items``."""
    import torch

    from graphrec.data import TEST, Csr
    from graphrec.eval import EvalContext, topk_rows
    from graphrec.serve import mask_known

    ctx = EvalContext.from_graph(graph, (20,), "cpu")
    seen, _ = ctx.folds[TEST]
    out = {}
    if ctx.cold_items is not None:
        m = ctx.evaluate(TEST, score_fn=score_fn)
        out |= {k: m[k] for k in ("cold_recall@20", "cold_ndcg@20", "recall@20", "ndcg@20")}
        # share of cold items in the hybrid top-20
        cold_t = torch.as_tensor(ctx.cold_items)
        shares = []
        for start in range(0, graph.num_users, 1024):
            users = torch.arange(start, min(start + 1024, graph.num_users))
            s = score_fn(users).clone()
            mask_known(s, users, seen)
            _, top = topk_rows(s, 20)
            shares.append(cold_t[top].float().mean(1))
        out["cold_share@20"] = float(torch.cat(shares).mean())
    # Warm only: cold columns never ranked, cold targets dropped (the same evaluation sets
    # with the test targets restricted to warm items, and no cold-only ranking).
    cold = graph.cold_items if cold_split is None else cold_split
    u, i = graph.fold_pairs(TEST)
    keep = ~cold[i]
    warm_only = replace(ctx, cold_items=None, folds={
        TEST: (seen, Csr.from_pairs(u[keep], i[keep], graph.num_users))})
    cold_cols = torch.as_tensor(np.flatnonzero(cold))

    def warm_fn(users):
        s = score_fn(users).clone()
        s[:, cold_cols] = -np.inf
        return s

    m = warm_only.evaluate(TEST, score_fn=warm_fn)
    out["warm_recall@20"], out["warm_ndcg@20"] = m["recall@20"], m["ndcg@20"]
    if ctx.cold_items is None:
        m = ctx.evaluate(TEST, score_fn=score_fn)
        out["recall@20"], out["ndcg@20"] = m["recall@20"], m["ndcg@20"]
    return out


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    from graphrec.artifacts import load_graph
    from graphrec.model import place_cold_items, text_map_for
    from graphrec.pipeline import train_model
    from graphrec.train import TrainConfig, Trainer

    graph = load_graph(Path(job["graph"]))
    kind, seed = job["kind"], job["seed"]
    t0 = time.perf_counter()
    rows = {}
    if kind in ("random", "text-knn"):
        if kind == "random":
            gen = torch.Generator().manual_seed(seed)
            scores = torch.rand(graph.num_users, graph.num_items, generator=gen)
        else:
            profile, text = text_profiles(graph)
            scores = profile @ text.T
        rows[kind] = score_table(graph, lambda users: scores[users])
    else:
        cfg = TrainConfig(**TRAIN_ARGS, seed=seed, neg_candidates=job["neg_candidates"],
                          reg=job["reg"],
                          item_init="id" if kind == "text off" else "text",
                          cold_start="bpr" if kind == "text" else "ridge")
        trainer = Trainer(graph, cfg)
        result = train_model(graph, trainer=trainer)
        if kind == "text":
            # One trained model, three placements of its cold items.
            eu, ei = trainer.propagate()  # before cold placement
            warm = trainer.warm.to(ei.device)
            eu_cpu = eu.cpu()  # score_table ranks on the CPU
            with torch.inference_mode():
                for design in ("ridge", "bpr", "layer0"):
                    w = text_map_for(design, trainer.model, trainer.text_emb, ei, warm)
                    placed = place_cold_items(ei, warm, trainer.text_emb, w).cpu()
                    rows[f"graphrec, cold start {design}"] = score_table(
                        graph, lambda users, placed=placed: eu_cpu[users] @ placed.T)
        else:
            ue, ie = result.user_emb, result.item_emb
            cold_split = load_graph(Path(job["cold_graph"])).cold_items
            # Without text a cold item's embedding is 0, so all cold items tie at score 0;
            # break ties at random, or the catalog's id order (old, popular films first on
            # MovieLens) would decide the cold ranking.
            noise = 1e-6 * torch.rand(graph.num_users, graph.num_items,
                                      generator=torch.Generator().manual_seed(seed))
            rows[f"graphrec, {kind}"] = score_table(
                graph, lambda users: ue[users] @ ie.T + noise[users], cold_split)
    for r in rows.values():
        r["seconds"] = round(time.perf_counter() - t0, 1)
    Path(job["out"]).write_text(json.dumps({"seed": seed, "rows": rows}, indent=1) + "\n")
    return {"kind": kind, "seed": seed, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1)
    # Single negatives and reg 1e-4 by default: the settings of the first table in
    # experiments/RESULTS.md, recorded before hard negatives became graphrec's default.
    p.add_argument("--neg-candidates", type=int, default=1)
    p.add_argument("--reg", type=float, default=1e-4)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="graphrec-cold-"))
    out = args.out / "cold_start"
    (out / "runs").mkdir(parents=True, exist_ok=True)
    threads = (int(os.environ.get("OMP_NUM_THREADS", 0))
               or max(1, (os.cpu_count() or 1) // args.jobs))
    jobs = []
    for seed in args.seeds:
        paths = graphs(seed, work)
        for kind, g in (("text", "cold"), ("all items", "all"), ("text off", "cold-notext"),
                        ("text-knn", "cold"), ("random", "cold")):
            name = out / "runs" / f"{kind.replace(' ', '-')}-s{seed}.json"
            if not name.exists():
                jobs.append({"kind": kind, "seed": seed, "graph": str(paths[g]),
                             "cold_graph": str(paths["cold"]), "threads": threads,
                             "neg_candidates": args.neg_candidates, "reg": args.reg,
                             "out": str(name)})
    print(f"{len(jobs)} runs to do", flush=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        for res in pool.map(run_one, jobs):
            for name, r in res["rows"].items():
                print(f"seed {res['seed']} {name}: " +
                      " ".join(f"{k}={r[k]:.4f}" for k in KEYS if k in r), flush=True)

    per_row: dict[str, list[dict]] = {}
    for f in sorted((out / "runs").glob("*.json")):
        doc = json.loads(f.read_text())
        if doc["seed"] in args.seeds:
            for name, r in doc["rows"].items():
                per_row.setdefault(name, []).append(r)
    order = sorted(per_row, key=lambda n: (not n.startswith("graphrec"), n))
    table = ["| model | " + " | ".join(KEYS) + " | seeds |", "|---|" + "---|" * (len(KEYS) + 1)]
    for name in order:
        rs = per_row[name]
        cells = []
        for k in KEYS:
            v = np.array([r[k] for r in rs if k in r])
            cells.append("–" if v.size == 0 else
                         f"{v.mean():.4f} ± {v.std():.4f}" if v.size > 1 else f"{v[0]:.4f}")
        table.append(f"| {name} | " + " | ".join(cells) + f" | {len(rs)} |")
    text = "\n".join(table)
    head = f"MovieLens, 20% cold items, seeds {args.seeds}, test split; mean ± std over seeds"
    print(f"\n{head}\n{text}")
    (out / "table.md").write_text(f"{head}\n\n{text}\n")
    (out / "rows.json").write_text(json.dumps(per_row, indent=1) + "\n")


if __name__ == "__main__":
    main()
