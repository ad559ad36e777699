"""Serving memory and start-up: what a server worker pays to load a model directory, with the
embeddings memory-mapped (the default) and read into private memory, and what several
workers holding the same model cost together.

For each mode, `--workers` processes start one after another; each loads the model
(``Recommender.load``), scores every user once (so every page of the arrays is touched),
reports its load time and its proportional set size (PSS: a page shared by n processes
counts 1/n to each, /proc/self/smaps_rollup), and waits until all have reported, so that
the pages really are held together.

    python experiments/bench_model_load.py --model graphrec-run/model
    python experiments/bench_model_load.py --model graphrec-run/model-synthetic-1000000

Prints one markdown table: mode, worker, load seconds, PSS MiB, and the sum over workers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pss_mib() -> float:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("bench_model_load.py: no Pss in /proc/self/smaps_rollup (Linux only)")


def worker(n: int, model: str, mmap: bool, ready, go, out) -> None:
    import torch

    from graphrec.artifacts.model_dir import load_arrays, read_model_config
    from graphrec.serve.recommender import Recommender

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rec = Recommender(load_arrays(model, mmap=mmap), read_model_config(model), Path(model))
    load_s = time.perf_counter() - t0
    for start in range(0, rec.num_users, 16):  # touch every page of the embeddings
        users = torch.arange(start, min(start + 16, rec.num_users))
        torch.topk(rec.scores(rec.user_emb[users]), 10, dim=1)
    ready.release()
    go.wait(120)
    out.put({"worker": n, "load_s": load_s, "pss_mib": pss_mib()})


def run_mode(model: str, mmap: bool, workers: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = []
    for n in range(1, workers + 1):  # one after another: the second finds the first's pages
        p = ctx.Process(target=worker, args=(n, model, mmap, ready, go, out))
        p.start()
        ready.acquire(timeout=600)
        procs.append(p)
    go.set()
    rows = sorted((out.get(timeout=600) for _ in procs), key=lambda r: r["worker"])
    for p in procs:
        p.join(timeout=60)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="a model directory")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    config = json.loads((Path(args.model) / "config.json").read_text())
    print(f"`python experiments/bench_model_load.py {' '.join(sys.argv[1:])}`")
    print(f"- {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
          f"model: {config['graph']['num_users']} users, {config['graph']['num_items']} items")
    print("\n| arrays | worker | load s | PSS MiB |\n|---|---|---|---|")
    for mmap in (True, False):
        rows = run_mode(args.model, mmap, args.workers)
        name = "memory-mapped" if mmap else "read into memory"
        for r in rows:
            print(f"| {name} | {r['worker']} | {r['load_s']:.3f} | {r['pss_mib']:.0f} |")
        print(f"| {name} | all | – | {sum(r['pss_mib'] for r in rows):.0f} |", flush=True)


if __name__ == "__main__":
    main()
