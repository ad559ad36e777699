"""Cold start on test beds built from the bundled MovieLens: items nobody interacted with
during training, with different item texts and with sparse behaviour.

Protocol (DESIGN.md, ``build-graph --cold-items 0.2``): 20% of the items are cold; their
interactions go to validation or test, whole items at a time (a third of the cold items are
validation items, the rest test items), none to training. Warm items are split per user
70/10/20. Reported on the test split, full ranking, seen items masked:

- cold_recall@20 / cold_ndcg@20: each user with a cold test item ranks the cold items only;
- warm_recall@20: ranking among warm items only, against warm test items;
- recall@20 / ndcg@20 ("hybrid"): all items compete; cold share@20 is the share of cold items
  in those top-20 lists, cold share of test the share of test interactions on cold items.

Test beds (``--text`` x ``--behaviour``): item text = title + genres + tags (the bundled
text), title + genres, title only, tags only (items without tags have empty text); behaviour
full, or sparse (each user keeps a seeded random 5 to 10 of their ratings, as in many shops'
logs). Every bed is rebuilt for each seed (the split, the cold items and the subsample follow
the seed).

Designs, all read off one model trained with ``graphrec train``'s defaults for the graph
(``cold_start bpr`` so that the text head is trained too; it never changes the warm model):

- ridge (the default), two-sided (``--cold-start two-sided``: ridge blended with the users'
  side, the weight chosen by the trainer on validation), bpr (the text head), layer0 (the text
  projection): cold items placed by a text map, scored by the trained user embeddings;
  "two-sided, norms on validation" scales the text-placed items' norms by the factor with the
  best validation all-item ndcg@20;
- blend: the ridge placement's score and the text-kNN cosine (moved to the placement's mean
  and spread), mixed with a weight chosen on the validation cold items (cold-only ndcg@20);
- ID dropout P, ridge / layer0: a second model per P (``--id-dropouts``), text+id items
  trained with item-ID dropout (each step a share P of the items is propagated from its
  text alone, ``graphrec train --id-dropout P``), its cold items placed by the ridge map or
  by the text projection it trained to stand alone;
- text-kNN: cosine between an item's text and the mean text of the user's training items;
- random; and the same data with the cold items' interactions split like the rest (all
  items, the warm reference: identical warm test set), for full-behaviour beds.

Every design's validation cold metrics (valid_cold_*) are kept next to its test ones, to
choose among the designs without reading test.

    python experiments/cold_start.py --seeds 0 1 2 --id-dropouts 0.1 0.3
    python experiments/cold_start.py --seeds 0 1 2 --refresh   # the default model's rows anew
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from graphrec.data.io import MOVIELENS_FIELDS, movielens_item_fields

KEYS = ("cold_recall@20", "cold_ndcg@20", "warm_recall@20", "recall@20", "ndcg@20",
        "cold_share@20", "valid_cold_ndcg@20", "valid_ndcg@20", "valid_warm_recall@20")
TEXTS = {"title+genres+tags": ("title", "genres", "tags"), "title+genres": ("title", "genres"),
         "title": ("title",), "tags": ("tags",)}
BEHAVIOURS = ("full", "sparse")
SPARSE_RANGE = (5, 10)
BLEND_WEIGHTS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COLD_SCALES = (1.0, 1.25, 1.5, 2.0)
MOVIELENS = Path(__file__).resolve().parents[1] / "datasets" / "ml-latest-small"


def bed_name(text: str, behaviour: str) -> str:
    return f"{text}, {behaviour}"


def write_sources(text: str, behaviour: str, seed: int, folder: Path) -> tuple[Path, Path]:
    """(ratings.csv, items.csv) of one bed: the bundled ratings (subsampled per user for
    sparse behaviour) and an item file whose columns are the bed's text fields, written as
    the bundled MovieLens text writes them ("Genres: a, b", "Tags: x, y")."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(MOVIELENS / "ratings.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    if behaviour == "sparse":
        rng = np.random.default_rng([seed, 5])
        by_user: dict[str, list[int]] = {}
        for k, r in enumerate(rows):
            by_user.setdefault(r[0], []).append(k)
        keep = []
        for ks in by_user.values():
            n = int(rng.integers(SPARSE_RANGE[0], SPARSE_RANGE[1] + 1))
            keep += rng.choice(ks, size=min(n, len(ks)), replace=False).tolist()
        rows = [rows[k] for k in sorted(keep)]
    ratings = folder / "ratings.csv"
    with open(ratings, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    ids, fields = movielens_item_fields(MOVIELENS)
    items = folder / "items.csv"
    with open(items, "w", newline="") as g:
        csv.writer(g).writerows([["movieId", *MOVIELENS_FIELDS],
                                 *zip(ids.tolist(), *fields.values(), strict=True)])
    return ratings, items


def graphs(text: str, behaviour: str, seed: int, work: Path) -> dict[str, Path]:
    """The cold split of one bed and its all-items twin (the same split with the cold items'
    interactions divided 70/10/20 like the rest)."""
    from graphrec.artifacts import load_graph, save_graph
    from graphrec.build import BuildConfig, build_graph
    from graphrec.data import TRAIN

    stem = f"{text}-{behaviour}-{seed}".replace("+", "_")
    paths = {"cold": work / f"cold-{stem}", "all": work / f"all-{stem}"}
    if all(p.exists() for p in paths.values()):
        return paths
    ratings, items = write_sources(text, behaviour, seed, work / f"src-{stem}")
    cold = build_graph(BuildConfig(
        interactions=str(ratings), items=str(items), text_cols=TEXTS[text], item_id_col="movieId",
        user_col="userId", item_col="movieId", rating_col="rating", time_col="timestamp",
        test_ratio=0.2, valid_ratio=0.1, seed=seed, cold_items=0.2,
        cache_dir=str(work / "text-cache")), paths["cold"])
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
    user's mean text. Also the text lever of tail_levers.py."""
    import torch

    from graphrec.data import TRAIN

    text = torch.nn.functional.normalize(torch.as_tensor(graph.text_emb).float(), dim=1)
    u, i = graph.fold_pairs(TRAIN)
    profile = torch.zeros(graph.num_users, text.shape[1]).index_add_(
        0, torch.as_tensor(u), text[torch.as_tensor(i)])
    return torch.nn.functional.normalize(profile, dim=1), text


def score_table(graph, score_fn, cold_split=None, split: str = "test") -> dict:
    """Cold-only, warm-only and hybrid metrics of ``score_fn`` on ``graph``'s ``split``.

    ``cold_split``: the cold items' mask of the cold split, to tell warm from cold on the
    all-items twin (whose own mask is empty); default ``graph.cold_items``."""
    import torch

    from graphrec.data import Csr
    from graphrec.eval import EvalContext, topk_rows
    from graphrec.serve import mask_known

    ctx = EvalContext.from_graph(graph, (20,), "cpu")
    fold = ctx.fold(split)
    seen, target = ctx.folds[fold]
    out = {}
    if ctx.cold_items is not None:
        m = ctx.evaluate(fold, score_fn=score_fn)
        out |= {k: m[k] for k in ("cold_recall@20", "cold_ndcg@20", "recall@20", "ndcg@20")}
        cold_t = torch.as_tensor(ctx.cold_items)
        shares = []
        for start in range(0, graph.num_users, 1024):
            users = torch.arange(start, min(start + 1024, graph.num_users))
            s = score_fn(users).clone()
            mask_known(s, users, seen)
            _, top = topk_rows(s, 20)
            shares.append(cold_t[top].float().mean(1))
        out["cold_share@20"] = float(torch.cat(shares).mean())
        _, i = graph.fold_pairs(fold)
        out["cold_share_of_test"] = float(ctx.cold_items[i].mean())
    # Warm only: cold columns never ranked, cold targets dropped.
    cold = graph.cold_items if cold_split is None else cold_split
    u, i = graph.fold_pairs(fold)
    keep = ~cold[i]
    warm_only = replace(ctx, cold_items=None, folds={
        fold: (seen, Csr.from_pairs(u[keep], i[keep], graph.num_users))})
    cold_cols = torch.as_tensor(np.flatnonzero(cold))

    def warm_fn(users):
        s = score_fn(users).clone()
        s[:, cold_cols] = -np.inf
        return s

    m = warm_only.evaluate(fold, score_fn=warm_fn)
    out["warm_recall@20"] = m["recall@20"]
    if ctx.cold_items is None:
        m = ctx.evaluate(fold, score_fn=score_fn)
        out["recall@20"], out["ndcg@20"] = m["recall@20"], m["ndcg@20"]
    return out


def blend_scorer(eu, placed, cold, profile, text, weight: float):
    """score_fn of the blend: warm columns ``eu @ placed.T``; cold columns
    (1 - weight) * placement + weight * the text cosine moved to the placement's mean and
    spread over every user and cold item (so that the blend keeps the placement's level in
    all-item lists, and weight 1 is text-kNN's order among cold items)."""
    import torch

    cols = torch.as_tensor(np.flatnonzero(cold))
    place_c = eu @ placed[cols].T
    text_c = profile @ text[cols].T
    text_c = place_c.mean() + place_c.std() * (text_c - text_c.mean()) / text_c.std().clamp(
        min=1e-12)
    mixed = (1 - weight) * place_c + weight * text_c

    def score(users):
        s = eu[users] @ placed.T
        s[:, cols] = mixed[users]
        return s
    return score


def valid_keys(graph, score_fn) -> dict:
    """The validation metrics a row keeps: cold-only (:func:`validation_scores`), and
    hybrid ndcg@20 and warm recall@20 with every item a candidate (:func:`valid_hybrid`)."""
    return {**{f"valid_{k}": v for k, v in validation_scores(graph, score_fn).items()
               if k.startswith("cold_")},
            **{f"valid_{k}": v for k, v in valid_hybrid(graph, score_fn).items()
               if k in ("ndcg@20", "warm_recall@20")}}


def valid_hybrid(graph, score_fn) -> dict:
    """score_table on the validation split with every item a candidate, the test split's
    cold items included: leaving them out, as :func:`validation_scores` does, leaves only
    cold items that someone in validation took, and all-item lists then reward any lift
    of cold items (a norm scale of 2 chosen there lost 5% of test recall@20)."""
    return score_table(graph, score_fn, split="valid")


def validation_scores(graph, score_fn) -> dict:
    """score_table of ``score_fn`` on the validation split's cold items, ranked among the
    cold items; test is not read. The items whose interactions all fall in test are left
    out of the validation lists, as they would be at that time."""
    import torch

    from graphrec.data import VALID

    _, i = graph.fold_pairs(VALID)
    later = graph.cold_items.copy()
    later[i] = False
    later_cols = torch.as_tensor(np.flatnonzero(later))

    def on_valid(users):
        s = score_fn(users).clone()
        s[:, later_cols] = -np.inf
        return s
    return score_table(graph, on_valid, split="valid")


def choose_blend(graph, eu, placed, profile, text) -> tuple[float, list[dict]]:
    """(weight, grid): the weight with the best validation cold_ndcg@20
    (:func:`validation_scores`)."""
    grid, best_w, best = [], 0.0, -1.0
    for w in BLEND_WEIGHTS:
        m = validation_scores(graph, blend_scorer(eu, placed, graph.cold_items, profile, text,
                                                  w))
        grid.append({"weight": w, **m})
        if m["cold_ndcg@20"] > best:
            best_w, best = w, m["cold_ndcg@20"]
    return best_w, grid


def designs(graph, trainer, prefix: str, names=("ridge", "two-sided", "bpr", "layer0")) -> dict:
    """Test and validation rows of each text map on ``trainer``'s model, and the ridge
    placement (for the blend)."""
    import torch

    from graphrec.model import place_cold_items

    eu_dev, ei = trainer.propagate()  # before cold placement
    warm = trainer.warm.to(ei.device)
    eu = eu_dev.cpu()
    rows, ridge = {}, None
    with torch.inference_mode():
        for design in names:
            w = trainer.text_map(design, eu_dev, ei)
            placed = place_cold_items(ei, warm, trainer.text_emb, w).cpu()

            def score(users, placed=placed):
                return eu[users] @ placed.T
            rows[f"{prefix}{design}"] = {**score_table(graph, score), **valid_keys(graph, score)}
            if design == "two-sided":
                rows[f"{prefix}{design}"]["weight"] = trainer.cold_choice.weight
                # Text-placed items' norms scaled by the factor with the best validation
                # hybrid ndcg@20: how far a calibration read off validation moves cold
                # items into all-item lists.
                grid = []
                for factor in COLD_SCALES:
                    scaled = placed.clone()
                    scaled[~warm.cpu()] *= factor
                    grid.append((valid_hybrid(
                        graph, lambda users, p=scaled: eu[users] @ p.T)["ndcg@20"], factor))
                factor = max(grid)[1]
                scaled = placed.clone()
                scaled[~warm.cpu()] *= factor
                rows[f"{prefix}{design}, norms on validation"] = {
                    **score_table(graph, lambda users, p=scaled: eu[users] @ p.T),
                    **valid_keys(graph, lambda users, p=scaled: eu[users] @ p.T),
                    "scale": factor, "scale_grid": [{"scale": f, "valid_ndcg@20": v}
                                                    for v, f in grid]}
            if design == "ridge":
                ridge = placed
    return rows, eu, ridge


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    from graphrec.artifacts import load_graph
    from graphrec.pipeline import train_model
    from graphrec.train import TrainConfig, Trainer

    graph = load_graph(Path(job["graph"]))
    kind, seed = job["kind"], job["seed"]
    t0 = time.perf_counter()
    rows, extra = {}, {}
    cfg = TrainConfig(seed=seed, cold_start="bpr")
    if kind == "text":
        gen = torch.Generator().manual_seed(seed)
        scores = torch.rand(graph.num_users, graph.num_items, generator=gen)
        rows["random"] = score_table(graph, lambda users: scores[users])
        profile, text = text_profiles(graph)
        scores = profile @ text.T
        rows["text-kNN"] = score_table(graph, lambda users: scores[users])
        rows["text-kNN"] |= valid_keys(graph, lambda users: scores[users])
        trainer = Trainer(graph, cfg)
        train_model(graph, trainer=trainer)
        found, eu, ridge = designs(graph, trainer, "graphrec, ")
        rows |= found
        with torch.inference_mode():
            weight, grid = choose_blend(graph, eu, ridge, profile, text)
            rows["graphrec, blend"] = score_table(
                graph, blend_scorer(eu, ridge, graph.cold_items, profile, text, weight))
        extra = {"blend": {"weight": weight, "grid": grid}}
        for p in job.get("id_dropouts", ()):
            # The text path trained to stand alone: text+id items, each step a share p of
            # the items propagated from their text only.
            trainer = Trainer(graph, TrainConfig(seed=seed, item_init="text+id", id_dropout=p))
            train_model(graph, trainer=trainer)
            rows |= designs(graph, trainer, f"graphrec, ID dropout {p:g}, ",
                            ("ridge", "layer0"))[0]
    else:  # all items: the warm reference
        result = train_model(graph, cfg)
        ue, ie = result.user_emb, result.item_emb
        cold_split = load_graph(Path(job["cold_graph"])).cold_items
        rows["graphrec trained on all items"] = {
            k: v for k, v in score_table(graph, lambda users: ue[users] @ ie.T,
                                         cold_split).items() if k == "warm_recall@20"}
    for r in rows.values():
        r["seconds"] = round(time.perf_counter() - t0, 1)
    if job.get("merge"):  # --refresh: the default model's rows anew, the others kept
        old = json.loads(Path(job["out"]).read_text())
        rows = {**old["rows"], **rows}
    doc = {"bed": job["bed"], "seed": seed, "rows": rows, **extra}
    Path(job["out"]).write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def cell(values: list[float]) -> str:
    v = np.array(values)
    if v.size == 0:
        return "–"
    return f"{v.mean():.4f} ± {v.std():.4f}" if v.size > 1 else f"{v[0]:.4f}"


def tables(docs: list[dict], beds: list[str]) -> str:
    """One table per bed (every metric), then cold_recall@20 of every design on every bed
    with its ratio to text-kNN and to random."""
    out = []
    summary: dict[str, dict[str, list[float]]] = {}
    for bed in beds:
        mine = [d for d in docs if d["bed"] == bed]
        if not mine:
            continue
        per_row: dict[str, list[dict]] = {}
        for d in mine:
            for name, r in d["rows"].items():
                per_row.setdefault(name, []).append(r)
        seeds = sorted({d["seed"] for d in mine})
        share = [r["cold_share_of_test"] for r in per_row.get("random", [])]
        weights = [d["blend"]["weight"] for d in mine if "blend" in d]
        sided = [r.get("weight") for r in per_row.get("graphrec, two-sided", [])]
        scales = [r.get("scale") for r in per_row.get("graphrec, two-sided, norms on validation",
                                                      [])]
        out += [f"\n{bed}; seeds {seeds}; cold share of test interactions {cell(share)}; chosen "
                f"on validation per seed: blend weight {weights}, two-sided weight {sided}, "
                f"norm scale {scales}\n",
                "| design | " + " | ".join(KEYS) + " | seeds |",
                "|---|" + "---|" * (len(KEYS) + 1)]
        for name, rs in per_row.items():
            out.append(f"| {name} | " + " | ".join(cell([r[k] for r in rs if k in r])
                                                   for k in KEYS) + f" | {len(rs)} |")
            summary.setdefault(name, {})[bed] = [r["cold_recall@20"] for r in rs
                                                 if "cold_recall@20" in r]
    shown = [b for b in beds if any(b in v for v in summary.values())]
    out += ["\ncold_recall@20 (x text-kNN, x random, from the seed means)\n",
            "| design | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    for name, per_bed in summary.items():
        if not any(per_bed.values()):
            continue
        cells = []
        for bed in shown:
            v = per_bed.get(bed, [])
            if not v:
                cells.append("–")
                continue
            knn = np.mean(summary["text-kNN"][bed])
            rnd = np.mean(summary["random"][bed])
            cells.append(f"{cell(v)} ({np.mean(v) / knn:.2f}×, {np.mean(v) / rnd:.1f}×)")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--text", nargs="+", choices=list(TEXTS), default=list(TEXTS))
    p.add_argument("--behaviour", nargs="+", choices=BEHAVIOURS, default=list(BEHAVIOURS))
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--id-dropouts", type=float, nargs="*", default=[0.5],
                   help="also train text+id models with these item-ID dropout shares")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cold_start")
    p.add_argument("--refresh", action="store_true",
                   help="rerun the default model's designs of finished runs, keeping their "
                        "other rows (the ID dropout models)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="graphrec-cold-"))
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    threads = (int(os.environ.get("OMP_NUM_THREADS", 0))
               or max(1, (os.cpu_count() or 1) // args.jobs))
    jobs, beds = [], []
    for behaviour in args.behaviour:
        for text in args.text:
            bed = bed_name(text, behaviour)
            beds.append(bed)
            for seed in args.seeds:
                kinds = ("text", "all items") if behaviour == "full" else ("text",)
                for kind in kinds:
                    name = args.out / "runs" / \
                        f"{text}-{behaviour}-{kind.replace(' ', '-')}-s{seed}.json"
                    refresh = args.refresh and kind == "text"
                    if name.exists() and not refresh:
                        continue
                    paths = graphs(text, behaviour, seed, work)
                    jobs.append({"kind": kind, "bed": bed, "seed": seed,
                                 "graph": str(paths["cold" if kind == "text" else "all"]),
                                 "cold_graph": str(paths["cold"]), "threads": threads,
                                 "out": str(name), "merge": name.exists(),
                                 "id_dropouts": () if name.exists() else args.id_dropouts})
    jobs.sort(key=lambda j: (j["kind"] != "text", j["seed"]))  # the designs first
    print(f"{len(jobs)} runs to do", flush=True)
    # Fresh interpreters for the runs: a forked copy of this process, whose text encoder and
    # thread pools have run, can wait forever on a lock a thread held at the fork.
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for doc in pool.map(run_one, jobs):
            for name, r in doc["rows"].items():
                print(f"{doc['bed']} seed {doc['seed']} {name}: " +
                      " ".join(f"{k}={r[k]:.4f}" for k in KEYS if k in r), flush=True)
    docs = [json.loads(f.read_text()) for f in sorted((args.out / "runs").glob("*.json"))]
    docs = [d for d in docs if d.get("seed") in args.seeds and d.get("bed") in beds]
    text = tables(docs, beds)
    print(text)
    (args.out / "table.md").write_text(
        "MovieLens cold-start test beds, 20% cold items, test split; mean ± std over seeds\n"
        + text + "\n")


if __name__ == "__main__":
    main()
