"""Negative sampling alone: one epoch's up-front draws on Gowalla and synthetic power-law graphs.

    python experiments/bench_sampler.py                             # Gowalla and 10M
    python experiments/bench_sampler.py --synthetic 2500000 10000000 --repeats 5
    PYTHONPATH=/path/to/other/checkout python experiments/bench_sampler.py   # another version

For each graph, negative sampler (uniform; popularity (degree + 1)^0.5, graphrec's default
for text items) and number of candidates per triple (1; 8, graphrec train's default), times
`BPRSampler.epoch`'s first batch, which draws every negative of the epoch (with the
membership test and redraws) and shuffles the interactions; median of --repeats. Uses only
the sampler's public API, so one checkout's script can time another checkout's sampler.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from bench_scaling import DEFAULT_DATA, gowalla_graph, synthetic_graph  # same folder

import graphrec
from graphrec.data import TRAIN
from graphrec.train import BPRSampler


def time_draws(users: torch.Tensor, items: torch.Tensor, num_items: int, negatives: str,
               candidates: int, repeats: int, seed: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    sampler = BPRSampler(users, items, num_items, negatives)
    setup = time.perf_counter() - t0
    times = []
    for r in range(repeats + 1):  # the first call warms the allocator up
        gen = torch.Generator().manual_seed(seed + r)
        t0 = time.perf_counter()
        next(sampler.epoch(32768, gen, candidates))
        times.append(time.perf_counter() - t0)
    return setup, float(np.median(times[1:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--synthetic", type=int, nargs="*", default=[10_000_000])
    p.add_argument("--negatives", nargs="+", default=["uniform", "popularity"],
                   choices=("uniform", "popularity"))
    p.add_argument("--candidates", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.repeats < 1 or min(args.candidates) < 1 or any(n < 1000 for n in args.synthetic):
        p.error("expected --repeats >= 1, --candidates >= 1 and --synthetic sizes >= 1000")
    graphs = []
    g = gowalla_graph(args.data, "sampler")
    if g is not None:
        graphs.append(("Gowalla", *g.fold_pairs(TRAIN), g.num_items))
    for n in args.synthetic:
        g = synthetic_graph(n, "gowalla", args.seed)
        graphs.append((f"power-law {n / 1e6:g}M", g.users, g.items, g.num_items))
    print(f"graphrec from {Path(graphrec.__file__).parent}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats} epochs' draws")
    print("| graph | interactions | negatives | candidates | sampler setup s | draws s / epoch "
          "| ns / negative |")
    print("|---|---|---|---|---|---|---|")
    for name, u, i, num_items in graphs:
        u, i = torch.as_tensor(u, dtype=torch.long), torch.as_tensor(i, dtype=torch.long)
        for negatives in args.negatives:
            for k in args.candidates:
                setup, draws = time_draws(u, i, num_items, negatives, k, args.repeats, args.seed)
                print(f"| {name} | {len(u):,} | {negatives} | {k} | {setup:.2f} | {draws:.3f} | "
                      f"{draws / (k * len(u)) * 1e9:.0f} |", flush=True)


if __name__ == "__main__":
    main()
