"""Serving-time levers on the long tail, compared on the same trained models.

The tail boost (``--tail-boost B --tail-shape degree``) against three other ways to lift
long-tail items without retraining, on the bundled MovieLens split of long_tail.py (text
items, alpha 0 and 0.5, batch 8192, lr 0.02, early stopping on validation ndcg@20):

- ``degree``: the shipped boost, score + B * std(user's scores) * w_i
  (graphrec.popularity.tail_boost_weights);
- ``norm``: item embeddings divided by their norm to the power g (popular items have long
  propagated embeddings; g = 1 is cosine scoring);
- ``adjnorm``: the trained layer-0 embeddings propagated again with D^-r A D^-(1-r) instead of
  D^-1/2 A D^-1/2 (r > 0.5 shrinks what popular nodes receive), at serving time only;
- ``text``: the degree boost plus C * std * w_i * z_ui, z_ui the user's z-scored cosine
  between the item's text and the mean text of the user's training items.

Every setting is scored on validation and on test. Two selection rules, both on validation
only (highest validation tail_recall@20 whose validation recall@20 is within 3% of the uniform
model's), each scored on test: per seed, each lever's own setting; and one setting for all
seeds, chosen on the seed-averaged validation numbers (what a user shipping one --tail-boost
would do).

    python experiments/tail_levers.py --seeds 0 1 2 --workdir W --jobs 2
    python experiments/tail_levers.py --seeds 0 1 2 --neg-candidates 8 --reg 1e-3 \
        --out experiments/results/tail_levers_hard8      # graphrec's negatives and L2
    python experiments/tail_levers.py --seeds 0 1 2 --neg-candidates 8 --reg 1e-3 \
        --batch-size 0 --lr 0 --out experiments/results/tail_levers_defaults  # and its batch rule
    python experiments/tail_levers.py --tables-only      # re-render from levers.json

Models are kept under W/levers/ and reused; the table and raw numbers go to
experiments/results/tail_levers/.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from cold_start import text_profiles  # same folder
from long_tail import build

KEYS = ("recall@20", "tail_recall@20", "tail_share@20")
BOOSTS = (0, 0.5, 1, 1.25, 1.5, 1.6, 1.7, 1.8, 2, 2.5)
NORMS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
ADJ = (0.55, 0.6, 0.65, 0.7, 0.8)
TEXT = (0.25, 0.5, 1.0)
TEXT_BOOSTS = (0, 1, 1.25, 1.5, 1.7, 2)


def train(job: dict) -> str:
    import torch

    torch.set_num_threads(job["threads"])
    from graphrec.artifacts import load_graph
    from graphrec.pipeline import train_model
    from graphrec.train import TrainConfig, Trainer

    out = Path(job["out"])
    if out.exists():
        return f"{out.name} (kept)"
    alpha = job["alpha"]
    cfg = TrainConfig(epochs=300, batch_size=job["batch_size"], lr=job["lr"], item_init="text",
                      seed=job["seed"],
                      negatives="uniform" if alpha == 0 else "popularity", neg_alpha=alpha,
                      neg_share=1.0,  # every candidate from the popularity sampler, as recorded
                      eval_every=5, patience=5,
                      # 1 and 1e-4 by default: the settings of the table recorded before hard
                      # negatives became graphrec's default (8 and 1e-3)
                      neg_candidates=job["neg_candidates"], reg=job["reg"])
    trainer = Trainer(load_graph(Path(job["graph"])), cfg)
    result = train_model(trainer.graph, trainer=trainer)
    with torch.no_grad():
        xi0 = trainer.model.item_layer0().clone()
    tmp = out.with_suffix(".tmp")
    torch.save({"eu": result.user_emb, "ei": result.item_emb,
                "xu0": trainer.model.user_emb.weight.detach().clone(), "xi0": xi0}, tmp)
    os.replace(tmp, out)
    return f"{out.name} recall@20 {result.test['recall@20']:.4f}"


def adjnorm_propagation(xu0, xi0, r_blocks, degrees, r: float, layers: int = 3):
    """LightGCN's layer mean with D^-r A D^-(1-r) in place of D^-1/2 A D^-1/2: item <- user
    weights d_i^-r d_u^-(1-r), user <- item d_u^-r d_i^-(1-r).

    D^-r A D^-(1-r) = D^(1/2-r) (D^-1/2 A D^-1/2) D^(r-1/2), so its k-th power is
    D^(1/2-r) Â^k D^(r-1/2): graphrec's own propagation (``lightgcn_propagate`` over the
    ``normalized_bipartite`` blocks ``r_blocks``) of D^(r-1/2) x, scaled back by D^(1/2-r).
    ``degrees``: (user, item) training degrees clipped to at least 1 (a node without edges
    keeps x / (K + 1)).
    """
    import torch

    from graphrec.model import lightgcn_propagate

    su, si = (torch.as_tensor(d ** (0.5 - r), dtype=torch.float32)[:, None] for d in degrees)
    pu, pi = lightgcn_propagate(xu0 / su, xi0 / si, *r_blocks, layers)
    return pu * su, pi * si


def score_levers(job: dict) -> dict:
    """Validation and test metrics of every lever setting on one seed's two models."""
    import torch

    torch.set_num_threads(job["threads"])
    from graphrec.artifacts import load_graph
    from graphrec.eval import EvalContext
    from graphrec.graph import normalized_bipartite
    from graphrec.popularity import tail_boost_weights

    graph = load_graph(Path(job["graph"]))
    ctx = EvalContext.from_graph(graph, (20,))
    dev = ctx.device
    users, items = graph.train
    r_blocks = normalized_bipartite(users, items, graph.num_users, graph.num_items)
    degrees = tuple(np.maximum(np.bincount(ids, minlength=n), 1).astype(np.float64)
                    for ids, n in ((users, graph.num_users), (items, graph.num_items)))
    warm = torch.as_tensor(ctx.item_degree > 0)
    weights = torch.as_tensor(tail_boost_weights(ctx.item_degree, "degree")).to(dev)
    profile, text = (t.to(dev) for t in text_profiles(graph))
    rows: dict = {}

    def both(name: str, **kw) -> None:
        rows[name] = {}
        for split in ("valid", "test"):
            if "score_fn" in kw:
                m = ctx.evaluate(split, score_fn=kw["score_fn"])
            else:
                m = ctx.evaluate(split, factors=kw["emb"], tail_boost=kw.get("boost", 0.0),
                                 tail_shape="degree")
            rows[name][split] = {k: m[k] for k in KEYS}

    for alpha in (0.0, 0.5):
        d = torch.load(job["models"][str(alpha)], weights_only=True)
        eu, ei = d["eu"], d["ei"]
        for b in BOOSTS:
            both(f"{alpha:g}|degree|{b:g}", emb=(eu, ei), boost=b)
        length = ei.norm(dim=1, keepdim=True).clamp_min(1e-8)
        for g in NORMS:
            both(f"{alpha:g}|norm|{g:g}", emb=(eu, torch.where(warm[:, None], ei / length**g,
                                                                 ei)))
        for r in ADJ:
            pu, pi = adjnorm_propagation(d["xu0"], d["xi0"], r_blocks, degrees, r)
            both(f"{alpha:g}|adjnorm|{r:g}", emb=(pu, torch.where(warm[:, None], pi, ei)))
        eu_dev, ei_dev = eu.to(dev), ei.to(dev)  # the scorer's factors where it is called
        for c in TEXT:
            for b in TEXT_BOOSTS:
                def fn(u, b=b, c=c, eu=eu_dev, ei=ei_dev):
                    s = eu[u] @ ei.T
                    cos = profile[u] @ text.T
                    z = (cos - cos.mean(1, keepdim=True)) / cos.std(1, keepdim=True)
                    return s + s.std(dim=1, keepdim=True) * weights * (b + c * z)
                both(f"{alpha:g}|text C={c:g}|{b:g}", score_fn=fn)
    return {"seed": job["seed"], "rows": rows}


