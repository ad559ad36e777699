"""build-graph on a synthetic log: CSV against Parquet, rows per second and peak memory.

    python experiments/bench_ingest.py --rows 10000000
    python experiments/bench_ingest.py --rows 1000000 3000000 --workdir /tmp/ingest

The log has Gowalla's interactions per user and per item (about 27 and 20) with Zipf-like
item popularity, integer ids, a rating and a timestamp column. It is written once per size
(not timed); each row of the table is then one fresh process that runs ``build_graph`` (no
text, per-user random split) on the file and reports its own wall time and peak RSS. "final
arrays" is what the graph keeps per interaction (user and item int64, fold int8).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from graphrec.build import BuildConfig, build_graph
g = build_graph(BuildConfig(interactions=sys.argv[1], no_text=True, seed=0), sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": int(len(g.users)),
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_log(rows: int, folder: Path) -> tuple[Path, Path]:
    """The synthetic log as CSV and Parquet (kept between calls)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    csv_path, pq_path = folder / f"log-{rows}.csv", folder / f"log-{rows}.parquet"
    if csv_path.exists() and pq_path.exists():
        return csv_path, pq_path
    rng = np.random.default_rng(0)
    users_n, items_n = max(rows // 27, 1), max(rows // 20, 1)
    users = rng.integers(0, users_n, rows)
    items = np.minimum(rng.zipf(1.3, rows) - 1, items_n - 1)
    items = rng.permutation(items_n)[items]  # popular ids scattered, not first
    table = pa.table({"user": users, "item": items,
                      "rating": rng.integers(1, 6, rows).astype(np.float64),
                      "timestamp": rng.integers(1_200_000_000, 1_700_000_000, rows)})
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, pq_path)
    pcsv.write_csv(table, csv_path)
    return csv_path, pq_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[10_000_000])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/graphrec-ingest"))
    args = p.parse_args()
    print(f"`python experiments/bench_ingest.py {' '.join(sys.argv[1:])}`")
    print(f"- {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| rows | input | file MB | build s | rows/s | peak RSS MiB | final arrays MiB | "
          "peak / arrays | vs CSV |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rows in args.rows:
        paths = write_log(rows, args.workdir)
        base = None
        for name, path in zip(("CSV", "Parquet"), paths, strict=True):
            out = args.workdir / f"graph-{rows}-{name}"
            done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(out)],
                                  capture_output=True, text=True, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            arrays = r["rows"] * 17 / 2**20
            base = base or r["seconds"]
            print(f"| {rows:,} | {name} | {path.stat().st_size / 1e6:.0f} | "
                  f"{r['seconds']:.1f} | {rows / r['seconds']:,.0f} | {r['rss_mib']:,.0f} | "
                  f"{arrays:,.0f} | {r['rss_mib'] / arrays:.1f}× | "
                  f"{base / r['seconds']:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
