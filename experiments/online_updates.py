"""Online updates: how far fold-in and fine-tune keep up with a full retrain as data arrives.

MovieLens streams (the bundled ml-latest-small): "time" puts every rating in time order;
"user" puts each user's ratings in their own time order (every user's first 70% is the past:
known users keep arriving, which the "time" stream, where a 5% block holds the ratings of a
dozen users, hardly shows). Train on the first 70%, then feed the rest in 6 blocks of 5%;
after feeding block t (t = 1..5), score block t + 1 with
  (a) no update: the model trained on the first 70% (users it does not know get the most
      popular items of its training data; items it does not know are never recommended),
  (b) fold-in: `graphrec update` of each block into the previous fold-in model,
  (c) fold-in + fine-tune: `graphrec update --fine-tune F` of each block, chained the same way,
  (d) retrain: build-graph + train from scratch on everything fed so far.
The number of training epochs is chosen once, on a validation split (10% per user) of the
first 70%, and every retrain uses it; the fine-tune's epochs and replay ratio are chosen on
the same stream inside the first 70% (train on 60%, feed 60-65%, score 65-70%), with the
learning rate (a multiple of the model's), and so is whether fold-in moves known nodes'
layer 0 with their new neighbours (self_shift); the scored
blocks are never used for a choice.
Scored users: those with an interaction in block t + 1 and at least one before it; targets:
their block t + 1 items that exist by then (a movie first seen in block t + 1 cannot be
recommended by any method), their earlier items masked. recall@20 = hits / targets.

Gowalla new users (--part gowalla, needs ../shared/datasets/gowalla): train without a seeded
20% of the users (all of their training interactions removed), fold those users in from their
training items with `graphrec update`, and score them on their test items against the model
trained on everyone (same configuration and epochs). Then fold a batch of 10,000 new
interactions (sampled test pairs of known users) into the full model and time it.

    python experiments/online_updates.py --part movielens [--streams time user]
    python experiments/online_updates.py --part gowalla [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphrec.artifacts import load_graph, save_model  # noqa: E402
from graphrec.artifacts.model_dir import load_arrays  # noqa: E402
from graphrec.build import build_graph  # noqa: E402
from graphrec.data import io  # noqa: E402
from graphrec.data.config import BUNDLED_DATASET, BuildConfig  # noqa: E402
from graphrec.data.io import RawInteractions  # noqa: E402
from graphrec.pipeline import train_model, update_model  # noqa: E402
from graphrec.train import TrainConfig, Trainer  # noqa: E402

GOWALLA = ROOT.parent / "shared" / "datasets" / "gowalla"
K = 20


def write_interactions(path: Path, users, items, times) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.write("user,item,timestamp\n")
        for u, i, t in zip(users, items, times, strict=True):
            f.write(f"{u},{i},{t:.0f}\n")
    return path


def write_items(path: Path, text: io.ItemText, ids) -> Path:
    keep = set(ids)
    with open(path, "w", encoding="utf-8") as f:
        f.write("item_id\ttitle\ttext\n")
        for rid, title, body in zip(text.ids.tolist(), text.titles, text.texts, strict=True):
            if rid in keep:
                f.write(f"{rid}\t{title}\t{body}\n")
    return path


def top_ids(model_dir: Path, users: list[str], seen: dict[str, set], popular: list[str]
            ) -> dict[str, list[str]]:
    """Top-K raw item ids per raw user id from a model directory, seen items masked; users
    the model does not know get ``popular`` (unseen ones first)."""
    a = load_arrays(model_dir, mmap=False)
    uidx = {u: k for k, u in enumerate(a["user_ids"].tolist())}
    iidx = {i: k for k, i in enumerate(a["item_ids"].tolist())}
    item_ids = a["item_ids"]
    known = [u for u in users if u in uidx]
    out = {}
    emb_i = torch.as_tensor(a["item_emb"])
    for start in range(0, len(known), 1024):
        chunk = known[start:start + 1024]
        scores = torch.as_tensor(a["user_emb"][[uidx[u] for u in chunk]]) @ emb_i.T
        for r, u in enumerate(chunk):
            cols = [iidx[i] for i in seen[u] if i in iidx]
            scores[r, cols] = float("-inf")
        top = torch.topk(scores, K, dim=1).indices.numpy()
        for r, u in enumerate(chunk):
            out[u] = item_ids[top[r]].tolist()
    for u in users:
        if u not in out:
            out[u] = [i for i in popular if i not in seen[u]][:K]
    return out


def recall(tops: dict[str, list[str]], targets: dict[str, set], users: list[str]) -> float:
    return float(np.mean([len(set(tops[u]) & targets[u]) / len(targets[u]) for u in users]))


def train_cfg(epochs: int, eval_every: int = 0, device: str = "cpu") -> TrainConfig:
    return TrainConfig(epochs=epochs, eval_every=eval_every, lr_schedule="constant",
                       device=device)


def positions(raw: io.RawInteractions, stream: str) -> np.ndarray:
    """[n] where each interaction falls in its stream, in [0, 1): its rank in time over the
    whole log ("time"), or within its user's own history ("user")."""
    n = len(raw.users)
    order = np.argsort(raw.timestamps, kind="stable")
    pos = np.empty(n)
    if stream == "time":
        pos[order] = np.arange(n) / n
        return pos
    _, user = np.unique(raw.users, return_inverse=True)
    by_user = order[np.argsort(user[order], kind="stable")]  # per user, in time order
    counts = np.bincount(user)
    starts = np.cumsum(counts) - counts
    rank = np.arange(n) - np.repeat(starts, counts)
    pos[by_user] = rank / np.repeat(counts, counts)
    return pos


