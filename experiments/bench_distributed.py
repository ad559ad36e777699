"""Data-parallel training against one process, on the same graph and global batch.

    python experiments/bench_distributed.py --graph W/graph                 # 2 processes
    python experiments/bench_distributed.py --graph W/graph --nproc 2 --epochs 3 --steps 20

Two measurements in one call:

1. Agreement: one process (all torch threads) and ``--nproc`` processes (one thread each,
   gloo) take ``--steps`` optimizer steps from the same seed; the largest absolute weight
   difference and the largest weight change, for scale.
2. Speed and memory: ``--epochs`` epochs each way (no evaluation); median epoch seconds, the
   ratio, and every process's peak RSS.

Prints one markdown table. The processes are started by graphrec.distributed.launch (what
``graphrec train --nproc N`` uses).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphrec.artifacts import load_graph  # noqa: E402
from graphrec.distributed import join, launch, leave  # noqa: E402
from graphrec.train import TrainConfig, Trainer  # noqa: E402


def settings(args) -> TrainConfig:
    return TrainConfig(epochs=max(args.epochs, 1), device="cpu", eval_every=0, seed=0,
                       batch_size=args.batch_size, lr=args.lr)


def steps(trainer: Trainer, n: int) -> None:
    while trainer.steps_done < n:
        for batch in trainer.batches():
            trainer.train_step(*batch)
            if trainer.steps_done == n:
                return


def run(args, group=None) -> dict:
    """The two measurements in this process (one of a group, or alone)."""
    graph = load_graph(args.graph)
    kw = {"group": group} if group is not None else {}
    trainer = Trainer(graph, settings(args), **kw)
    start = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    steps(trainer, args.steps)
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer = Trainer(graph, settings(args), **kw)
    seconds = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        trainer.train_epoch()
        seconds.append(time.perf_counter() - t0)
    return {"start": start, "weights": weights, "seconds": seconds,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "batch_rows": trainer.batch_rows, "batch": trainer.cfg.batch_size}


def worker(args) -> None:
    torch.set_num_threads(1)
    group = join(torch.device("cpu"))
    out = run(args, group)
    torch.save(out, Path(args.out) / f"rank{group.rank}.pt")
    leave()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--graph", type=Path, required=True)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=0, help="0: graphrec's batch rule")
    p.add_argument("--lr", type=float, default=0.0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    threads = torch.get_num_threads()
    solo = run(args)
    with tempfile.TemporaryDirectory() as tmp:
        launch(args.nproc, [str(Path(__file__).resolve()), "--worker", "--out", tmp,
                            "--graph", str(args.graph), "--epochs", str(args.epochs),
                            "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                            "--lr", str(args.lr)])
        ranks = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False)
                 for r in range(args.nproc)]
    diff = max((ranks[0]["weights"][k] - solo["weights"][k]).abs().max().item()
               for k in solo["weights"])
    spread = max((r["weights"][k] - ranks[0]["weights"][k]).abs().max().item()
                 for r in ranks for k in solo["weights"])
    moved = max((solo["weights"][k] - solo["start"][k]).abs().max().item()
                for k in solo["weights"])
    one = statistics.median(solo["seconds"])
    many = statistics.median(ranks[0]["seconds"])
    print(f"`python experiments/bench_distributed.py {' '.join(sys.argv[1:])}`")
    print(f"- {time.strftime('%Y-%m-%d %H:%M')}, graph {args.graph}, batch {solo['batch']}"
          f" ({'batch rows' if solo['batch_rows'] else 'full'} steps), {args.steps} steps, "
          f"{args.epochs} epochs\n")
    print("| run | median epoch s | vs one process | peak RSS per process, MiB | "
          f"max abs weight diff after {args.steps} steps (vs one process) |")
    print("|---|---|---|---|---|")
    print(f"| 1 process, {threads} threads | {one:.2f} | 1.00× | {solo['rss_mib']:.0f} | "
          f"– (largest weight change {moved:.3g}) |")
    print(f"| {args.nproc} processes (gloo), 1 thread each | {many:.2f} | {one / many:.2f}× | "
          + " / ".join(f"{r['rss_mib']:.0f}" for r in ranks)
          + f" | {diff:.2g} (between the processes: {spread:.2g}) |")


if __name__ == "__main__":
    main()
