"""experiments/loadgen.py against a trivial asyncio HTTP server on a free loopback port:
requests counted, non-2xx answers counted as errors per status, a reconnect after the server
closes the connection, chunked bodies, the request bytes."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
_spec = importlib.util.spec_from_file_location("loadgen", EXPERIMENTS / "loadgen.py")
loadgen = sys.modules.setdefault("loadgen", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(loadgen)


@pytest.fixture
def server() -> Iterator[tuple[int, Counter]]:
    """(port, requests per path) of loadgen's trivial server, in a thread of its own."""
    counter: Counter = Counter()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder = {}

    async def start() -> None:
        holder["server"] = await asyncio.start_server(
            lambda r, w: loadgen.trivial_handler(r, w, counter), "127.0.0.1", 0)
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()),
                                              loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(5)
    yield holder["server"].sockets[0].getsockname()[1], counter
    loop.call_soon_threadsafe(holder["server"].close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_requests_are_counted_and_bounded(server) -> None:
    port, counter = server
    r = loadgen.run_load("127.0.0.1", port, loadgen.OneOf([loadgen.get("/a", {"k": 20})]),
                         concurrency=4, seconds=5, max_requests=300, count_field="model_version")
    assert r.requests == 300 == counter["/a?k=20"] == len(r.latencies)
    assert r.errors == 0 and r.error_counts == {}
    assert r.fields == {"v1": 300}
    assert r.latencies == sorted(r.latencies)
    assert 0 < r.p50_ms <= r.p99_ms <= r.p999_ms <= r.max_ms
    assert r.seconds < 5 and r.rps > 0 and r.loop in ("asyncio", "uvloop")


def test_non_2xx_counted_per_status(server) -> None:
    port, counter = server
    make = loadgen.OneOf([loadgen.get("/status/500"), loadgen.get("/status/404"),
                          loadgen.get("/ok")])
    r = loadgen.run_load("127.0.0.1", port, make, concurrency=2, seconds=5, max_requests=200,
                         seed=1)
    assert r.requests == 200
    assert r.error_counts == {"500": counter["/status/500"], "404": counter["/status/404"]}
    assert r.errors == 200 - counter["/ok"] > 0


def test_reconnects_after_the_server_closes(server) -> None:
    port, counter = server
    # /close answers, then closes: the next request on that connection fails (counted),
    # and the client goes on over a new connection.
    make = loadgen.OneOf([loadgen.get("/close"), loadgen.get("/ok"), loadgen.get("/chunked")])
    r = loadgen.run_load("127.0.0.1", port, make, concurrency=2, seconds=5, max_requests=200)
    assert r.requests == 200
    assert set(r.error_counts) == {"connection"} and r.errors > 5
    assert counter["/close"] > 5 and counter["/ok"] > 5 and counter["/chunked"] > 5
    assert r.requests == sum(counter.values()) + r.errors


def test_seconds_bound_the_run(server) -> None:
    port, _ = server
    r = loadgen.run_load("127.0.0.1", port, loadgen.OneOf([loadgen.get("/")]), concurrency=2,
                         seconds=0.3, max_requests=10**9)
    assert 0.3 <= r.seconds < 1.5 and r.errors == 0


def test_clients_in_a_process_of_their_own(server, monkeypatch) -> None:
    port, counter = server
    monkeypatch.syspath_prepend(str(EXPERIMENTS))  # the spawned process imports loadgen
    r = loadgen.run_load("127.0.0.1", port, loadgen.OneOf([loadgen.get("/p")]), concurrency=2,
                         seconds=5, max_requests=100, processes=1, hold=lambda: False)
    assert r.requests == 100 == counter["/p"] == len(r.latencies) and r.processes == 1


def test_no_server_fails_loudly() -> None:
    with pytest.raises(ConnectionError, match="cannot connect"):
        loadgen.run_load("127.0.0.1", loadgen.free_port(), loadgen.OneOf([loadgen.get("/")]),
                         concurrency=1, seconds=1, max_requests=1)


def test_request_bytes() -> None:
    assert loadgen.get("/v1/users/7/recommendations", {"k": 20}) == (
        b"GET /v1/users/7/recommendations?k=20 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    raw = loadgen.post("/v1/items", {"items": [{"id": "x"}]}, {"X-API-Key": "s"})
    head, body = raw.split(b"\r\n\r\n")
    assert json.loads(body) == {"items": [{"id": "x"}]}
    assert f"Content-Length: {len(body)}".encode() in head and b"X-API-Key: s" in head
    with pytest.raises(ValueError, match="line break"):
        loadgen.get("/a\r\nEvil: 1")