def stream_run(args, raw, text, stream: str, work: Path, cache: Path) -> dict:
    """One stream: epochs and fine-tune settings chosen on the first 70%, then 5 blocks."""
    work.mkdir(parents=True)
    pos = positions(raw, stream)
    users, items, times = raw.users, raw.items, raw.timestamps
    items_file = write_items(work / "items.tsv", text, set(items.tolist()))

    def build(mask, folder: Path, valid: float) -> Path:
        csv = write_interactions(folder.with_suffix(".csv"), users[mask], items[mask],
                                 times[mask])
        build_graph(BuildConfig(interactions=str(csv), items=str(items_file), test_ratio=0.0,
                                valid_ratio=valid, seed=0, cache_dir=str(cache),
                                text_cols=("text",)), folder)
        return folder

    def fit(graph_dir: Path, model_dir: Path) -> float:
        t = time.perf_counter()
        graph = load_graph(graph_dir)
        save_model(Trainer(graph, train_cfg(epochs)).fit(), graph, model_dir)
        return time.perf_counter() - t

    def feed(graph_dir, model_dir, lo, hi, tag, fine_tune=0, replay=1.0, lr_scale=1.0,
             shift=False):
        """update with the interactions at positions [lo, hi); returns (seconds, fold-in s)."""
        mask = (pos >= lo) & (pos < hi)
        block = write_interactions(work / f"{tag}.csv", users[mask], items[mask], times[mask])
        fresh = set(items[mask].tolist()) - set(items[pos < lo].tolist())
        block_items = write_items(work / f"{tag}-items.tsv", text, fresh)
        t = time.perf_counter()
        done = update_model(graph_dir, model_dir, block, block_items, fine_tune=fine_tune,
                            old_ratio=replay, cache_dir=cache, lr_scale=lr_scale,
                            self_shift=shift)
        return time.perf_counter() - t, done.folded.seconds

    def score(models: dict, lo: float, hi: float, popular: list[str], base_users: set) -> dict:
        seen: dict[str, set] = {}
        for u, i in zip(users[pos < lo].tolist(), items[pos < lo].tolist(), strict=True):
            seen.setdefault(u, set()).add(i)
        catalog = set(items[pos < lo].tolist())
        targets: dict[str, set] = {}
        mask = (pos >= lo) & (pos < hi)
        for u, i in zip(users[mask].tolist(), items[mask].tolist(), strict=True):
            if u in seen and i in catalog and i not in seen[u]:
                targets.setdefault(u, set()).add(i)
        scored = sorted(targets)
        known = [u for u in scored if u in base_users]
        row = {"users": len(scored), "base_users": len(known)}
        for name, m in models.items():
            tops = top_ids(m, scored, seen, popular)
            row[name] = recall(tops, targets, scored)
            row[f"{name} (base users)"] = recall(tops, targets, known) if known else None
        return row

    # 1. Epochs: early stopping on a validation split (10% per user) of the first 70%.
    t0 = time.perf_counter()
    chosen = train_model(load_graph(build(pos < 0.7, work / "select-graph", 0.1)),
                         train_cfg(args.max_epochs, eval_every=5))
    epochs = chosen.best_epoch or args.max_epochs
    print(f"[{stream}] epochs chosen on validation: {epochs} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    # 2. Fine-tune settings: the same stream inside the first 70% (train on 60%, feed
    #    60-65%, score 65-70%).
    sel_graph = build(pos < 0.6, work / "sel-base-graph", 0.0)
    fit(sel_graph, work / "sel-base-model")
    sel = load_graph(sel_graph)
    popular = sel.item_ids[np.argsort(-sel.train_item_degree(), kind="stable")].tolist()
    trials = {}

    def trial(ft, replay, lr, shift):
        tag = f"sel-{ft}-{replay:g}-{lr:g}-{int(shift)}"
        shutil.copytree(sel_graph, work / f"{tag}-graph", symlinks=True)
        shutil.copytree(work / "sel-base-model", work / f"{tag}-model", symlinks=True)
        feed(work / f"{tag}-graph", work / f"{tag}-model", 0.6, 0.65, tag, ft, replay, lr,
             shift)
        trials[(ft, replay, lr, shift)] = score({"m": work / f"{tag}-model"}, 0.65, 0.7,
                                                popular, set())["m"]

    for shift in (False, True):  # the fold-in itself: known nodes' layer 0 kept or shifted
        trial(0, 0.0, 1.0, shift)
    shift = trials[(0, 0.0, 1.0, True)] > trials[(0, 0.0, 1.0, False)]
    for ft in args.fine_tune_grid:
        for replay in args.replay_grid:
            for lr in args.lr_grid:
                trial(ft, replay, lr, shift)
    best = max((k for k in trials if k[0] > 0), key=lambda k: trials[k])
    print(f"[{stream}] validation recall@20 by (fine-tune epochs, replay, lr scale, shift): "
          + ", ".join(f"{k}: {v:.4f}" for k, v in trials.items()) + f"; chosen {best}",
          flush=True)

    # 3. The stream.
    base_graph = build(pos < 0.7, work / "base-graph", 0.0)
    fit(base_graph, work / "base-model")
    base = load_graph(base_graph)
    popular = base.item_ids[np.argsort(-base.train_item_degree(), kind="stable")].tolist()
    base_users = set(base.user_ids.tolist())
    chains = {}
    for name in ("fold-in", "fine-tune"):
        shutil.copytree(base_graph, work / f"{name}-graph", symlinks=True)
        shutil.copytree(work / "base-model", work / f"{name}-model", symlinks=True)
        chains[name] = (work / f"{name}-graph", work / f"{name}-model")
    rows = []
    for t in range(1, 6):
        lo, hi = 0.7 + 0.05 * (t - 1), 0.7 + 0.05 * t  # block t, fed
        timing = {name: feed(g, m, lo, hi, f"{name}-block{t}",
                             *(best if name == "fine-tune" else (0, 0.0, 1.0, shift)))
                  for name, (g, m) in chains.items()}
        rg = build(pos < hi, work / f"retrain{t}-graph", 0.0)
        timing["retrain"] = (fit(rg, work / f"retrain{t}-model"), None)
        models = {"no update": work / "base-model", "fold-in": chains["fold-in"][1],
                  "fine-tune": chains["fine-tune"][1], "retrain": work / f"retrain{t}-model"}
        row = {"block": t + 1, **score(models, hi, hi + 0.05, popular, base_users)}
        row["seconds"] = {k: round(v[0], 3) for k, v in timing.items()}
        row["fold_in_compute_s"] = round(timing["fold-in"][1], 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    names = ("no update", "fold-in", "fine-tune", "retrain")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in names}
    secs = {k: float(np.mean([r["seconds"][k] for r in rows]))
            for k in ("fold-in", "fine-tune", "retrain")}
    summary = {"stream": stream, "epochs": epochs, "self_shift": shift,
               "fine_tune": list(best),
               "selection": {f"{k[0]} epochs, replay {k[1]:g}, lr x{k[2]:g}, shift {k[3]}": v
                             for k, v in trials.items()},
               "mean_recall@20": mean, "mean_seconds": secs,
               "fold_in_compute_s": float(np.mean([r["fold_in_compute_s"] for r in rows])),
               "fold-in / retrain recall": mean["fold-in"] / mean["retrain"],
               "fine-tune / retrain recall": mean["fine-tune"] / mean["retrain"],
               "fold-in / retrain time": secs["fold-in"] / secs["retrain"],
               "fine-tune / retrain time": secs["fine-tune"] / secs["retrain"], "rows": rows}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1), flush=True)
    return summary


