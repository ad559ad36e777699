"""Serving under load: `graphrec serve` in its own process, a cheap closed-loop load generator
(experiments/loadgen.py: asyncio streams, keep-alive, pre-encoded requests) in another.

Each variant starts its own server on a free 127.0.0.1 port; then, for each `--concurrency`,
that many clients each send a request, wait for the answer and send the next, for `--seconds`
(and at most `--max-requests` in all), after a short warm-up that is not counted: user
recommendations (`GET /v1/users/{id}/recommendations?k=20`) for users drawn uniformly from
the model's users. Variants (the server flags of each are in VARIANTS below):

- `naive`: `--cache-size 0 --no-batching --index exact`: one exact product per request, no
  cache, no batching (the reference the last column divides by);
- `batched`: `--cache-size 0`, micro-batching on (the server's default window): batching alone;
- `shipped`: the server's defaults (cache and batching); the cache warms during the run, and
  the table gives the hit rate of the counted requests (`/metrics`' graphrec_cache_total);
- `cache-hits`: the defaults, every request for one of 8 users, each asked once before the
  count starts: every counted request is a hit;
- `reload`: the defaults while `--swaps` new versions are published under the load (one
  `POST /v1/items` with X-API-Key every `--seconds / (swaps + 1)` s, on a copy of the work
  directory; one publish first, uncounted, loads the text encoder); the load runs on until
  the last publish is done. The distinct `model_version`s the answers carry count the swaps
  seen; 0 failed requests is the target;
- `1m-naive` / `1m-exact` / `1m-ann`: a synthetic catalog of `--synthetic-items` (1,000,000)
  items, dim 64 (each a trained MovieLens item embedding plus Gaussian noise of 0.3x the
  per-dimension std, so it keeps the real embedding geometry; the real users and their known
  items), cache off; no batching and exact, then batched `--index exact` / `--index ann`.
  ANN recall@k against exact over 200 sample users,
  both lists asked of the two servers (the same model directory); the index's build time and
  memory from GET /ready when the server reports them, else built here with
  graphrec.serve.index.AnnIndex.

A flag the server does not know yet (`graphrec serve --help`) is dropped with a warning, and
the row is marked. The clients run in a process of their own (`--loadgen-processes 1`); the
table's notes give the load generator's CPU per request, so that one can see it is not what
is measured (httpx cost ~2 ms of CPU a request here, loadgen ~0.1-0.3 ms).
`--server-args="--workers 2"` passes more flags to every server.

    python experiments/bench_serve.py --seconds 3 --variants naive cache-hits reload --swaps 2
    python experiments/bench_serve.py --workdir W --concurrency 2 8 32   # 60 s a row
    python experiments/bench_serve.py --workdir W --variants naive 1m-exact 1m-ann

Without --workdir a MovieLens model is trained first in a temporary folder. Prints one
markdown table (machine and command line first), ready for experiments/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import loadgen
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-serve-key"


@dataclass(frozen=True)
class Variant:
    flags: tuple[tuple[str, str], ...]
    """Server flags and their values."""
    hot_users: int = 0
    """Only this many users (0: all of them)."""
    reload: bool = False
    """Publish new versions under the load."""
    synthetic: bool = False
    """Serve the synthetic large catalog."""


VARIANTS = {
    "naive": Variant((("--cache-size", "0"), ("--no-batching", ""), ("--index", "exact"))),
    "batched": Variant((("--cache-size", "0"),)),
    "shipped": Variant(()),
    "cache-hits": Variant((), hot_users=8),
    "reload": Variant((("--api-key", KEY),), reload=True),
    "1m-naive": Variant((("--cache-size", "0"), ("--no-batching", ""), ("--index", "exact")),
                        synthetic=True),
    "1m-exact": Variant((("--cache-size", "0"), ("--index", "exact")), synthetic=True),
    "1m-ann": Variant((("--cache-size", "0"), ("--index", "ann")), synthetic=True),
}
NOISE = 0.3
"""Synthetic items: a real item embedding plus N(0, (NOISE * per-dimension std)^2)."""
RECALL_USERS = 200
PUBLISH_GRACE_S = 120.0
"""How long the reload variant's load may run past --seconds waiting for the last publish."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cli(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "graphrec_cli.main", "--workdir", str(workdir), "-q", *args]


