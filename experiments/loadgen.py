"""A cheap closed-loop HTTP/1.1 load generator: asyncio streams, keep-alive, bytes in and out.

On the 2-core VM the httpx client spent about as much CPU per request as the server, so
bench_serve.py measured the client. This one does the least a client can: every request is
pre-encoded bytes (``get`` / ``post`` build them), each virtual client holds one keep-alive
connection (``asyncio.open_connection``) and reads a response as a status line, headers up to
``\\r\\n\\r\\n`` and a ``Content-Length`` body (chunked bodies are read too; a body without
either runs to the end of the connection). Hand-written rather than httpx or aiohttp because
those parse and build far more than a benchmark needs: that parsing is the cost removed.

Closed loop: ``concurrency`` clients each send a request, wait for the whole answer, send the
next, until ``seconds`` have passed or ``max_requests`` have been sent; requests in flight at
the end are finished (up to ``timeout_s``, then counted as errors). Errors: non-2xx answers
(counted per status) and connection errors, after which the client reconnects. uvloop runs
the loop when it is importable. ``processes`` > 0 runs the clients in that many processes of
their own (spawned), so that nothing else in the caller's process shares their loop.

    result = run_load("127.0.0.1", 8000, OneOf([get("/health")]), concurrency=8, seconds=5,
                      max_requests=100_000)
    print(result.rps, result.p50_ms, result.p99_ms, result.error_counts)

    python experiments/loadgen.py --seconds 3    # its own ceiling, against a trivial server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import random
import socket
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

try:  # optional: a faster event loop
    import uvloop
except ImportError:
    uvloop = None

LOOP = "uvloop" if uvloop is not None else "asyncio"
"""The event loop the clients run on."""

MakeRequest = Callable[[random.Random], bytes]
"""A client's next request, as the bytes to send, from the client's own seeded RNG."""


class ProtocolError(ValueError):
    """The server sent something this client does not read."""


def _head(method: str, path: str, headers: Mapping[str, str] | None, host: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    bad = [line for line in lines if "\r" in line or "\n" in line]
    if bad:
        raise ValueError(f"a line break inside the request line or a header: {bad[0]!r}")
    return "\r\n".join(lines)


def get(path: str, params: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None, host: str = "127.0.0.1") -> bytes:
    """The bytes of ``GET path?params`` (HTTP/1.1, keep-alive)."""
    if params:
        path = f"{path}{'&' if '?' in path else '?'}{urlencode(params)}"
    return (_head("GET", path, headers, host) + "\r\n\r\n").encode()


def post(path: str, obj: object, headers: Mapping[str, str] | None = None,
         host: str = "127.0.0.1") -> bytes:
    """The bytes of ``POST path`` with ``obj`` as a JSON body and its Content-Length."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    head = _head("POST", path, {"Content-Type": "application/json",
                                "Content-Length": str(len(body)), **(headers or {})}, host)
    return (head + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class OneOf:
    """``make_request`` drawing one of ``requests`` uniformly (picklable, for processes)."""

    requests: tuple[bytes, ...]

    def __init__(self, requests) -> None:
        object.__setattr__(self, "requests", tuple(requests))
        if not self.requests:
            raise ValueError("OneOf needs at least one request")

    def __call__(self, rng: random.Random) -> bytes:
        return self.requests[int(rng.random() * len(self.requests))]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one response. Raises ProtocolError on what is not
    HTTP/1.x, asyncio.IncompleteReadError when the connection ends early."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {head[:40]!r}")
    try:
        status = int(head[9:12])
    except ValueError:
        raise ProtocolError(f"no status code: {head[:40]!r}") from None
    lower = head.lower()
    keep = b"\r\nconnection: close" not in lower
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        n = int(lower[i + 17:lower.index(b"\r\n", i + 2)])
        return status, await reader.readexactly(n) if n else b"", keep
    if b"\r\ntransfer-encoding: chunked" in lower:
        return status, await _read_chunked(reader), keep
    if status < 200 or status in (204, 304):
        return status, b"", keep
    return status, await reader.read(), False  # the body runs to the end of the connection


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                pass
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


