"""Scoring without HTTP: ``Recommender.recommend_batch`` on a synthetic catalog, per device
and retrieval, for one user at a time and for batches (what the server's micro-batcher asks).

The catalog lives in memory: `--items` items and `--users` users of dim `--dim`, item
vectors drawn around 5,000 centres (a clustered geometry, like trained embeddings), 20 known
items per user. CPU exact, CPU ANN (faiss, when installed) and CUDA exact (when there is a
GPU) run in the same call; the last column is the speed against CPU exact.

    python experiments/bench_scoring.py                       # 1M items, dim 64
    python experiments/bench_scoring.py --items 200000 --batches 1 64
    python experiments/bench_scoring.py --models GW/lightgcn GW/filter GW/ensemble

``--models``: trained model directories instead of the synthetic catalog (any kind:
TextLightGCN, graph filter, ensemble), CPU exact, each against the first one given.

Prints one markdown table: device, index, batch size, ms per batch, users/s, ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphrec.data.csr import Csr  # noqa: E402
from graphrec.serve.index import faiss_available  # noqa: E402
from graphrec.serve.recommender import Recommender  # noqa: E402


def catalog(items: int, users: int, dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((5000, dim)).astype(np.float32)
    item_emb = centres[rng.integers(0, 5000, items)]
    item_emb += 0.3 * rng.standard_normal(item_emb.shape).astype(np.float32)
    known = np.sort(rng.integers(0, items, (users, 20)), axis=1)
    return {
        "user_ids": np.asarray([f"u{n}" for n in range(users)]),
        "item_ids": np.asarray([f"i{n}" for n in range(items)]),
        "item_titles": [""] * items,
        "user_emb": centres[rng.integers(0, 5000, users)] + 0.3 * rng.standard_normal(
            (users, dim)).astype(np.float32),
        "item_emb": item_emb,
        "known": Csr(np.arange(0, 20 * users + 1, 20, dtype=np.int64), known.ravel()),
        "text_emb": None,
        "item_degree": rng.zipf(1.5, items).astype(np.int64),
        "cold_items": np.zeros(items, dtype=bool),
    }


def time_batches(rec: Recommender, users: list[str], batch: int, seconds: float) -> float:
    """Seconds per recommend_batch call of ``batch`` users (k=20), median of the calls."""
    rec.recommend_batch(users[:batch], 20)  # warm-up
    times, start, n = [], time.perf_counter(), 0
    while time.perf_counter() - start < seconds and n < 10_000:
        chunk = [users[(n * batch + j) % len(users)] for j in range(batch)]
        t0 = time.perf_counter()
        rec.recommend_batch(chunk, 20)
        if rec.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        n += 1
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--seconds", type=float, default=5.0, help="per row")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the server uses 1)")
    p.add_argument("--models", type=Path, nargs="+", default=None,
                   help="model directories to time instead of the synthetic catalog")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.models:
        return time_models(args)
    arrays = catalog(args.items, args.users, args.dim)
    users = [str(u) for u in arrays["user_ids"]]
    setups = [("cpu", "exact")]
    if faiss_available():
        setups.append(("cpu", "ann"))
    if torch.cuda.is_available():
        setups.append(("cuda", "exact"))
    print(f"`python experiments/bench_scoring.py {' '.join(sys.argv[1:])}`")
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"- {time.strftime('%Y-%m-%d %H:%M')}, {args.items} items, dim {args.dim}, k=20, "
          f"{args.threads} torch thread(s), {name}\n")
    print("| device | index | batch | ms per batch | users/s | vs cpu exact |")
    print("|---|---|---|---|---|---|")
    base = {}
    for device, index in setups:
        t0 = time.perf_counter()
        rec = Recommender(arrays, {}, Path("."), index=index, device=device)
        setup_s = time.perf_counter() - t0
        for batch in args.batches:
            s = time_batches(rec, users, batch, args.seconds)
            base.setdefault(batch, s)
            print(f"| {device} | {index} | {batch} | {s * 1000:.2f} | {batch / s:.0f} | "
                  f"{base[batch] / s:.2f}× |", flush=True)
        print(f"<!-- {device} {index}: set-up {setup_s:.1f} s -->")


def time_models(args) -> None:
    """Rows of the table for trained model directories (CPU exact)."""
    print(f"`python experiments/bench_scoring.py {' '.join(sys.argv[1:])}`")
    print(f"- {time.strftime('%Y-%m-%d %H:%M')}, k=20, {args.threads} torch thread(s)\n")
    print("| model | kind | items | batch | ms per batch | users/s | vs first |")
    print("|---|---|---|---|---|---|---|")
    base = {}
    for path in args.models:
        t0 = time.perf_counter()
        rec = Recommender.load(path)
        load_s = time.perf_counter() - t0
        kind = rec.config.get("model", {}).get("kind", "lightgcn")
        rng = np.random.default_rng(0)
        users = [str(u) for u in rng.choice(rec.user_ids, min(args.users, len(rec.user_ids)),
                                            replace=False)]
        for batch in args.batches:
            s = time_batches(rec, users, batch, args.seconds)
            base.setdefault(batch, s)
            print(f"| {path.name} | {kind} | {rec.num_items} | {batch} | {s * 1000:.2f} | "
                  f"{batch / s:.0f} | {base[batch] / s:.2f}× |", flush=True)
        print(f"<!-- {path}: load {load_s:.1f} s -->")


if __name__ == "__main__":
    main()