def choose(results: list[dict], tolerance: float) -> list[str]:
    """Per lever family and alpha: the setting chosen on validation per seed, scored on test."""
    ref = {r["seed"]: r["rows"]["0|degree|0"] for r in results}
    ref_test = np.mean([v["test"]["recall@20"] for v in ref.values()])
    families = sorted({k.rsplit("|", 1)[0] for k in results[0]["rows"]})
    lines = ["| alpha | lever | setting per seed (chosen on validation) | test recall@20 | "
             "vs uniform | test tail_recall@20 | tail share@20 |", "|---|---|---|---|---|---|---|"]
    for fam in families:
        chosen, rec, tail, share = [], [], [], []
        for r in results:
            floor = (1 - tolerance) * ref[r["seed"]]["valid"]["recall@20"]
            ok = [(v["valid"]["tail_recall@20"], k) for k, v in r["rows"].items()
                  if k.rsplit("|", 1)[0] == fam and v["valid"]["recall@20"] >= floor]
            if not ok:
                chosen.append("none")
                continue
            key = max(ok)[1]
            chosen.append(key.rsplit("|", 1)[1])
            t = r["rows"][key]["test"]
            rec.append(t["recall@20"])
            tail.append(t["tail_recall@20"])
            share.append(t["tail_share@20"])
        alpha, lever = fam.split("|", 1)
        if not rec:
            lines.append(f"| {alpha} | {lever} | {', '.join(chosen)} | – | – | – | – |")
            continue
        lines.append(f"| {alpha} | {lever} | {', '.join(chosen)} | {np.mean(rec):.4f} | "
                     f"{np.mean(rec) / ref_test - 1:+.1%} | {np.mean(tail):.4f} ± "
                     f"{np.std(tail):.4f} | {np.mean(share):.3f} |")
    return lines


