"""Training time against graph size: Gowalla subsampled to 25/50/100% of its training
interactions, and a synthetic power-law graph of 10M interactions.

    python experiments/bench_scaling.py                      # graphrec's default batch rule
    python experiments/bench_scaling.py --synthetic 1250000 2500000 5000000 10000000
    python experiments/bench_scaling.py --batch-size 8192 --shape fixed   # the earlier table
    python experiments/bench_scaling.py --synthetic          # Gowalla only
    python experiments/bench_scaling.py --id-order degree    # ids renumbered by popularity
    python experiments/bench_scaling.py --precision bfloat16 # bfloat16 products
    python experiments/bench_scaling.py --neg-candidates 8   # graphrec train's default

Times the epoch's negative draws (done up front) and a few training steps of graphrec's
trainer per graph (after one warm-up step), and scales them to a full epoch; a linear trainer
keeps the seconds per million interactions per epoch flat across sizes. Tables recorded
before the draws were timed (2026-11-29, eighth session and earlier) leave them out: with
one negative per triple they are 3-8% of an epoch (experiments/RESULTS.md, run 8). Between
the steps it times the step's sparse products alone (2K products each way), splitting the
epoch into the products, whose cost per nonzero follows the memory's cost of a random row
gather, and the rest.

Synthetic graphs (--shape): "gowalla" keeps Gowalla's interactions per user (27.1) and per
item (19.8) at every size, with node ids in random order as in real data; "fixed" is 1M
users and 500k items at any size, ids in popularity order (the earlier tables).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# As the graphrec command line does (cli/__init__.py): 2 MB pages for large tensors, read by
# PyTorch at its first large allocation. THP_MEM_ALLOC_ENABLE=0 measures without.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from graphrec.artifacts import GraphData  # noqa: E402
from graphrec.data import TRAIN  # noqa: E402
from graphrec.model import spmm  # noqa: E402
from graphrec.train import TrainConfig, Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("GRAPHREC_GOWALLA", ROOT.parent / "shared/datasets/gowalla"))


def in_memory_graph(users: np.ndarray, items: np.ndarray, num_users: int,
                    num_items: int) -> GraphData:
    n = len(users)
    return GraphData(
        user_ids=np.arange(num_users).astype(str), item_ids=np.arange(num_items).astype(str),
        item_titles=[""] * num_items, item_texts=[""] * num_items,
        users=users.astype(np.int64), items=items.astype(np.int64),
        folds=np.full(n, TRAIN, dtype=np.int8), cold_items=np.zeros(num_items, dtype=bool),
        text_emb=None, meta={"fingerprint": "bench"},
    )


GOWALLA_PER_USER, GOWALLA_PER_ITEM = 810_128 / 29_858, 810_128 / 40_981


def power_law_graph(n: int, num_users: int, num_items: int, seed: int,
                    shuffle_ids: bool = False) -> GraphData:
    """n distinct (user, item) pairs with Zipf-like user and item popularity (exponent ~1).
    Ids follow popularity (0 = most popular) unless ``shuffle_ids``."""
    rng = np.random.default_rng(seed)
    pu = 1.0 / np.arange(1, num_users + 1) ** 0.8
    pi = 1.0 / np.arange(1, num_items + 1) ** 0.9
    u = rng.choice(num_users, size=int(n * 1.15), p=pu / pu.sum())
    i = rng.choice(num_items, size=int(n * 1.15), p=pi / pi.sum())
    key = np.unique(u.astype(np.int64) * num_items + i)
    key = rng.permutation(key)[:n]
    users, items = key // num_items, key % num_items
    if shuffle_ids:
        users, items = rng.permutation(num_users)[users], rng.permutation(num_items)[items]
    return in_memory_graph(users, items, num_users, num_items)


def gowalla_graph(data: Path, tag: str) -> GraphData | None:
    """The Gowalla split in ``data`` built without text under $TMPDIR, or None when absent."""
    if not (data / "train.txt").exists():
        return None
    from graphrec.build import BuildConfig, build_graph

    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"graphrec-{tag}-{os.getpid()}"
    return build_graph(BuildConfig(train=str(data / "train.txt"), test=str(data / "test.txt"),
                                   no_text=True), work / "graph")


def synthetic_graph(n: int, shape: str, seed: int) -> GraphData:
    if shape == "fixed":
        return power_law_graph(n, 1_000_000, 500_000, seed)
    return power_law_graph(n, round(n / GOWALLA_PER_USER), round(n / GOWALLA_PER_ITEM), seed,
                           shuffle_ids=True)


def by_degree(graph: GraphData) -> GraphData:
    """The same graph with user and item ids renumbered by descending training degree (0 =
    most active), as many datasets number them."""
    def rank(ids: np.ndarray, n: int) -> np.ndarray:
        order = np.argsort(-np.bincount(ids, minlength=n), kind="stable")
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        return position[ids]
    return in_memory_graph(rank(graph.users, graph.num_users), rank(graph.items, graph.num_items),
                           graph.num_users, graph.num_items)


def time_steps(graph: GraphData, args) -> dict:
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-3, lr_schedule="constant",
                      dim=args.dim, layers=args.layers, negatives="uniform", item_init="id",
                      eval_every=0, precision=args.precision, neg_candidates=args.neg_candidates,
                      device=args.device)

    def clock() -> float:  # CUDA work is asynchronous: wait for it before reading the clock
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter()

    t0 = clock()
    trainer = Trainer(graph, cfg)  # batch size 0 resolves to the default rule
    setup = clock() - t0
    batch = trainer.cfg.batch_size
    times, product_times = [], []
    # The epoch's negatives are drawn up front, at its first batch: timed once, apart.
    t0 = clock()
    batches = trainer.batches()
    first = next(batches)
    draws = clock() - t0
    adj, model = trainer.adj, trainer.model
    for k in range(min(args.steps + 1, trainer.sampler.num_batches(batch))):
        t0 = clock()
        trainer.train_step(*(first if k == 0 else next(batches)))  # the trainer's own step
        times.append(clock() - t0)
        # The step's sparse products alone (K layers forward and K backward, each R @ items
        # and R^T @ users), alternating with the steps. With bfloat16 blocks each of these
        # converts its float32 input, where the step converts once per propagation.
        xu, xi = model.user_emb.weight.detach(), model.item_layer0().detach()
        t0 = clock()
        for _ in range(2 * args.layers):
            spmm(adj.r, xi), spmm(adj.rt, xu)
        product_times.append(clock() - t0)
    step = float(np.median(times[1:] or times))
    products = float(np.median(product_times[1:] or product_times))
    steps = trainer.sampler.num_batches(batch)
    return {"setup_s": setup, "step_s": step, "epoch_s": step * steps + draws, "steps": steps,
            "draws_s": draws, "batch": batch, "products_s": products,
            "reordered": adj.order is not None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--fractions", type=float, nargs="*", default=[0.25, 0.5, 1.0])
    p.add_argument("--synthetic", type=int, nargs="*", default=[10_000_000],
                   help="interactions of each synthetic power-law graph (none: Gowalla only)")
    p.add_argument("--shape", choices=("gowalla", "fixed"), default="gowalla",
                   help="synthetic node counts: Gowalla's density, or 1M users / 500k items")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=0,
                   help="0: graphrec's default rule (about 25 steps per epoch)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, or cuda (a GPU machine)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--neg-candidates", type=int, default=1,
                   help="negatives drawn per triple (1: the recorded tables; default of "
                        "graphrec train: 8)")
    p.add_argument("--id-order", choices=("own", "degree"), default="own",
                   help="degree: renumber every graph's users and items by popularity")
    args = p.parse_args()
    order = by_degree if args.id_order == "degree" else (lambda g: g)
    bad = [n for n in args.synthetic if n < 1000]
    if bad or args.steps < 1 or args.batch_size < 0:
        p.error(f"expected --synthetic sizes >= 1000, --steps >= 1 and --batch-size >= 0 "
                f"(got {bad or args.synthetic}, {args.steps}, {args.batch_size})")
    rows = []
    full = gowalla_graph(args.data, "scaling")
    if full is not None:
        u, i = full.fold_pairs(TRAIN)
        rng = np.random.default_rng(args.seed)
        for frac in args.fractions:
            keep = rng.permutation(len(u))[: int(len(u) * frac)]
            g = order(in_memory_graph(u[keep], i[keep], full.num_users, full.num_items))
            rows.append((f"Gowalla {frac:.0%}", len(keep), time_steps(g, args)))
            print(rows[-1], flush=True)
    for n in args.synthetic:
        g = order(synthetic_graph(n, args.shape, args.seed))
        name = f"power-law {n / 1e6:g}M ({g.num_users:,} users, {g.num_items:,} items)"
        rows.append((name, n, time_steps(g, args)))
        del g
        print(rows[-1], flush=True)
    print(f"\ndim {args.dim}, {args.layers} layers, batch {args.batch_size or 'auto'}, "
          f"ids {args.id_order}, {args.precision}, {args.neg_candidates} negative(s) per "
          f"triple, median of {args.steps} steps after a warm-up step")
    print("s / epoch = steps x s / step + the epoch's negative draws. Per 1M interactions: "
          "seconds of an epoch, then the part in the sparse products (timed alone) and the "
          "rest (draws included).")
    print("| graph | interactions | batch | s / step | steps / epoch | draws s | s / epoch "
          "| s / epoch / 1M | products / 1M | rest / 1M |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, n, r in rows:
        m = n / 1e6
        products = min(r["products_s"], r["step_s"]) * r["steps"]
        print(f"| {name}{' (reordered)' if r['reordered'] else ''} | {n:,} | {r['batch']} | "
              f"{r['step_s']:.3f} | {r['steps']} | {r['draws_s']:.2f} | {r['epoch_s']:.1f} | "
              f"{r['epoch_s'] / m:.2f} | {products / m:.2f} | "
              f"{(r['epoch_s'] - products) / m:.2f} |")


if __name__ == "__main__":
    main()
