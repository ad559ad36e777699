"""Benchmark graphrec.text on the bundled MovieLens item texts (CPU by default).

    python experiments/bench_text.py --batch-size 32 64 128 --threads 2
    python experiments/bench_text.py --precision float32 bfloat16 float32 bfloat16

Prints items/s of a cold run (fresh temporary cache) and the time of a second run over the
same texts (every text a cache hit, so the encoder is never loaded); with several
precisions, each run's cosine to the first float32 run's embeddings (min and mean).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from graphrec.text import DEFAULT_TEXT_MODEL, TEXT_PRECISIONS, TextEncoder, embed_texts

ML_DIR = Path(__file__).resolve().parents[1] / "datasets" / "ml-latest-small"
if not ML_DIR.is_dir():
    ML_DIR = Path("/work/shared/datasets/ml-latest-small")


def movielens_texts(folder: Path) -> list[str]:
    """One text per movie of ``movies.csv``, in file order: title, genres and unique tags."""
    tags: dict[str, list[str]] = {}
    with open(folder / "tags.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            movie_tags = tags.setdefault(row["movieId"], [])
            tag = row["tag"].strip()
            if tag and tag not in movie_tags:
                movie_tags.append(tag)
    texts = []
    with open(folder / "movies.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            genres = ", ".join(g for g in row["genres"].split("|") if g != "(no genres listed)")
            text = row["title"] + (f". Genres: {genres}" if genres else "")
            if row["movieId"] in tags:
                text += f". Tags: {', '.join(tags[row['movieId']])}"
            texts.append(text)
    return texts


def bench(texts: list[str], model: str, device: str, batch_size: int, progress: bool,
          precision: str) -> np.ndarray:
    """One cold run into a fresh cache, then the same texts again (all cache hits); returns
    the cold run's embeddings."""
    with tempfile.TemporaryDirectory(prefix="bench-text-") as cache_dir:
        t0, c0 = time.perf_counter(), time.process_time()
        cold, stats = embed_texts(texts, model, cache_dir, device, batch_size, progress,
                                  precision)
        cold_s, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        warm, hits = embed_texts(texts, model, cache_dir, device, batch_size, progress,
                                 precision)
        warm_s = time.perf_counter() - t0
    same = np.array_equal(cold, warm)
    print(
        f"{stats['precision']:<8s} batch_size={batch_size:<4d} cold: {cold_s:6.2f} s, "
        f"{len(texts) / cold_s:5.0f} items/s "
        f"(model load included, encoded={stats['encoded']}, cpu={cold_cpu:.0f} s, "
        f"loadavg={os.getloadavg()[0]:.1f}) | cached: {warm_s:.3f} s "
        f"(encoded={hits['encoded']}, cached={hits['cached']}, identical={same})",
        flush=True,
    )
    return cold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ML_DIR, help="ml-latest-small folder")
    parser.add_argument("--model", default=DEFAULT_TEXT_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--batch-size",
        type=int,
        nargs="+",
        default=[64],
        choices=[32, 64, 128],
        help="one or more; each gets its own cold and cached run",
    )
    parser.add_argument("--precision", nargs="+", default=["auto"], choices=TEXT_PRECISIONS,
                        help="one or more; each gets its own runs")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N items")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    texts = movielens_texts(args.data)[: args.limit]
    t0 = time.perf_counter()
    TextEncoder(args.model, device=args.device)
    print(
        f"items={len(texts)} model={args.model} device={args.device} "
        f"threads={torch.get_num_threads()} load={time.perf_counter() - t0:.2f} s "
        f"loadavg={os.getloadavg()[0]:.2f}",
        flush=True,
    )
    reference = None
    for precision in args.precision:
        for batch_size in args.batch_size:
            emb = bench(texts, args.model, args.device, batch_size, args.progress, precision)
            if precision == "float32" and reference is None:
                reference = emb
            if reference is not None:
                cosine = (emb * reference).sum(1)
                print(f"  cosine to the first float32 run: min {cosine.min():.6f}, "
                      f"mean {cosine.mean():.6f}", flush=True)


if __name__ == "__main__":
    main()
