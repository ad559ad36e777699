"""Training on several processes against one process, on the same graph and global batch:
data-parallel (a copy of the model in every process) or, with --partition, the model split
between the processes (graphrec.train.partition).

    python experiments/bench_distributed.py --graph W/graph                 # 2 processes
    python experiments/bench_distributed.py --graph W/graph --nproc 2 --epochs 3 --steps 20
    python experiments/bench_distributed.py --graph W/graph --partition
    python experiments/bench_distributed.py --synthetic 10000000 --partition --epochs 1

Two measurements in one call:

1. Agreement: one process (all torch threads) and ``--nproc`` processes (one thread each,
   gloo) take ``--steps`` optimizer steps from the same seed; the largest absolute weight
   difference and the largest weight change, for scale.
2. Speed and memory: ``--epochs`` epochs each way (no evaluation); median epoch seconds, the
   ratio, and every process's peak RSS, with its RSS once the graph was loaded (what every
   process holds whatever the mode: the graph's arrays). The two measurements run in
   separate processes, so that the first's gathered weights do not count in the peak.

With --partition, also the rows each process receives per propagation layer from the
others (only the rows its adjacency blocks name travel) against the rows a copy of the whole
table would bring in. ``--synthetic N``: a power-law graph of N interactions with Gowalla's
interactions per user and per item, ids in random order (experiments/bench_scaling.py),
written to a temporary graph folder first.

Prints one markdown table. Every run is a fresh process (the one-process run too), started
by graphrec.distributed.launch (what ``graphrec train --nproc N`` uses).
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphrec.artifacts import load_graph  # noqa: E402
from graphrec.distributed import end_process, join, launch, leave  # noqa: E402
from graphrec.train import TrainConfig, Trainer  # noqa: E402
from graphrec.train.partition import PartitionedTrainer  # noqa: E402


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


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
    loaded = current_rss_mib()

    def make():
        if group is None:
            return Trainer(graph, settings(args))
        if args.partition:
            return PartitionedTrainer(graph, settings(args), group)
        return Trainer(graph, settings(args), group=group)

    if args.phase == "steps":
        trainer = make()
        start = {k: v.detach().clone() for k, v in full_state(trainer).items()}
        steps(trainer, args.steps)
        return {"start": start, "weights": full_state(trainer)}
    trainer = make()
    seconds = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        trainer.train_epoch()
        seconds.append(time.perf_counter() - t0)
    blocks = getattr(trainer, "blocks", None)
    return {"seconds": seconds, "rss_mib": rss_mib(),
            "loaded_mib": loaded, "batch_rows": trainer.batch_rows,
            "batch": trainer.cfg.batch_size, "received": None if blocks is None else
            blocks.sent_per_layer(), "own": None if blocks is None else
            (blocks.own_users, blocks.own_items),
            "nodes": (graph.num_users, graph.num_items)}


def full_state(trainer) -> dict:
    """The whole model's weights (at the leader; {} elsewhere for a split model)."""
    if isinstance(trainer, PartitionedTrainer):
        model = trainer.full_model()
        return {} if model is None else model.state_dict()
    return trainer.model.state_dict()


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    group = join(torch.device("cpu")) if args.nproc > 1 else None
    out = run(args, group)
    torch.save(out, Path(args.out) / f"{args.phase}{0 if group is None else group.rank}.pt")
    leave(wait=True)
    if group is not None and not group.solo:
        end_process()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--graph", type=Path, default=None)
    p.add_argument("--synthetic", type=int, default=0,
                   help="instead of --graph: a power-law graph of this many interactions")
    p.add_argument("--partition", action="store_true",
                   help="split the model between the processes instead of copying it")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=0, help="0: graphrec's batch rule")
    p.add_argument("--lr", type=float, default=0.0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--phase", default="steps", help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if (args.graph is None) == (args.synthetic == 0):
        p.error("give one of --graph and --synthetic")
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic:
            from bench_scaling import synthetic_graph

            from graphrec.artifacts import GRAPH_FORMAT_VERSION, save_graph
            args.graph = Path(tmp) / "graph"
            graph = synthetic_graph(args.synthetic, "gowalla", 0)
            graph.meta.update(format_version=GRAPH_FORMAT_VERSION,
                              num_users=graph.num_users, num_items=graph.num_items)
            save_graph(graph, args.graph)
            del graph
            gc.collect()
        common = ["--graph", str(args.graph), "--epochs", str(args.epochs), "--steps",
                  str(args.steps), "--batch-size", str(args.batch_size), "--lr", str(args.lr)]
        common += ["--partition"] if args.partition else []
        script = str(Path(__file__).resolve())
        (Path(tmp) / "solo").mkdir()
        solo, ranks = {}, [{} for _ in range(args.nproc)]
        for phase in ("steps", "epochs"):
            subprocess.run([sys.executable, script, "--worker", "--nproc", "1", "--threads",
                            str(threads), "--out", str(Path(tmp) / "solo"), "--phase", phase,
                            *common], check=True)
            solo.update(torch.load(Path(tmp) / "solo" / f"{phase}0.pt", weights_only=False))
            launch(args.nproc, [script, "--worker", "--nproc", str(args.nproc), "--out", tmp,
                                "--phase", phase, *common])
            for r in range(args.nproc):
                ranks[r].update(torch.load(Path(tmp) / f"{phase}{r}.pt", weights_only=False))
    diff = max((ranks[0]["weights"][k] - solo["weights"][k]).abs().max().item()
               for k in solo["weights"])
    # Rows off by more than 1e-4: a few rows far off are discrete flips (a hard negative
    # whose candidates' scores tie to float rounding), many rows slightly off are rounding.
    off = sum(int(((ranks[0]["weights"][k] - solo["weights"][k]).abs().amax(-1) > 1e-4).sum())
              for k in solo["weights"] if solo["weights"][k].dim() == 2)
    rows = sum(v.shape[0] for v in solo["weights"].values() if v.dim() == 2)
    moved = max((solo["weights"][k] - solo["start"][k]).abs().max().item()
                for k in solo["weights"])
    one = statistics.median(solo["seconds"])
    many = statistics.median(ranks[0]["seconds"])
    mode = "model split" if args.partition else "data-parallel"
    what = f"synthetic power-law, {args.synthetic:,} interactions" if args.synthetic \
        else f"graph {args.graph}"
    users, items = solo["nodes"]
    print(f"`python experiments/bench_distributed.py {' '.join(sys.argv[1:])}`")
    print(f"- {time.strftime('%Y-%m-%d %H:%M')}, {what} ({users:,} users, {items:,} items), "
          f"batch {solo['batch']} ({'batch rows' if solo['batch_rows'] else 'full'} steps in "
          f"one process), {args.steps} steps, {args.epochs} epochs\n")
    print("| run | median epoch s | vs one process | peak RSS per process, MiB (of it the "
          "loaded graph) | vs one process | max abs weight diff after "
          f"{args.steps} steps (vs one process) |")
    print("|---|---|---|---|---|---|")
    print(f"| 1 process, {threads} threads | {one:.2f} | 1.00× | {solo['rss_mib']:.0f} "
          f"({solo['loaded_mib']:.0f}) | 1.00 | – (largest weight change {moved:.3g}) |")
    print(f"| {args.nproc} processes (gloo, {mode}), 1 thread each | {many:.2f} | "
          f"{one / many:.2f}× | "
          + " / ".join(f"{r['rss_mib']:.0f} ({r['loaded_mib']:.0f})" for r in ranks)
          + " | " + " / ".join(f"{r['rss_mib'] / solo['rss_mib']:.2f}" for r in ranks)
          + f" | {diff:.2g} ({off:,} of {rows:,} rows off by > 1e-4) |")
    if args.partition:
        print("\n| process | users owned | items owned | user rows in per layer | item rows "
              "in per layer | rows a whole-table copy brings in |")
        print("|---|---|---|---|---|---|")
        for rank, r in enumerate(ranks):
            (ou, oi), got = r["own"], r["received"]
            print(f"| {rank} | {ou:,} | {oi:,} | {got['user_rows_in']:,} | "
                  f"{got['item_rows_in']:,} | {users + items - ou - oi:,} |")


if __name__ == "__main__":
    main()