def choose_global(results: list[dict], tolerance: float, top: int = 8) -> list[str]:
    """One setting for every seed: the seed-averaged validation numbers choose it (within
    tolerance of the uniform model's mean validation recall), the test numbers score it.
    The best `top` admissible settings are listed, ordered by validation tail recall."""
    ref = [r["rows"]["0|degree|0"] for r in results]

    def mean(key: str, split: str, metric: str) -> float:
        return float(np.mean([r["rows"][key][split][metric] for r in results]))

    ref_valid = np.mean([v["valid"]["recall@20"] for v in ref])
    ref_test = np.array([v["test"]["recall@20"] for v in ref])
    rows = []
    for key in results[0]["rows"]:
        cost = mean(key, "valid", "recall@20") / ref_valid - 1
        if cost >= -tolerance:
            rows.append((mean(key, "valid", "tail_recall@20"), cost, key))
    lines = ["| alpha | lever | setting | valid recall vs uniform | valid tail_recall@20 | "
             "test recall vs uniform (sd over seeds) | test tail_recall@20 ± sd |",
             "|---|---|---|---|---|---|---|"]
    for tail, cost, key in sorted(rows, reverse=True)[:top]:
        rec = np.array([r["rows"][key]["test"]["recall@20"] for r in results])
        ttail = np.array([r["rows"][key]["test"]["tail_recall@20"] for r in results])
        alpha, lever, setting = key.split("|")
        lines.append(f"| {alpha} | {lever} | {setting} | {cost:+.2%} | {tail:.4f} | "
                     f"{rec.mean() / ref_test.mean() - 1:+.2%} ({np.std(rec / ref_test - 1):.2%})"
                     f" | {ttail.mean():.4f} ± {ttail.std():.4f} |")
    return lines