@dataclass
class LoadResult:
    """What one run measured. ``latencies``: seconds per answered request (any status),
    sorted; ``requests``: requests sent, answered or failed; ``errors``: non-2xx answers and
    failed requests, counted per reason in ``error_counts`` ("500", "connection", "connect",
    "timeout"); ``fields``: the values of ``count_field`` seen in 2xx bodies;
    ``cpu_seconds``: CPU time of the processes that ran the clients (in-process: of the whole
    calling process, its other threads included)."""

    requests: int
    seconds: float
    errors: int
    error_counts: dict[str, int]
    latencies: list[float]
    concurrency: int
    processes: int = 0
    loop: str = LOOP
    cpu_seconds: float = 0.0
    fields: Counter = field(default_factory=Counter)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank ``q`` quantile (0 < q <= 1) of the latencies, in ms (nan: none)."""
        if not self.latencies:
            return math.nan
        k = min(len(self.latencies) - 1, max(0, math.ceil(q * len(self.latencies)) - 1))
        return self.latencies[k] * 1000

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(0.5)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(0.99)

    @property
    def p999_ms(self) -> float:
        return self.percentile_ms(0.999)

    @property
    def max_ms(self) -> float:
        return self.percentile_ms(1.0)

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.cpu_seconds / self.requests if self.requests else math.nan


class _Run:
    """State shared by one process's clients (one event loop: no locks)."""

    def __init__(self, max_requests: int) -> None:
        self.running = True
        self.max_requests = max_requests
        self.sent = 0
        self.errors = 0


def _field_value(body: bytes, marker: bytes) -> str | None:
    """The string value after ``marker`` (``"name":"``) in a JSON body, without parsing it."""
    i = body.find(marker)
    if i < 0:
        return None
    j = body.find(b'"', i + len(marker))
    return body[i + len(marker):j].decode() if j > 0 else None


async def _client(host: str, port: int, make_request: MakeRequest, rng: random.Random,
                  run: _Run, conn: tuple | None, marker: bytes | None,
                  out: dict) -> None:
    latencies, errors, fields = out["latencies"], out["errors"], out["fields"]
    reader, writer = conn if conn else (None, None)
    perf = time.perf_counter
    try:
        while run.running and run.sent < run.max_requests:
            run.sent += 1
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                except OSError:
                    errors["connect"] += 1
                    run.errors += 1
                    await asyncio.sleep(0.01)  # the server is away: do not spin
                    continue
            data = make_request(rng)
            t0 = perf()
            try:
                writer.write(data)
                status, body, keep = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError):
                errors["connection"] += 1
                run.errors += 1
                writer.close()
                reader = writer = None
                continue
            latencies.append(perf() - t0)
            if not 200 <= status < 300:
                errors[str(status)] += 1
                run.errors += 1
            elif marker is not None:
                value = _field_value(body, marker)
                if value is not None:
                    fields[value] += 1
            if not keep:
                writer.close()
                reader = writer = None
    except asyncio.CancelledError:
        errors["timeout"] += 1  # cut off in flight after the run's end + timeout_s
        run.errors += 1
        raise
    finally:
        if writer is not None:
            writer.close()


async def run_load_async(host: str, port: int, make_request: MakeRequest, *, concurrency: int,
                         seconds: float, max_requests: int, seed: int = 0,
                         on_tick: Callable[[float, int, int], None] | None = None,
                         hold: Callable[[], bool] | None = None, hold_max_s: float = 120.0,
                         timeout_s: float = 10.0, count_field: str | None = None,
                         before_start: Callable[[], None] | None = None,
                         _rng_offset: int = 0) -> LoadResult:
    """The closed loop in the running event loop; see :func:`run_load`."""
    if concurrency < 1 or not seconds > 0 or max_requests < 1:
        raise ValueError(f"concurrency {concurrency}, seconds {seconds}, max_requests "
                         f"{max_requests}: expected >= 1, > 0, >= 1")
    try:  # every connection before the clock starts: a server that is not there fails here
        conns = await asyncio.gather(*(asyncio.open_connection(host, port)
                                       for _ in range(concurrency)))
    except OSError as exc:
        raise ConnectionError(f"loadgen: cannot connect to {host}:{port} ({exc})") from None
    if before_start is not None:
        before_start()
    run = _Run(max_requests)
    marker = f'"{count_field}":"'.encode() if count_field else None
    outs = [{"latencies": [], "errors": Counter(), "fields": Counter()}
            for _ in range(concurrency)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.ensure_future(_client(host, port, make_request,
                                           random.Random(seed * 1_000_003 + _rng_offset + i),
                                           run, conns[i], marker, outs[i]))
             for i in range(concurrency)]
    deadline, hard = t0 + seconds, t0 + seconds + hold_max_s
    next_tick = t0 + 1.0
    while not all(t.done() for t in tasks):
        now = time.perf_counter()
        if now >= deadline and not (hold is not None and now < hard and hold()):
            break
        if on_tick is not None and now >= next_tick:
            on_tick(now - t0, run.sent, run.errors)
            next_tick += 1.0
        await asyncio.sleep(0.05)
    run.running = False
    _, late = await asyncio.wait(tasks, timeout=timeout_s)
    for task in late:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    errors: Counter = Counter()
    fields: Counter = Counter()
    latencies: list[float] = []
    for out in outs:
        errors.update(out["errors"])
        fields.update(out["fields"])
        latencies += out["latencies"]
    latencies.sort()
    return LoadResult(requests=run.sent, seconds=wall, errors=sum(errors.values()),
                      error_counts=dict(errors), latencies=latencies, concurrency=concurrency,
                      cpu_seconds=cpu, fields=fields)