def movielens(args) -> dict:
    from graphrec.text import DEFAULT_TEXT_MODEL, embed_texts

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    cache = work.parent / "online-updates-text-cache"
    raw, text = io.read_movielens(BUNDLED_DATASET)
    # Every movie's text in the cache first: no update or build below pays for encoding.
    embed_texts(text.texts, model=DEFAULT_TEXT_MODEL, cache_dir=cache)
    return {stream: stream_run(args, raw, text, stream, work / stream, cache)
            for stream in args.streams}


def gowalla(args) -> dict:
    if not (GOWALLA / "train.txt").exists():
        print(f"skipped: no Gowalla split at {GOWALLA}")
        return {}
    work = Path(args.work)
    if not args.reuse:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("*-updated-*"):
        shutil.rmtree(stale)
    full = io.read_lightgcn(GOWALLA / "train.txt", GOWALLA / "test.txt")
    train = full.fold == io.FOLD_TRAIN
    u_all = np.unique(full.users)
    rng = np.random.default_rng(0)
    held = set(rng.choice(u_all, size=len(u_all) // 5, replace=False).tolist())
    is_held = np.asarray([u in held for u in full.users.tolist()])

    def lightgcn_files(mask, name):
        folder = work / name
        folder.mkdir()
        for fold, fname in ((io.FOLD_TRAIN, "train.txt"), (io.FOLD_TEST, "test.txt")):
            rows = {}
            sel = mask & (full.fold == fold)
            for u, i in zip(full.users[sel].tolist(), full.items[sel].tolist(), strict=True):
                rows.setdefault(u, []).append(i)
            with open(folder / fname, "w") as f:
                for u, its in rows.items():
                    f.write(" ".join([u, *its]) + "\n")
        return folder

    cfg = TrainConfig(epochs=args.epochs, eval_every=0, device=args.device)
    out = {"epochs": args.epochs, "held_out_users": len(held)}
    models = {}
    for name, mask in (("everyone", np.ones(len(full.users), dtype=bool)),
                       ("without", ~is_held)):
        if args.reuse and (work / f"{name}-model" / "current").exists():
            models[name] = (work / f"{name}-graph", work / f"{name}-model")
            continue
        files = lightgcn_files(mask, f"{name}-files")
        gdir = work / f"{name}-graph"
        build_graph(BuildConfig(train=str(files / "train.txt"), test=str(files / "test.txt"),
                                no_text=True), gdir)
        graph = load_graph(gdir)
        t0 = time.perf_counter()
        result = Trainer(graph, cfg).fit()
        save_model(result, graph, work / f"{name}-model")
        out[f"train_seconds_{name}"] = round(time.perf_counter() - t0, 1)
        models[name] = (gdir, work / f"{name}-model")
        print(name, out[f"train_seconds_{name}"], flush=True)
    # Fold the held-out users in from their training items (into copies: reruns repeat).
    for name in ("without", "everyone"):
        for k, d in zip(("graph", "model"), models[name], strict=True):
            shutil.copytree(d, work / f"{name}-updated-{k}", symlinks=True)
    folded = (work / "without-updated-graph", work / "without-updated-model")
    sel = train & is_held
    t0 = time.perf_counter()
    done = update_model(*folded,
                        raw=RawInteractions(full.users[sel], full.items[sel]))
    out["fold_in_users"] = done.folded.new_users
    out["fold_in_seconds"] = round(done.folded.seconds, 3)
    out["update_seconds"] = round(time.perf_counter() - t0, 3)
    out["ms_per_user"] = round(1000 * done.folded.seconds / max(done.folded.new_users, 1), 3)
    seen: dict[str, set] = {}
    for u, i in zip(full.users[sel].tolist(), full.items[sel].tolist(), strict=True):
        seen.setdefault(u, set()).add(i)
    targets: dict[str, set] = {}
    tsel = (full.fold == io.FOLD_TEST) & is_held
    for u, i in zip(full.users[tsel].tolist(), full.items[tsel].tolist(), strict=True):
        targets.setdefault(u, set()).add(i)
    scored = sorted(u for u in targets if u in seen)
    for name, m in (("everyone", models["everyone"][1]), ("without", folded[1])):
        tops = top_ids(m, scored, seen, [])
        out[f"recall@20 {name}"] = recall(tops, targets, scored)
    out["folded / trained"] = out["recall@20 without"] / out["recall@20 everyone"]
    # Throughput: 10,000 new interactions (random pairs of known users and items that the
    # graph does not have) into a copy of the model trained on everyone.
    g = load_graph(models["everyone"][0])
    have = set((g.users * g.num_items + g.items).tolist())
    keys = []
    while len(keys) < 10_000:
        k = int(rng.integers(g.num_users)) * g.num_items + int(rng.integers(g.num_items))
        if k not in have and k not in keys:
            keys.append(k)
    keys = np.asarray(keys)
    pairs = (g.user_ids[keys // g.num_items], g.item_ids[keys % g.num_items])
    t0 = time.perf_counter()
    done = update_model(work / "everyone-updated-graph", work / "everyone-updated-model",
                        raw=RawInteractions(*pairs))
    out["10k_fold_in_seconds"] = round(done.folded.seconds, 3)
    out["10k_update_seconds"] = round(time.perf_counter() - t0, 3)
    out["10k_interactions_folded"] = done.folded.interactions
    out["10k_users_items_updated"] = [done.folded.users, done.folded.items]
    print(json.dumps(out, indent=1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["movielens", "gowalla"], default="movielens")
    p.add_argument("--work", default="/tmp/graphrec-online-updates")
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--streams", nargs="+", default=["time", "user"], choices=["time", "user"])
    p.add_argument("--fine-tune-grid", type=int, nargs="+", default=[1, 3, 5],
                   help="fine-tune epochs tried on validation")
    p.add_argument("--replay-grid", type=float, nargs="+", default=[1.0, 4.0],
                   help="old interactions per new one, tried on validation")
    p.add_argument("--lr-grid", type=float, nargs="+", default=[1.0, 0.1],
                   help="fine-tune learning rate (times the model's), tried on validation")
    p.add_argument("--epochs", type=int, default=100, help="Gowalla training epochs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reuse", action="store_true",
                   help="gowalla: keep the trained models of an earlier run in --work")
    p.add_argument("--json", help="also write the summary here")
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    summary = movielens(args) if args.part == "movielens" else gowalla(args)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