def ensure_model(workdir: Path, epochs: int) -> None:
    if (workdir / "model" / "config.json").exists():
        return
    for args in (["build-graph"], ["train", "--epochs", str(epochs)]):
        subprocess.run(cli(workdir, *args), check=True, cwd=ROOT)


def server_flags() -> set[str]:
    """The flags `graphrec serve` knows (from its --help)."""
    out = subprocess.run([sys.executable, "-m", "graphrec_cli.main", "serve", "--help"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out.stdout))


def flags_for(variant: Variant, known: set[str]) -> tuple[list[str], list[str]]:
    """(the flag list to pass, the flags dropped because the server lacks them)."""
    argv, dropped = [], []
    for flag, value in variant.flags:
        if flag in known:
            argv += [flag, value] if value else [flag]
        else:
            dropped.append(f"{flag} {value}")
    return argv, dropped


def start_server(workdir: Path, port: int, flags: list[str], log_path: Path,
                 ready_s: float) -> subprocess.Popen:
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cli(workdir, "serve", "--host", "127.0.0.1", "--port",
                                    str(port), *flags),
                                cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"bench_serve.py: the server exited with {proc.returncode}:\n"
                             + tail(log_path))
        time.sleep(0.2)
    stop_server(proc)
    raise SystemExit(f"bench_serve.py: the server was not ready in {ready_s:.0f} s:\n"
                     + tail(log_path))


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cache_counts(port: int) -> tuple[float, float] | None:
    """(hits, misses) so far from /metrics' graphrec_cache_total; None when it has none."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = dict(re.findall(r'^graphrec_cache_total\{outcome="(hit|miss)"\} (\S+)$', text,
                            re.MULTILINE))
    if not found:
        return None
    return float(found.get("hit", 0)), float(found.get("miss", 0))


def hit_rate(before: tuple | None, after: tuple | None) -> float | None:
    if after is None:
        return None
    hits = after[0] - (before[0] if before else 0)
    misses = after[1] - (before[1] if before else 0)
    return hits / (hits + misses) if hits + misses else None


class Publisher(threading.Thread):
    """``swaps`` versions through POST /v1/items, one every ``gap`` seconds."""

    def __init__(self, port: int, swaps: int, gap: float, tag: str):
        super().__init__(daemon=True)
        self.port, self.swaps, self.gap, self.tag = port, swaps, gap, tag
        self.versions: list[str] = []
        self.seconds: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def publish_one(self, client: httpx.Client, n: int) -> None:
        t0 = time.perf_counter()
        try:
            r = client.post("/v1/items", json={"items": [
                {"id": f"bench-{self.tag}-{n}", "title": f"New {n}",
                 "text": f"a new film number {n}"}]})
        except httpx.HTTPError as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            return
        self.seconds.append(time.perf_counter() - t0)
        if r.status_code == 200:
            self.versions.append(r.json()["model_version"])
        else:
            self.failures.append(f"{r.status_code}: {r.text[:200]}")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120,
                            headers={"X-API-Key": KEY})

    def run(self) -> None:
        with self.client() as client:
            for n in range(self.swaps):
                if self.stop.wait(self.gap):
                    return
                self.publish_one(client, n)


@dataclass
class Row:
    variant: str
    concurrency: int
    result: loadgen.LoadResult
    hit_rate: float | None = None
    cumulative: tuple[float | None, float | None] = (None, None)
    swaps_seen: int | None = None
    publisher: Publisher | None = None
    dropped: list[str] = field(default_factory=list)


def user_requests(users: list[str], k: int) -> loadgen.OneOf:
    return loadgen.OneOf([loadgen.get(f"/v1/users/{u}/recommendations", {"k": k})
                          for u in users])


def top_lists(port: int, users: list[str], k: int) -> list[list[str]]:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        out = []
        for user in users:
            r = client.get(f"/v1/users/{user}/recommendations", params={"k": k})
            r.raise_for_status()
            out.append([item["item"] for item in r.json()["items"]])
        return out


def run_variant(name: str, args, known: set[str], workdir: Path, users: list[str],
                logs: Path, extra: dict) -> list[Row]:
    variant = VARIANTS[name]
    flags, dropped = flags_for(variant, known)
    for flag in dropped:
        log(f"warning: {name}: `graphrec serve` has no {flag.split()[0]} yet: run without "
            f"`{flag}`")
    flags += shlex.split(args.server_args)
    served, model_flags, copy_root = workdir, [], None
    if variant.synthetic:
        model_flags = ["--model", str(extra["synthetic_dir"])]
    if variant.reload:  # it adds items: work on a copy
        copy_root = Path(tempfile.mkdtemp(prefix="graphrec-serve-reload-"))
        served = copy_root / "w"
        shutil.copytree(workdir, served, symlinks=True,
                        ignore=shutil.ignore_patterns("model-synthetic-*", "model.ckpt"))
    port = loadgen.free_port()
    log(f"{name}: starting the server ({' '.join(flags) or 'defaults'})")
    t0 = time.perf_counter()
    proc = start_server(served, port, flags + model_flags, logs / f"{name}.log",
                        ready_s=600 if variant.synthetic else 120)
    log(f"{name}: ready in {time.perf_counter() - t0:.1f} s")
    rows = []
    try:
        extra.setdefault("ready", {})[name] = httpx.get(f"http://127.0.0.1:{port}/ready",
                                                        timeout=10).json()
        pool = users[:variant.hot_users] if variant.hot_users else users
        make = user_requests(pool, args.k)
        for user in pool if variant.hot_users else []:  # one miss each: then only hits
            httpx.get(f"http://127.0.0.1:{port}/v1/users/{user}/recommendations",
                      params={"k": args.k}, timeout=30).raise_for_status()
        for c in args.concurrency:
            loadgen.run_load("127.0.0.1", port, make, concurrency=c,
                             seconds=args.warmup_seconds, max_requests=args.warmup_requests,
                             seed=args.seed + 1)
            publisher = None
            if variant.reload:
                publisher = Publisher(port, args.swaps, args.seconds / (args.swaps + 1),
                                      f"{os.getpid()}-{time.time_ns()}")
                with publisher.client() as client:  # loads the text encoder: not counted
                    publisher.publish_one(client, -1)
                publisher.versions.clear()
                publisher.seconds.clear()
            before = cache_counts(port)
            if publisher is not None:
                publisher.start()
            result = loadgen.run_load(
                "127.0.0.1", port, make, concurrency=c, seconds=args.seconds,
                max_requests=args.max_requests, seed=args.seed,
                processes=args.loadgen_processes,
                hold=publisher.is_alive if publisher else None, hold_max_s=PUBLISH_GRACE_S,
                count_field="model_version" if variant.reload else None)
            if publisher is not None:
                publisher.stop.set()
                publisher.join(timeout=PUBLISH_GRACE_S)
            after = cache_counts(port)
            row = Row(name, c, result, hit_rate(before, after),
                      (hit_rate(None, before), hit_rate(None, after)), dropped=dropped,
                      publisher=publisher)
            if variant.reload:
                row.swaps_seen = max(0, len(result.fields) - 1)
            rows.append(row)
            log(f"{name} @ {c}: {result.requests} requests, {result.rps:.0f} req/s, p50 "
                f"{result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, errors "
                f"{result.errors}")
            if proc.poll() is not None:
                log(f"{name}: the server died:\n{tail(logs / f'{name}.log')}")
                break
        if variant.synthetic and proc.poll() is None:
            sample = random.Random(args.seed).sample(users, min(RECALL_USERS, len(users)))
            extra.setdefault("lists", {})[name] = top_lists(port, sample, args.k)
    finally:
        stop_server(proc)
        if copy_root is not None:
            shutil.rmtree(copy_root, ignore_errors=True)
    return rows


# The synthetic catalog.

def _source_dir(model: Path) -> Path:
    try:  # one version whole, where the model directory keeps versions
        from graphrec.fsio import resolve_version
    except ImportError:
        return model
    return resolve_version(model)[0]


def _identity(path: Path) -> list:
    return [[name, (path / name).stat().st_size, (path / name).stat().st_mtime_ns]
            for name in ("config.json", "embeddings.npz", "items.jsonl")]


def ensure_synthetic(workdir: Path, num_items: int, seed: int) -> Path:
    """workdir/model-synthetic-N: the trained model with ``num_items`` items (reused when
    the source model and the settings are unchanged)."""
    from graphrec.artifacts import model_dir as model_dir_module
    from graphrec.artifacts.idfiles import read_id_files, write_id_files
    from graphrec.fsio import atomic_directory, write_json

    src = _source_dir(workdir / "model")
    dst = workdir / f"model-synthetic-{num_items}"
    # The loader being changed to memory-map user_emb.npy / item_emb.npy: until it does, the
    # big arrays go in embeddings.npz too (drop this once every loader reads the .npy).
    npz_embeddings = not hasattr(model_dir_module, "MAPPED_ARRAYS")
    stamp = {"source": _identity(src), "num_items": num_items, "noise": NOISE, "seed": seed,
             "npz_embeddings": npz_embeddings, "format": 1}
    try:
        if json.loads((dst / "synthetic.json").read_text()) == stamp:
            return dst
    except (OSError, ValueError):
        pass
    log(f"writing the synthetic catalog ({num_items:,} items) to {dst}")
    t0 = time.perf_counter()
    with np.load(src / "embeddings.npz", allow_pickle=False) as z:
        small = {k: z[k] for k in z.files}
    user_emb = (np.load(src / "user_emb.npy") if (src / "user_emb.npy").exists()
                else small["user_emb"]).astype(np.float32)
    real = (np.load(src / "item_emb.npy") if (src / "item_emb.npy").exists()
            else small["item_emb"]).astype(np.float32)
    n_real, dim = real.shape
    if num_items < n_real:
        raise SystemExit(f"--synthetic-items {num_items}: fewer than the model's {n_real}")
    rng = np.random.default_rng(seed)
    scale = (NOISE * real.std(axis=0)).astype(np.float32)
    item_emb = np.empty((num_items, dim), dtype=np.float32)
    item_emb[:n_real] = real  # the real items keep their indices: known.npz stays valid
    for start in range(n_real, num_items, 100_000):
        stop = min(num_items, start + 100_000)
        item_emb[start:stop] = real[rng.integers(0, n_real, stop - start)]
        item_emb[start:stop] += rng.standard_normal((stop - start, dim),
                                                    dtype=np.float32) * scale
    degree = small["item_degree"]
    arrays = {
        "item_degree": np.concatenate([degree, rng.choice(degree, num_items - n_real)]),
        "cold_items": np.concatenate([small["cold_items"],
                                      np.zeros(num_items - n_real, dtype=bool)]),
    }
    if npz_embeddings:
        arrays.update(user_emb=user_emb, item_emb=item_emb)
    user_ids, item_ids, titles, _ = read_id_files(src)
    new = range(n_real, num_items)
    config = json.loads((src / "config.json").read_text())
    config["graph"]["num_items"] = num_items
    config.pop("added_items", None)
    config["synthetic"] = stamp
    with atomic_directory(dst) as tmp:
        np.save(tmp / "user_emb.npy", user_emb)
        np.save(tmp / "item_emb.npy", item_emb)
        np.savez(tmp / "embeddings.npz", **arrays)  # no text_map: no text_emb either
        shutil.copyfile(src / "known.npz", tmp / "known.npz")
        write_id_files(tmp, user_ids, [*map(str, item_ids), *(f"syn{i}" for i in new)],
                       [*titles, *(f"Synthetic item {i}" for i in new)])
        write_json(tmp / "config.json", config)
        write_json(tmp / "synthetic.json", stamp)
    log(f"synthetic catalog written in {time.perf_counter() - t0:.1f} s")
    return dst


def offline_index(synthetic_dir: Path, k: int, users: int, seed: int) -> str:
    """Build time, memory and unmasked recall@k of graphrec.serve.index.AnnIndex, here."""
    try:
        from graphrec.serve.index import AnnIndex
    except ImportError as exc:
        return (f"ANN build time and memory: not measured (the server does not report them "
                f"and graphrec.serve.index.AnnIndex is not importable here: {exc})")
    item_emb = np.ascontiguousarray(np.load(synthetic_dir / "item_emb.npy"), dtype=np.float32)
    user_emb = np.load(synthetic_dir / "user_emb.npy")
    index = AnnIndex.build(item_emb)
    pick = np.random.default_rng(seed).choice(len(user_emb), min(users, len(user_emb)),
                                              replace=False)
    queries = np.ascontiguousarray(user_emb[pick], dtype=np.float32)
    exact = []
    for start in range(0, len(queries), 20):  # 20 x I scores at a time, not 200 x I
        scores = queries[start:start + 20] @ item_emb.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        exact += [row[np.argsort(-s[row])] for row, s in zip(top, scores, strict=True)]
    found = np.asarray(index.search(queries, k))[:, :k]
    recall = np.mean([len(set(a) & set(e)) / k for a, e in zip(found, exact, strict=True)])
    build = getattr(index, "build_seconds", math.nan)
    memory = getattr(index, "memory_bytes", math.nan)
    return (f"ANN index built in this process with AnnIndex.build (defaults): {build:.1f} s, "
            f"{memory / 2**20:.0f} MiB; its recall@{k} against numpy's exact top-{k} (no "
            f"known-item masking), {len(pick)} users: {recall:.3f}")


# The report.

def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {cores} cores ({os.cpu_count()} logical), load average {load} at start"


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        return out + (" + uncommitted changes" if dirty.strip() else "")
    except OSError:
        return "unknown"


def fmt_errors(r: loadgen.LoadResult) -> str:
    if not r.errors:
        return "0"
    return f"{r.errors} ({', '.join(f'{k}: {v}' for k, v in sorted(r.error_counts.items()))})"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def report(rows: list[Row], args, header: list[str], extra: dict, users: int) -> None:
    base = {r.concurrency: r.result.rps for r in rows if r.variant == "naive"}
    print("\n".join(header))
    print()
    print("| variant | clients | requests | req/s | p50 ms | p99 ms | p99.9 ms | max ms | "
          "errors | cache hit rate | versions swapped | req/s vs naive |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = {name: n for n, name in enumerate(VARIANTS)}
    for row in sorted(rows, key=lambda r: (r.concurrency, order[r.variant])):
        r = row.result
        ratio = f"{r.rps / base[row.concurrency]:.2f}×" if row.concurrency in base else "–"
        swaps = "–" if row.swaps_seen is None else str(row.swaps_seen)
        name = row.variant + ("†" if row.dropped else "")
        print(f"| {name} | {row.concurrency} | {r.requests} | {r.rps:.0f} | {r.p50_ms:.2f} | "
              f"{r.p99_ms:.2f} | {r.p999_ms:.2f} | {r.max_ms:.2f} | {fmt_errors(r)} | "
              f"{pct(row.hit_rate)} | {swaps} | {ratio} |")
    print()
    if rows:
        cpu = [r.result.cpu_us_per_request for r in rows]
        share = max(r.result.cpu_seconds / r.result.seconds for r in rows)
        where = {0: "in the benchmark's process", 1: "in a process of its own"}.get(
            args.loadgen_processes, f"in {args.loadgen_processes} processes of its own")
        print(f"- Load generator: experiments/loadgen.py, {rows[0].result.loop} loop, {where}; "
              f"its CPU per request {min(cpu):.0f}–{max(cpu):.0f} µs, at most "
              f"{100 * share:.0f}% of one core.")
    if "--workers" in args.server_args:
        print("- Several server workers: each keeps its own /metrics, so the cache hit rate "
              "is that of the worker that answered GET /metrics.")
    dropped = {r.variant: r.dropped for r in rows if r.dropped}
    for name, flags in dropped.items():
        print(f"- † {name} ran without `{' '.join(flags)}`: this server does not have "
              f"{'them' if len(flags) > 1 else 'it'} yet.")
    for row in rows:
        if row.variant == "shipped":
            print(f"- shipped @ {row.concurrency}: cache hit rate since the server started "
                  f"{pct(row.cumulative[0])} before the row, {pct(row.cumulative[1])} after.")
        if row.publisher is not None:
            p = row.publisher
            took = (f", each taking {min(p.seconds):.2f}–{max(p.seconds):.2f} s"
                    if p.seconds else "")
            print(f"- reload @ {row.concurrency}: {len(p.versions)} of {args.swaps} versions "
                  f"published under the load{took} (one more before it, uncounted); "
                  f"{len(row.result.fields)} distinct model_version in the answers; the load "
                  f"ran {row.result.seconds:.1f} s"
                  + (f"; publish failures: {p.failures}" if p.failures else "") + ".")
    if any(r.variant.startswith("1m") for r in rows):
        print(f"- 1m-*: synthetic catalog of {args.synthetic_items:,} items, dim 64: each a "
              f"trained MovieLens item embedding plus Gaussian noise of {NOISE}× the "
              f"per-dimension std (the real embedding geometry), the real {users} users and "
              f"their known items, no text; {extra['synthetic_dir']}.")
        rps = {(r.variant, r.concurrency): r.result.rps for r in rows}
        for c in args.concurrency:
            if ("1m-exact", c) in rps and ("1m-ann", c) in rps:
                print(f"- 1m-ann / 1m-exact throughput @ {c}: "
                      f"{rps['1m-ann', c] / rps['1m-exact', c]:.2f}×")
        lists = extra.get("lists", {})
        if "1m-exact" in lists and "1m-ann" in lists:
            k = args.k
            recall = np.mean([len(set(a) & set(e)) / max(1, len(e))
                              for a, e in zip(lists["1m-ann"], lists["1m-exact"], strict=True)])
            print(f"- ANN recall@{k} against exact, served lists (known items excluded) of "
                  f"{len(lists['1m-exact'])} sample users, both servers on the same model "
                  f"directory: {recall:.3f}")
        reported = {k: v for k, v in extra.get("ready", {}).get("1m-ann", {}).items()
                    if k not in ("ready", "model_version", "num_users", "num_items")}
        if reported:
            print(f"- 1m-ann server's /ready: {json.dumps(reported)}")
        elif "offline_index" in extra:
            print(f"- {extra['offline_index']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", type=Path, default=None,
                   help="A work directory with model/ (default: build and train one in a temp "
                        "folder on the bundled MovieLens)")
    p.add_argument("--epochs", type=int, default=20, help="epochs when training the model")
    p.add_argument("--seconds", type=float, default=60.0, help="counted seconds per row")
    p.add_argument("--max-requests", type=int, default=2_000_000, help="per row")
    p.add_argument("--concurrency", type=int, nargs="+", default=[8],
                   help="clients; several values: one row each")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--swaps", type=int, default=10, help="versions published under load")
    p.add_argument("--variants", nargs="+", default=["naive", "batched", "shipped",
                                                    "cache-hits", "reload"],
                   choices=list(VARIANTS))
    p.add_argument("--synthetic-items", type=int, default=1_000_000,
                   help="items of the 1m-* variants' catalog")
    p.add_argument("--warmup-seconds", type=float, default=1.0, help="uncounted, per row")
    p.add_argument("--warmup-requests", type=int, default=300, help="uncounted, per row")
    p.add_argument("--loadgen-processes", type=int, default=1,
                   help="processes the clients run in (0: this one)")
    p.add_argument("--server-args", default="",
                   help='more flags for every server, e.g. --server-args="--workers 2"')
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    header = [
        f"`{shlex.join(['python', 'experiments/bench_serve.py', *sys.argv[1:]])}`",
        f"- {time.strftime('%Y-%m-%d %H:%M')}, code {commit()}, Python "
        f"{platform.python_version()}",
        f"- machine: {machine()}",
    ]
    known = server_flags()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="graphrec-serve-"))
    ensure_model(workdir, args.epochs)
    users = (workdir / "model" / "users.txt").read_text(encoding="utf-8").split("\n")[:-1]
    extra: dict = {}
    if any(VARIANTS[v].synthetic for v in args.variants):
        extra["synthetic_dir"] = ensure_synthetic(workdir, args.synthetic_items, args.seed)
    header.append(f"- {len(users)} users, k={args.k}, server (`graphrec serve`, its own "
                  f"process) and load generator on the same machine; {args.seconds:g} s per "
                  f"row after a warm-up of {args.warmup_seconds:g} s / "
                  f"{args.warmup_requests} requests")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-logs-") as logs:
        for name in args.variants:
            rows += run_variant(name, args, known, workdir, users, Path(logs), extra)
    ready = extra.get("ready", {}).get("1m-ann", {})
    if "1m-ann" in args.variants and not set(ready) - {"ready", "model_version", "num_users",
                                                      "num_items"}:
        log("building the ANN index here (the server's /ready does not report it)")
        extra["offline_index"] = offline_index(extra["synthetic_dir"], args.k, RECALL_USERS,
                                               args.seed)
    print()
    report(rows, args, header, extra, len(users))


if __name__ == "__main__":
    main()