def frontier(results: list[dict]) -> list[str]:
    """Every setting, seed-averaged: recall change against the uniform model and tail recall,
    on validation and on test."""
    ref = {r["seed"]: r["rows"]["0|degree|0"] for r in results}
    lines = ["| alpha | lever | setting | valid recall vs uniform | valid tail_recall@20 | "
             "test recall vs uniform | test tail_recall@20 |", "|---|---|---|---|---|---|---|"]
    for key in results[0]["rows"]:
        cells = []
        for split in ("valid", "test"):
            cost = np.mean([r["rows"][key][split]["recall@20"] / ref[r["seed"]][split]["recall@20"]
                            for r in results]) - 1
            tail = np.mean([r["rows"][key][split]["tail_recall@20"] for r in results])
            cells += [f"{cost:+.1%}", f"{tail:.4f}"]
        alpha, lever, setting = key.split("|")
        lines.append(f"| {alpha} | {lever} | {setting} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--tolerance", type=float, default=0.03)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tail_levers")
    p.add_argument("--neg-candidates", type=int, default=1,
                   help="hard negatives per triple (1: the recorded table; graphrec's default 8)")
    p.add_argument("--reg", type=float, default=1e-4,
                   help="L2 weight (1e-4: the recorded table; graphrec's default 1e-3)")
    p.add_argument("--batch-size", type=int, default=8192,
                   help="8192: the recorded table; 0: graphrec's rule (about 25 steps per epoch)")
    p.add_argument("--lr", type=float, default=0.02,
                   help="0.02: the recorded table; 0: graphrec's rule (from the batch size)")
    p.add_argument("--tables-only", action="store_true",
                   help="no training or scoring: rebuild table.md from OUT/levers.json")
    args = p.parse_args()
    if not 0 <= args.tolerance < 1:
        p.error(f"--tolerance {args.tolerance}: expected a number in [0, 1)")
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: expected at least 1")
    if args.batch_size < 0 or args.lr < 0:
        p.error(f"--batch-size {args.batch_size} / --lr {args.lr}: expected at least 0 (0: "
                "graphrec's rule)")
    if args.neg_candidates < 1 or args.reg < 0:
        p.error(f"--neg-candidates {args.neg_candidates} / --reg {args.reg}: expected at least "
                "1 and at least 0")
    if args.tables_only:
        source = args.out / "levers.json"
        if not source.is_file():
            p.error(f"--tables-only: {source} not found (run without --tables-only first)")
        write_tables(json.loads(source.read_text()), args.out, args.tolerance)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="graphrec-levers-"))
    (work / "levers").mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    graphs = {s: build("movielens", s, work, Path()) for s in args.seeds}
    # Models of other training settings than the recorded table's are kept apart.
    settings = ("" if (args.neg_candidates, args.reg) == (1, 1e-4)
                else f"-k{args.neg_candidates}-r{args.reg:g}")
    if (args.batch_size, args.lr) != (8192, 0.02):
        settings += f"-b{args.batch_size}-lr{args.lr:g}"
    models = {s: {str(a): str(work / "levers" / f"emb-a{a:g}-s{s}{settings}.pt")
                  for a in (0.0, 0.5)} for s in args.seeds}
    jobs = [{"graph": str(graphs[s]), "alpha": a, "seed": s, "threads": threads,
             "out": models[s][str(a)], "neg_candidates": args.neg_candidates, "reg": args.reg,
             "batch_size": args.batch_size, "lr": args.lr}
            for s in args.seeds for a in (0.0, 0.5)]
    with ProcessPoolExecutor(args.jobs) as pool:
        for line in pool.map(train, jobs):
            print(line, flush=True)
        results = list(pool.map(score_levers, [
            {"graph": str(graphs[s]), "seed": s, "threads": threads, "models": models[s]}
            for s in args.seeds]))
    (args.out / "levers.json").write_text(json.dumps(results) + "\n")
    write_tables(results, args.out, args.tolerance)


def write_tables(results: list[dict], out: Path, tolerance: float) -> None:
    seeds = ", ".join(str(r["seed"]) for r in results)
    head = f"Seeds {seeds}; tolerance {tolerance:.0%} of the uniform model's recall."
    text = "\n".join([head, "",
                      "## Chosen on validation, per seed", "", *choose(results, tolerance), "",
                      "## One setting for all seeds, chosen on seed-averaged validation", "",
                      *choose_global(results, tolerance), "",
                      "## Every setting (mean over seeds)", "", *frontier(results), ""])
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
