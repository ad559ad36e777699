"""The BPR loss with L2, forward + backward, two ways, alternating in one process:

- ``per-triple``: the straightforward version (LightGCN eq. 15 as written): gathers [B, 64]
  copies of every triple's user, positive and negative rows, twice for the scores and again
  for the L2 term;
- ``graphrec``: model.bpr_loss: one margin product u . (e_n - e_p), and the L2 term over the
  batch's unique rows weighted by how often the batch names them.

Inputs have the shapes of a training step: the batch's unique rows (what forward_batch
returns) and local indices into them.

    python experiments/bench_loss.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from graphrec.model import bpr_loss


def per_triple_loss(eu, ei, xu0, xi0, users, pos, neg, reg):
    u = eu[users]
    bpr = nn.functional.softplus((u * ei[neg]).sum(-1) - (u * ei[pos]).sum(-1)).mean()
    l2 = xu0[users].square().sum() + xi0[pos].square().sum() + xi0[neg].square().sum()
    return bpr + reg * l2 / (2 * len(users)), bpr.detach()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    if args.rounds < 4:
        p.error(f"--rounds {args.rounds}: expected at least 4 (3 are warm-up)")
    # (batch, users, items): Gowalla at batch 32,768, the 10M synthetic graph at 524,288.
    for batch, nu, ni in ((32768, 29858, 40981), (524288, 368559, 505858)):
        g = torch.Generator().manual_seed(0)
        users = torch.randint(nu, (batch,), generator=g)
        pos = torch.randint(ni, (batch,), generator=g)
        neg = torch.randint(ni, (batch,), generator=g)
        bu, u_local = torch.unique(users, return_inverse=True)
        bi, i_local = torch.unique(torch.cat([pos, neg]), return_inverse=True)
        p_local, n_local = i_local[:batch], i_local[batch:]
        tensors = [torch.randn(len(rows), 64, generator=g).requires_grad_()
                   for rows in (bu, bi, bu, bi)]
        times: dict[str, list[float]] = {"per-triple": [], "graphrec": []}
        losses = {}
        for _ in range(args.rounds):
            for name, fn in (("per-triple", per_triple_loss), ("graphrec", bpr_loss)):
                for t in tensors:
                    t.grad = None
                start = time.perf_counter()
                loss, _ = fn(*tensors, u_local, p_local, n_local, 1e-4)
                loss.backward()
                times[name].append(time.perf_counter() - start)
                losses[name] = float(loss.detach())
        a, b = (float(np.median(times[k][3:])) * 1e3 for k in ("per-triple", "graphrec"))
        print(f"batch {batch:,} ({len(bu):,} users, {len(bi):,} items in the batch): per-triple "
              f"{a:.1f} ms, graphrec {b:.1f} ms, {a / b:.2f}x (median of {args.rounds - 3}); "
              f"losses {losses['per-triple']:.6f} / {losses['graphrec']:.6f}")


if __name__ == "__main__":
    main()
