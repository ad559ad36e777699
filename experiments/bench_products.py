"""What one sparse product costs per nonzero, and what the memory alone would cost.

For synthetic graphs of Gowalla's shape (bench_scaling.py's, node ids in random order), times
R @ X_items + R^T @ X_users (dim 64, float32) six ways, in one process, alternating, median:

- ``bag``: graphrec's product on the CPU (``graphrec.model.spmm``): an embedding bag per CSR
  row (indices = column indices, offsets = row pointers, per-sample weights = values);
- ``mkl``: torch.addmm on the CSR tensor (MKL), graphrec's product until 2026-11-29;
- ``blocks2`` / ``blocks4``: X's 64 columns as 2 or 4 contiguous blocks, one product each
  (smaller tables per pass, more passes over R);
- ``gather``: only ``index_select`` of the same rows, no arithmetic: the cost of fetching
  every nonzero's row once, a floor for any product that reads the rows;
- ``gather+stream``: the rows gathered 16,384 nonzeros at a time into a cache-sized buffer,
  then a CSR product over the buffer in order.

    python experiments/bench_products.py --synthetic 1000000 10000000
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the CLI does, before torch

import numpy as np
import torch
from bench_scaling import synthetic_graph

from graphrec.graph import normalized_bipartite
from graphrec.model import spmm


def product(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    out = x.new_empty(m.shape[0], x.shape[1])
    return torch.addmm(out, m, x, beta=0, out=out)


def blocked(m: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """``xb`` [nb, n, 64 / nb] contiguous blocks of X's columns."""
    out = xb.new_empty(xb.shape[0], m.shape[0], xb.shape[2])
    for b in range(xb.shape[0]):
        torch.addmm(out[b], m, xb[b], beta=0, out=out[b])
    return out


def gather_only(m: torch.Tensor, x: torch.Tensor, buf: torch.Tensor) -> None:
    col = m.col_indices()
    for s in range(0, len(col), len(buf)):
        idx = col[s:s + len(buf)]
        torch.index_select(x, 0, idx, out=buf[:len(idx)])


def gather_stream(m: torch.Tensor, x: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    crow, col, val = m.crow_indices(), m.col_indices(), m.values()
    rows = m.shape[0]
    out = x.new_empty(rows, x.shape[1])
    cuts = torch.searchsorted(crow, torch.arange(0, len(col), chunk)).clamp_(max=rows).tolist()
    bounds = sorted({0, rows, *cuts})
    offsets = torch.arange(len(col) + 1, dtype=col.dtype)
    buf = x.new_empty(chunk, x.shape[1])
    for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
        s, e = int(crow[r0]), int(crow[r1])
        if e - s > len(buf):  # one row longer than a chunk
            buf = x.new_empty(e - s, x.shape[1])
        g = torch.index_select(x, 0, col[s:e], out=buf[:e - s])
        local = torch.sparse_csr_tensor(crow[r0:r1 + 1] - s, offsets[:e - s], val[s:e],
                                        (r1 - r0, e - s), check_invariants=False)
        torch.addmm(out[r0:r1], local, g, beta=0, out=out[r0:r1])
    return out


def time_ways(r, rt, xu, xi, split, rounds: int) -> dict[str, list[float]]:
    """Seconds of each way per round, the ways alternating within a round."""
    buf = xu.new_empty(1 << 20, 64)
    ways = {
        "bag": lambda: (spmm(r, xi), spmm(rt, xu)),
        "mkl": lambda: (product(r, xi), product(rt, xu)),
        "blocks2": lambda: (blocked(r, split[2][1]), blocked(rt, split[2][0])),
        "blocks4": lambda: (blocked(r, split[4][1]), blocked(rt, split[4][0])),
        "gather": lambda: (gather_only(r, xi, buf), gather_only(rt, xu, buf)),
        "gather+stream": lambda: (gather_stream(r, xi), gather_stream(rt, xu)),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(rounds):
        for k, f in ways.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--synthetic", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    if min(args.synthetic) < 1000:
        p.error("--synthetic: expected sizes of at least 1000 interactions")
    if args.rounds < 1:
        p.error(f"--rounds {args.rounds}: expected at least 1")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per 1M nonzeros "
          f"(both directions), median of {args.rounds}")
    print("| interactions | users | items | " + " | ".join(
        ["bag", "mkl", "blocks2", "blocks4", "gather", "gather+stream", "mkl / bag"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.synthetic:
        g = synthetic_graph(n, "gowalla", 0)
        r, rt = normalized_bipartite(g.users, g.items, g.num_users, g.num_items)
        gen = torch.Generator().manual_seed(0)
        xu, xi = torch.randn(g.num_users, 64, generator=gen), torch.randn(g.num_items, 64,
                                                                          generator=gen)
        split = {nb: (xu.view(-1, nb, 64 // nb).transpose(0, 1).contiguous(),
                      xi.view(-1, nb, 64 // nb).transpose(0, 1).contiguous()) for nb in (2, 4)}
        ref = product(r, xi)
        torch.testing.assert_close(spmm(r, xi), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gather_stream(r, xi), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(blocked(r, split[4][1]).transpose(0, 1).reshape(-1, 64),
                                   ref, atol=1e-5, rtol=1e-5)
        times = time_ways(r, rt, xu, xi, split, args.rounds)
        per = {k: float(np.median(v)) * 1e3 / (2 * n / 1e6) for k, v in times.items()}
        print(f"| {n:,} | {g.num_users:,} | {g.num_items:,} | " +
              " | ".join(f"{v:.1f}" for v in per.values()) +
              f" | {per['mkl'] / per['bag']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