def _run_in_loop(coro_fn, *args, **kwargs):
    if uvloop is not None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro_fn(*args, **kwargs))
    return asyncio.run(coro_fn(*args, **kwargs))


def _child(queue, barrier, hold_event, host, port, make_request, kwargs) -> None:
    """One load process: its clients, after every process has connected; the result back."""
    try:
        hold = hold_event.is_set if hold_event is not None else None
        result = _run_in_loop(run_load_async, host, port, make_request, hold=hold,
                              before_start=lambda: barrier.wait(60), **kwargs)
        queue.put(("ok", {**result.__dict__, "latencies": array("d", result.latencies)}))
    except BaseException as exc:  # the parent says what went wrong, and does not wait
        try:
            barrier.abort()
        finally:
            queue.put(("error", f"{type(exc).__name__}: {exc}"))


def run_load(host: str, port: int, make_request: MakeRequest, *, concurrency: int,
             seconds: float, max_requests: int, seed: int = 0,
             on_tick: Callable[[float, int, int], None] | None = None,
             processes: int = 0, hold: Callable[[], bool] | None = None,
             hold_max_s: float = 120.0, timeout_s: float = 10.0,
             count_field: str | None = None) -> LoadResult:
    """Closed-loop load on ``host:port``: ``concurrency`` clients, each on one keep-alive
    connection, send ``make_request(rng)`` and wait for the answer, for ``seconds`` and at
    most ``max_requests`` requests in all.

    ``seed``: each client draws from ``random.Random`` seeded from it and its number;
    ``on_tick(elapsed_s, sent, errors)``: called about once a second (in-process only);
    ``processes``: 0 runs the clients in this process's own new event loop, n > 0 in n
    spawned processes sharing ``concurrency`` between them (``make_request`` must then
    pickle, e.g. :class:`OneOf`); ``hold``: while it returns True past ``seconds``, the load
    goes on (up to ``hold_max_s`` more), e.g. until a publisher is done; ``timeout_s``: how
    long requests in flight at the end may take; ``count_field``: a JSON string field whose
    values in 2xx bodies are counted (``LoadResult.fields``).
    """
    kwargs = dict(seconds=seconds, max_requests=max_requests, seed=seed,
                  hold_max_s=hold_max_s, timeout_s=timeout_s, count_field=count_field)
    if processes <= 0:
        return _run_in_loop(run_load_async, host, port, make_request, concurrency=concurrency,
                            on_tick=on_tick, hold=hold, **kwargs)
    if on_tick is not None:
        raise ValueError("on_tick runs in the clients' loop: only with processes=0")
    if processes > concurrency:
        raise ValueError(f"processes {processes} > concurrency {concurrency}")
    ctx = mp.get_context("spawn")  # not fork: the caller may hold threads and locks
    queue, barrier = ctx.Queue(), ctx.Barrier(processes)
    hold_event = ctx.Event() if hold is not None else None
    shares = [concurrency // processes + (p < concurrency % processes)
              for p in range(processes)]
    procs = [ctx.Process(target=_child, daemon=True,
                         args=(queue, barrier, hold_event, host, port, make_request,
                               {**kwargs, "concurrency": share, "max_requests":
                                max(1, max_requests * share // concurrency),
                                "_rng_offset": 10_007 * p}))
             for p, share in enumerate(shares)]
    for proc in procs:
        proc.start()
    stop_mirror = threading.Event()
    if hold_event is not None:  # the children see hold() through the event
        def mirror() -> None:
            while not stop_mirror.is_set():
                if hold():
                    hold_event.set()
                else:
                    hold_event.clear()
                stop_mirror.wait(0.05)

        threading.Thread(target=mirror, daemon=True).start()
    try:
        answers = [queue.get(timeout=seconds + hold_max_s + timeout_s + 120)
                   for _ in procs]
    finally:
        stop_mirror.set()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    failed = [msg for kind, msg in answers if kind == "error"]
    if failed:
        raise RuntimeError(f"loadgen: a load process failed: {failed[0]}")
    parts = [msg for _, msg in answers]
    errors: Counter = Counter()
    fields: Counter = Counter()
    latencies: list[float] = []
    for part in parts:
        errors.update(part["error_counts"])
        fields.update(part["fields"])
        latencies += part["latencies"]
    latencies.sort()
    return LoadResult(requests=sum(p["requests"] for p in parts),
                      seconds=max(p["seconds"] for p in parts), errors=sum(errors.values()),
                      error_counts=dict(errors), latencies=latencies, concurrency=concurrency,
                      processes=processes, loop=parts[0]["loop"],
                      cpu_seconds=sum(p["cpu_seconds"] for p in parts), fields=fields)


# A trivial server: the load generator's own ceiling, and the tests' counterpart.

async def trivial_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          counter: Counter | None = None) -> None:
    """HTTP/1.1 keep-alive answers: ``/status/N`` -> status N, ``/close`` -> 200 then the
    connection closed, ``/chunked`` -> a chunked 200, anything else -> 200 ``{"ok":true}``;
    ``counter`` counts requests per path."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            lower = head.lower()
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                await reader.readexactly(int(lower[i + 17:lower.index(b"\r\n", i + 2)]))
            if counter is not None:
                counter[path] += 1
            status = int(path[8:]) if path.startswith("/status/") else 200
            if path == "/chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\n{\"ok\"\r\n6\r\n:true}\r\n0\r\n\r\n")
            else:
                body = b'{"ok":true,"model_version":"v1"}'
                writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body))
            await writer.drain()
            if path == "/close":
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _serve_trivial(port: int, ready) -> None:
    async def main() -> None:
        server = await asyncio.start_server(trivial_handler, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description="The load generator's own ceiling: closed-loop "
                                "load on a trivial asyncio server in its own process (or on "
                                "--port PATH of a running one).")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-requests", type=int, default=1_000_000)
    p.add_argument("--processes", type=int, default=0)
    p.add_argument("--port", type=int, help="an HTTP server already on 127.0.0.1:PORT")
    p.add_argument("--path", default="/", help="with --port: the path to GET")
    args = p.parse_args()
    server = None
    port = args.port
    if port is None:
        ctx = mp.get_context("spawn")
        ready, port = ctx.Event(), free_port()
        server = ctx.Process(target=_serve_trivial, args=(port, ready), daemon=True)
        server.start()
        if not ready.wait(30):
            raise SystemExit("loadgen: the trivial server did not start")
    try:
        r = run_load("127.0.0.1", port, OneOf([get(args.path)]), concurrency=args.concurrency,
                     seconds=args.seconds, max_requests=args.max_requests,
                     processes=args.processes)
    finally:
        if server is not None:
            server.terminate()
            server.join(10)
    print(f"{'trivial server' if server else f'127.0.0.1:{port}{args.path}'}, {LOOP} loop, "
          f"{args.concurrency} clients, {args.processes} load processes, {os.cpu_count()} "
          f"cores: {r.requests} requests in {r.seconds:.2f} s, {r.rps:.0f} req/s, p50 "
          f"{r.p50_ms:.3f} ms, p99 {r.p99_ms:.3f} ms, errors {r.errors}, load generator CPU "
          f"{r.cpu_us_per_request:.1f} us/request")


if __name__ == "__main__":
    main()
