"""Serving under load: `graphrec serve` in its own process, a closed-loop load generator here.

Each variant starts the server on a free 127.0.0.1 port, then `--concurrency` clients
(httpx.AsyncClient) each send a request, wait for the answer and send the next, for
`--seconds` (and at most `--max-requests` in all): user recommendations (k=20) for users drawn
uniformly from the model's users. Variants:

- `cached`: the server as shipped (response cache on);
- `no-cache`: `--cache-size 0`, one exact product per request (the naive reference);
- `cache-hits`: the cached server, every request for one of 8 users (after one warm-up each);
- `reload`: the cached server while `--swaps` new versions are published and swapped in under
  the load (one `POST /v1/items` every `--seconds / (swaps + 1)` s, on a copy of the work
  directory): every failed request counts.

    python experiments/bench_serve.py                        # trains a MovieLens model first
    python experiments/bench_serve.py --workdir graphrec-run --seconds 60

Prints one table (requests/s, p50/p99/max latency, errors) and the ratio to no-cache.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_model(workdir: Path, epochs: int) -> None:
    if (workdir / "model" / "config.json").exists():
        return
    for args in (["build-graph"], ["train", "--epochs", str(epochs)]):
        subprocess.run([sys.executable, "-m", "graphrec_cli.main", "--workdir", str(workdir),
                        "-q", *args], check=True, cwd=ROOT)


def start_server(workdir: Path, port: int, extra: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "graphrec_cli.main", "--workdir",
                             str(workdir), "-q", "serve", "--port", str(port), *extra],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"bench_serve.py: the server exited with {proc.returncode}")
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("bench_serve.py: the server did not become ready in 60 s")


KEY = "bench-serve-key"


async def publish(port: int, args) -> list[str]:
    """``args.swaps`` new versions through POST /v1/items, evenly over the run; their
    model_version."""
    versions = []
    gap = args.seconds / (args.swaps + 1)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                 headers={"X-API-Key": KEY}) as client:
        for n in range(args.swaps):
            await asyncio.sleep(gap)
            r = await client.post("/v1/items", json={"items": [
                {"id": f"bench-new-{n}", "title": f"New {n}", "text": f"a new film number {n}"}]})
            r.raise_for_status()
            versions.append(r.json()["model_version"])
    return versions


async def load(port: int, users: list[str], args, seed: int) -> dict:
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0
    sent = 0
    stop_at = time.perf_counter() + args.seconds
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                 timeout=10) as client:
        async def worker() -> None:
            nonlocal errors, sent
            while time.perf_counter() < stop_at and sent < args.max_requests:
                sent += 1
                user = rng.choice(users)
                t0 = time.perf_counter()
                try:
                    r = await client.get(f"/v1/users/{user}/recommendations",
                                         params={"k": args.k})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        t0 = time.perf_counter()
        tasks = [worker() for _ in range(args.concurrency)]
        if args.variant == "reload":
            tasks.append(publish(port, args))
        results = await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    swaps = len(set(results[-1])) if args.variant == "reload" else 0
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {"requests": len(ms), "seconds": wall, "rps": len(ms) / wall, "errors": errors,
            "swaps": swaps,
            "p50": statistics.median(ms), "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
            "max": ms[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", type=Path, default=None,
                   help="A work directory with model/ (default: build and train one in a temp "
                        "folder on the bundled MovieLens)")
    p.add_argument("--epochs", type=int, default=20, help="epochs when training the model")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-requests", type=int, default=200_000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--swaps", type=int, default=10, help="versions published under load")
    p.add_argument("--variants", nargs="+", default=["no-cache", "cached", "cache-hits",
                                                    "reload"],
                   choices=["no-cache", "cached", "cache-hits", "reload"])
    args = p.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="graphrec-serve-"))
    ensure_model(workdir, args.epochs)
    users = (workdir / "model" / "users.txt").read_text(encoding="utf-8").split("\n")[:-1]
    rows = {}
    for variant in args.variants:
        args.variant = variant
        port = free_port()
        served = workdir
        extra = ["--cache-size", "0"] if variant == "no-cache" else []
        if variant == "reload":  # it adds items: work on a copy
            served = Path(tempfile.mkdtemp(prefix="graphrec-serve-reload-")) / "w"
            shutil.copytree(workdir, served)
            extra = ["--api-key", KEY]
        proc = start_server(served, port, extra)
        try:
            pool = users[:8] if variant == "cache-hits" else users
            if variant == "cache-hits":  # one miss each, so that every counted request hits
                for user in pool:
                    httpx.get(f"http://127.0.0.1:{port}/v1/users/{user}/recommendations",
                              params={"k": args.k}, timeout=10)
            rows[variant] = asyncio.run(load(port, pool, args, seed=0))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        r = rows[variant]
        print(f"{variant}: {r['requests']} requests in {r['seconds']:.1f} s, "
              f"{r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
              f"errors {r['errors']}" + (f", {r['swaps']} versions swapped in"
                                         if variant == "reload" else ""), flush=True)
    base = rows.get("no-cache")
    print(f"\n{len(users)} users, k={args.k}, {args.concurrency} concurrent clients, "
          f"{args.seconds:g} s per variant, server and load generator on one machine")
    print("| variant | requests | req/s | p50 ms | p99 ms | max ms | errors | versions swapped "
          "in | req/s vs no-cache |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        ratio = f"{r['rps'] / base['rps']:.2f}×" if base else "–"
        print(f"| {name} | {r['requests']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
              f"| {r['max']:.2f} | {r['errors']} | {r['swaps']} | {ratio} |")


if __name__ == "__main__":
    main()
