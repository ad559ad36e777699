"""Batch recommendations for every user: one process against N, JSON lines against Parquet.

    python experiments/bench_batch_output.py --workdir W          # W/graph and W/model
    python experiments/bench_batch_output.py --workdir W --nproc 2 --k 20

Each row runs the command line as a user would (`graphrec recommend --all-users ...`, so the
start-up and model load are included), with its wall seconds, users per second, the output's
size and the speed against the first row. Runs one after another, never at once.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(workdir: Path, out: Path, extra: list[str]) -> tuple[float, int]:
    command = [sys.executable, "-m", "graphrec_cli", "--workdir", str(workdir), "recommend",
               "--all-users", "--output", str(out), *extra]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.is_dir() \
        else out.stat().st_size
    return seconds, size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--k", type=int, default=20)
    args = p.parse_args()
    from graphrec.serve import Recommender

    users = Recommender.load(args.workdir / "model").num_users
    k = ["-k", str(args.k)]
    rows = [("1 process, JSON lines", "all.jsonl", k),
            ("1 process, Parquet", "all.parquet", [*k, "--format", "parquet"]),
            (f"{args.nproc} processes, JSON lines", "parts-jsonl", [*k, "--nproc",
                                                                   str(args.nproc)]),
            (f"{args.nproc} processes, Parquet", "parts-parquet",
             [*k, "--nproc", str(args.nproc), "--format", "parquet"])]
    print(f"`python experiments/bench_batch_output.py {' '.join(sys.argv[1:])}`")
    print(f"- {time.strftime('%Y-%m-%d %H:%M')}, {users} users, k={args.k}\n")
    print("| run | wall s | users/s | output MB | vs first |")
    print("|---|---|---|---|---|")
    tmp = Path(tempfile.mkdtemp())
    try:
        first = None
        for name, target, extra in rows:
            seconds, size = timed(args.workdir, tmp / target, extra)
            first = first or seconds
            print(f"| {name} | {seconds:.1f} | {users / seconds:,.0f} | {size / 1e6:.1f} | "
                  f"{first / seconds:.2f}× |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
