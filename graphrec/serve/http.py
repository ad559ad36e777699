"""The HTTP service (FastAPI): recommendations for known and new users, similar items, and new
items added from their text, over one model directory.

FastAPI's conventions: a pydantic model for every request and response (the OpenAPI page at
``/docs`` documents itself), the model held by an app-state object loaded in the lifespan,
errors mapped to JSON in one place, no work at import time. Every bad request gets a 4xx
``{"error": {"field", "value", "expected", "message"}}``, never a 500 on user input. Write
endpoints need the API key when one is set (``X-API-Key``, compared in constant time,
checked before the body is read).

Responses are cached per (model version, request) in a TTL'd LRU (cachetools; a cached GET is
answered before routing);
a new version (``POST /admin/reload``, SIGHUP, ``POST /v1/items``) is served at once and
in-flight requests finish on the one they started with. ``/metrics`` speaks Prometheus.
Concurrent requests for known users are micro-batched (``graphrec.serve.batching``): scored
as one matrix product on a scoring thread. The model directory is watched for a new version
(``watch_s``); the arrays are memory-mapped, so several worker processes share
one copy. Needs the ``serve`` extra (``pip install -e ".[serve]"``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from cachetools import TTLCache
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)
from pydantic import BaseModel, Field
from starlette.datastructures import Headers

from graphrec.errors import (
    NO_VALUE,
    ArtifactError,
    BusyError,
    ConfigError,
    GraphrecError,
    UnknownItemError,
    UnknownUserError,
    check_positive_int,
    check_range,
)
from graphrec.fsio import exclusive_lock, resolve_version
from graphrec.serve.additems import add_items
from graphrec.serve.batching import BATCH_WINDOW_S, MAX_BATCH, MicroBatcher
from graphrec.serve.explain import explain
from graphrec.serve.pending import PendingLog, pending_dir
from graphrec.serve.recommender import Recommendation, Recommender

MAX_K = 1000
"""Longest list a request may ask for."""
MAX_HISTORY = 10_000
"""Most items a new user's history may hold."""
MAX_NEW_ITEMS = 10_000
"""Most items one request may add."""
CACHE_SIZE = 100_000
"""Responses kept by default (per model version, endpoint and parameters)."""
CACHE_TTL_S = 300.0
"""Seconds a cached response lives by default."""
WATCH_S = 2.0
"""How often the model directory is checked for a new version by default."""
MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest request body accepted by default (10,000 items with their text fit)."""

log = logging.getLogger(__name__)


class Item(BaseModel):
    """One recommended item."""

    item: str = Field(description="Raw item id.")
    title: str = Field(description="Item title ('' when the data has none).")
    score: float = Field(description="Model score (higher is better).")


class Recommendations(BaseModel):
    """A ranked list and the model version that made it."""

    items: list[Item]
    k: int
    model_version: str
    user: str | None = None
    history: list[str] | None = None
    item: str | None = None


class NewUserRequest(BaseModel):
    """Recommendations for a user the model has not seen, from the items they liked."""

    history: list[str] = Field(min_length=1, max_length=MAX_HISTORY,
                               description="Raw ids of items the user liked.")
    k: int = Field(10, ge=1, le=MAX_K, description="List length.")
    diversity: float = Field(0.0, ge=0.0, le=1.0, description="MMR weight (0: relevance).")
    tail_boost: float = Field(0.0, ge=0.0, le=10.0, description="Long-tail lift.")
    exclude_seen: bool = Field(True, description="Leave the history's items out.")


class NewItem(BaseModel):
    """An item to add: placed from its text alone."""

    id: str = Field(min_length=1, description="Raw item id, new to the model.")
    text: str = Field(min_length=1, description="Text the encoder places the item from.")
    title: str = Field("", description="Title shown in recommendations.")


class NewItemsRequest(BaseModel):
    items: list[NewItem] = Field(min_length=1, max_length=MAX_NEW_ITEMS)


class NewInteractionsRequest(BaseModel):
    """Interactions of one user, folded in at once and kept for the next `graphrec update`."""

    user: str = Field(min_length=1, max_length=512,
                      description="Raw user id; an id the model does not have adds the user.")
    items: list[str] = Field(min_length=1, max_length=MAX_HISTORY,
                             description="Raw ids of items (known to the model) the user took.")


class InteractionsResponse(BaseModel):
    user: str
    accepted: int = Field(description="Interactions the user did not have yet.")
    new_user: bool
    model_version: str = Field(description="The served version, with +N after N live "
                                           "fold-ins since it was loaded.")


class AddedItemsResponse(BaseModel):
    added: int
    num_items: int
    model_version: str


class Reloaded(BaseModel):
    model_version: str
    changed: bool


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    model_version: str | None = None
    num_users: int | None = None
    num_items: int | None = None
    index: str | None = Field(None, description='Retrieval: "exact" or "ann" (faiss).')
    index_build_s: float | None = Field(None, description="Seconds the ANN index took to build.")
    index_bytes: int | None = Field(None, description="Memory of the ANN index.")


class ErrorBody(BaseModel):
    field: str | None
    value: str | None
    expected: str | None
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


VERSIONED_FILES = ("config.json", "embeddings.npz", "items.jsonl")
"""The files whose identity names a model version."""


def model_version(path: Path) -> str:
    """The version ``path`` points at (``graphrec.fsio.publish_version``); for a plain
    directory written before versions, a short hash of its serving files' identity (size,
    modification time, inode), without reading arrays of hundreds of MB a second time."""
    source, version = resolve_version(path)
    if version is not None:
        return version
    h = hashlib.sha256()
    for name in VERSIONED_FILES:
        st = (source / name).stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino};".encode())
    return h.hexdigest()[:12]


class ServedModel:
    """The model the service answers from, with its version; swapped whole under a lock."""

    def __init__(self, model_dir: Path, cache_dir: Path | None = None,
                 device: str | None = None, index: str = "exact", score_device: str = "cpu"):
        self.model_dir = model_dir
        self.cache_dir = cache_dir
        self.device = device
        self.index = index
        self.score_device = score_device
        self.recommender: Recommender | None = None
        self.version: str | None = None
        self.live = 0
        """Live fold-ins since the version was loaded (``POST /v1/interactions``)."""
        self.pending = PendingLog(pending_dir(model_dir))
        self._write_lock = threading.Lock()

    def load(self) -> None:
        source, version = resolve_version(self.model_dir)  # one version whole, even mid-publish
        version = version or model_version(source)
        recommender = Recommender.load(source, index=self.index, device=self.score_device)
        live = self._replay(recommender)
        self.recommender, self.version, self.live = recommender, version, live

    def _replay(self, recommender: Recommender) -> int:
        """Fold the pending log's interactions (acknowledged, not yet in a version) into a
        freshly loaded recommender; returns how many records changed something."""
        changed = 0
        for rec in self.pending.records():
            items = [i for i in map(str, rec["items"]) if i in recommender._item_index]
            if items:
                try:
                    changed += recommender.fold_in_user(rec["user"], items)[0] > 0
                except ArtifactError as exc:  # a model without fold-in arrays: say it once
                    log.warning("pending interactions not folded in: %s", exc.describe())
                    return changed
        return changed

    def add_interactions(self, user: str, items: Sequence[str]) -> tuple[int, bool]:
        """Log ``user``'s interactions durably, then fold them in; unknown items are refused
        before anything is written."""
        with self._write_lock:
            recommender, _ = self.current()
            for item in items:
                recommender.item_index(item, "items")
            recommender.check_fold_in()  # a model that cannot fold in refuses before the log
            self.pending.append(user.strip(), list(items))
            accepted, new = recommender.fold_in_user(user, items)
            self.live += accepted > 0
        return accepted, new

    def changed_on_disk(self) -> bool:
        """Whether the directory now holds another version than the one served (cheap: a
        link read, or three stats for a plain directory)."""
        try:
            return model_version(self.model_dir) != self.version
        except OSError:  # mid-publish of a plain directory: look again next time
            return False

    @property
    def label(self) -> str | None:
        """The version, and +N after N live fold-ins since it was loaded."""
        version, live = self.version, self.live
        return None if version is None else f"{version}+{live}" if live else version

    def current(self) -> tuple[Recommender, str]:
        """The recommender and the version label it answers with: the version, and +N after
        N live fold-ins (each changes what some user is recommended)."""
        recommender, version, live = self.recommender, self.version, self.live
        if recommender is None or version is None:
            raise ArtifactError("the model is not loaded yet")
        return recommender, f"{version}+{live}" if live else version

    def reload(self) -> bool:
        """Load the model directory again; True when its version changed. Requests already
        running finish on the model they started with."""
        with self._write_lock:
            before = self.version
            self.load()
            return self.version != before

    def add_items(self, items: Sequence[NewItem]) -> tuple[int, int]:
        """Encode and append ``items`` to the model directory (atomically, as add-items
        does), then serve the new version."""
        with self._write_lock, exclusive_lock(self.model_dir.parent, "graphrec serve"):
            added = add_items(self.model_dir, [i.id for i in items], [i.title for i in items],
                              [i.text for i in items], source="items",
                              cache_dir=self.cache_dir, device=self.device)
            self.load()
        return added.added, added.num_items


def _error_response(status: int, message: str, field: str | None = None,
                    value: str | None = None, expected: str | None = None) -> JSONResponse:
    """The one shape of every error the service sends: ``{"error": ErrorBody}``."""
    body = ErrorBody(field=field, value=value, expected=expected, message=message)
    return JSONResponse(status_code=status, content={"error": body.model_dump()})


def _library_error(status: int, exc: GraphrecError) -> JSONResponse:
    return _error_response(status, exc.describe(), exc.parameter,
                           None if exc.value is NO_VALUE else str(exc.value), exc.expected)


WRITE_PATHS = ("/v1/items", "/v1/interactions", "/admin/")
"""Endpoints that change what is served: they need the API key when one is set."""


_BOUNDS = {"ge": ">= {}", "gt": "> {}", "le": "<= {}", "lt": "< {}",
           "min_length": "at least {} long", "max_length": "at most {} long"}


def _expected(ctx: dict) -> str | None:
    """What a failed pydantic constraint wanted, e.g. ">= 1" (None when it says nothing)."""
    parts = [_BOUNDS[k].format(v) for k, v in ctx.items() if k in _BOUNDS]
    return ", ".join(parts) or None


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


async def _send_json(send, body: bytes, version: str | None) -> None:
    """A 200 JSON response straight to the ASGI server (a cached one)."""
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if version is not None:
        headers.append((b"x-model-version", version.encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _refusal(scope: dict, api_key: str | None, max_body: int) -> JSONResponse | None:
    """The answer to a request refused before it is routed, else None: a write without the
    API key (401), a body without a length (411) or longer than ``max_body`` bytes (413)."""
    method = scope["method"]
    if method == "GET":
        return None
    headers = Headers(scope=scope)
    if api_key is not None and scope["path"].startswith(WRITE_PATHS):
        given = headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            return _error_response(401, "X-API-Key: missing or wrong", "X-API-Key",
                                   expected="the service's API key")
    if method in ("POST", "PUT", "PATCH"):
        return _body_refusal(headers, max_body)
    return None


def _body_refusal(headers: Headers, limit: int) -> JSONResponse | None:
    """A 411 / 413 for a body without a length or longer than ``limit`` bytes (checked
    before it is read), else None."""
    length = headers.get("content-length")
    if length is None:
        if "chunked" in headers.get("transfer-encoding", ""):
            return _error_response(411, "Content-Length: required (no chunked bodies)",
                                   "Content-Length", expected="the body's length in bytes")
        return None
    if not length.isdigit() or int(length) > limit:
        return _error_response(413, f"request body: {length} bytes is too large",
                               "Content-Length", length, f"at most {limit} bytes")
    return None


_STATUS = ((UnknownUserError, 404), (UnknownItemError, 404), (BusyError, 409),
           (ArtifactError, 503))


def create_app(model_dir: str | Path, *, api_key: str | None = None,
               cache_dir: str | Path | None = None, device: str | None = None,
               cache_size: int = CACHE_SIZE, cache_ttl: float = CACHE_TTL_S,
               index: str = "exact", batching: bool = True,
               batch_window_s: float = BATCH_WINDOW_S,
               max_batch: int = MAX_BATCH, watch_s: float = WATCH_S,
               max_body_bytes: int = MAX_BODY_BYTES, score_device: str = "cpu") -> FastAPI:
    """The service over ``model_dir``. ``api_key``: required on write endpoints when set;
    ``cache_dir``: the text-embedding cache for added items; ``device``: the encoder's;
    ``cache_size`` / ``cache_ttl``: the response cache (0 entries: none); ``index``:
    retrieval, exact or ANN (``Recommender.load``); ``batching``, ``batch_window_s``,
    ``max_batch``: the micro-batcher (``graphrec.serve.batching``; off: one product per
    request, on the event loop); ``watch_s``: seconds between checks
    for a new version (0: only on reload or SIGHUP); ``max_body_bytes``: the body limit;
    ``score_device``: where scores are computed (``Recommender.load``)."""
    if cache_size < 0 or not cache_ttl > 0:
        raise ConfigError("the cache needs a size >= 0 and a positive time to live",
                          parameter="cache_size" if cache_size < 0 else "cache_ttl",
                          value=cache_size if cache_size < 0 else cache_ttl)
    check_range("watch_s", watch_s, 0.0, 3600.0)
    check_positive_int("max_body_bytes", max_body_bytes)
    served = ServedModel(Path(model_dir), Path(cache_dir) if cache_dir else None, device, index,
                         score_device)
    metrics = _Metrics()
    batcher = (MicroBatcher(batch_window_s, max_batch, metrics.batch.observe)
               if batching else None)
    cache: TTLCache | None = TTLCache(cache_size, cache_ttl) if cache_size > 0 else None
    cache_lock = threading.Lock()

    def now_serving() -> None:
        """After a (possibly) new version: report it, and drop the old version's cached
        responses (the version is in every key, so this only frees them)."""
        metrics.version.info({"version": served.version or ""})
        if cache is not None:
            with cache_lock:
                cache.clear()

    def reload() -> bool:
        changed = served.reload()
        if changed:
            now_serving()
        return changed

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served.load()
        now_serving()
        loop = asyncio.get_running_loop()
        try:  # SIGHUP reloads the model (only where the loop owns the main thread)
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, reload))
        except (NotImplementedError, RuntimeError, ValueError):
            log.debug("no SIGHUP handler here (not the main thread)")
        stop = threading.Event()
        if watch_s > 0:
            threading.Thread(target=watch, args=(stop,), name="graphrec-watch",
                             daemon=True).start()
        yield
        stop.set()
        if batcher is not None:
            batcher.close()

    def watch(stop: threading.Event) -> None:
        """Serve each new version the directory gets, ``watch_s`` after it lands."""
        while not stop.wait(watch_s):
            if served.changed_on_disk():
                try:
                    reload()
                except GraphrecError as exc:  # keep serving the old one; say why
                    log.warning("new model version not loaded: %s", exc.describe())

    def lookup(key: tuple):
        if cache is None:
            return None
        with cache_lock:
            hit = cache.get(key)
        metrics.cache.labels("miss" if hit is None else "hit").inc()
        return hit

    def store(key: tuple, value):
        if cache is not None:
            with cache_lock:
                cache[key] = value
        return value

    def cached(key: tuple, compute) -> Response:
        hit = lookup(key)
        return _json(hit if hit is not None else store(key, compute()))

    app = FastAPI(title="graphrec", summary="Graph-based recommendations over HTTP.",
                  lifespan=lifespan, responses={400: {"model": ErrorResponse},
                                                404: {"model": ErrorResponse},
                                                422: {"model": ErrorResponse}})
    app.state.served = served

    @app.exception_handler(GraphrecError)
    async def graphrec_error(request: Request, exc: GraphrecError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 422)
        return _library_error(status, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":  # loc holds a byte offset, not a field
            return _error_response(422, f"request body: {first.get('msg')}",
                                   expected="a JSON body")
        field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query",
                                                                           "path"))
        value = first.get("input")
        return _error_response(
            422, f"{field or 'request'}: {first.get('msg')}", field or None,
            None if value is None or isinstance(value, dict) else str(value),
            _expected(first.get("ctx") or {}))

    class Gate:
        """One plain ASGI middleware (Starlette's decorator form costs a task and two
        streams per request): the key is checked before routing, so a write request without
        it never has its body read; the body's length before it is read; a GET under /v1/
        is answered from the response cache when it can be, before routing, validation and
        scoring; then the model version on every response, and latency and status per
        endpoint."""

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            t0 = time.perf_counter()
            refused = _refusal(scope, api_key, max_body_bytes)
            if refused is not None:
                metrics.requests.labels("refused", str(refused.status_code)).inc()
                return await refused(scope, receive, send)
            version = served.label  # the one the endpoint will read, bar a swap in between
            key = None
            if cache is not None and scope["method"] == "GET" and scope["path"][:4] == "/v1/":
                key = (version, scope["path"], scope["query_string"])
                hit = lookup(key)
                if hit is not None:
                    body, endpoint = hit
                    await _send_json(send, body, version)
                    metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
                    metrics.requests.labels(endpoint, "200").inc()
                    return
            status, chunks = 500, []

            async def send_with_version(message):
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    if version is not None:
                        message["headers"] = [*message.get("headers", ()),
                                              (b"x-model-version", version.encode())]
                elif key is not None:
                    chunks.append(message.get("body", b""))
                await send(message)

            await self.app(scope, receive, send_with_version)
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            if key is not None and status == 200:
                store(key, (b"".join(chunks), endpoint))
            metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
            metrics.requests.labels(endpoint, str(status)).inc()

    app.add_middleware(Gate)

    def listing(recs: list[Recommendation], k: int, version: str, **where) -> bytes:
        """The JSON of :class:`Recommendations`, built directly: the response model documents
        it (``/docs``), and a test holds the two to the same shape, but validating our own
        output on every request would cost more than scoring it. Cached as it is sent."""
        doc = {"items": [r.as_dict() for r in recs], "k": k, "model_version": version, **where}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok")

    @app.get("/ready", response_model=Ready)
    async def ready() -> JSONResponse | Ready:
        """Readiness: a model is loaded (503 until then)."""
        if served.recommender is None:
            return JSONResponse(status_code=503, content=Ready(ready=False).model_dump())
        rec, version = served.current()
        ann = rec.ann
        return Ready(ready=True, model_version=version, num_users=rec.num_users,
                     num_items=rec.num_items, index=rec.index,
                     index_build_s=None if ann is None else round(ann.build_seconds, 3),
                     index_bytes=None if ann is None else ann.memory_bytes)

    @app.get("/v1/users/{user}/recommendations", response_model=Recommendations,
             response_model_exclude_none=True)
    async def user_recommendations(
        user: str,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        diversity: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0,
        tail_boost: Annotated[float, Query(ge=0.0, le=10.0)] = 0.0,
        exclude_seen: bool = True,
    ) -> Response:
        """Top-k for a known user: the same list as `graphrec recommend` gives for them."""
        rec, version = served.current()
        if batcher is None or diversity > 0:  # MMR's greedy picks are per list
            recs = rec.recommend(user, k, include_seen=not exclude_seen, diversity=diversity,
                                 tail_boost=tail_boost)
        else:
            rec.user_index(user)  # an unknown user fails alone, not the batch
            recs = await batcher.submit(rec, user, k, include_seen=not exclude_seen,
                                        tail_boost=tail_boost)
        return _json(listing(recs, k, version, user=user))

    @app.post("/v1/recommendations", response_model=Recommendations,
             response_model_exclude_none=True)
    async def new_user_recommendations(request: NewUserRequest) -> Response:
        """Top-k for a new user from their history, without retraining."""
        rec, version = served.current()
        r = request
        return cached(
            (version, "new", tuple(r.history), r.k, r.diversity, r.tail_boost, r.exclude_seen),
            lambda: listing(rec.recommend_new_user(r.history, r.k, include_seen=not r.exclude_seen,
                                                   diversity=r.diversity,
                                                   tail_boost=r.tail_boost),
                            r.k, version, history=r.history))

    @app.get("/v1/items/{item}/similar", response_model=Recommendations,
             response_model_exclude_none=True)
    async def similar_items(item: str,
                      k: Annotated[int, Query(ge=1, le=MAX_K)] = 10) -> Response:
        """The k items closest to ``item`` (cold and added items included)."""
        rec, version = served.current()
        return _json(listing(rec.similar_items(item, k), k, version, item=item))

    @app.get("/v1/users/{user}/recommendations/{item}/explanation")
    async def explanation(user: str, item: str,
                          k: Annotated[int, Query(ge=1, le=MAX_K)] = 5) -> Response:
        """Why ``item`` scores as it does for ``user``: the exact share of each history item
        (``self`` + the contributions = ``score``), paths through other users, and for an
        item without interactions its text neighbours (what `graphrec explain` prints as
        JSON)."""
        rec, version = served.current()
        body = explain(rec, user, item, k).as_dict()
        return _json(json.dumps({**body, "model_version": version}).encode())

    @app.post("/admin/reload", response_model=Reloaded)
    def admin_reload() -> Reloaded:
        """Serve the model directory's current version (also on SIGHUP)."""
        changed = reload()
        return Reloaded(model_version=served.current()[1], changed=changed)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """Prometheus text format: requests and latency per endpoint, cache hits, version."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/interactions", response_model=InteractionsResponse)
    def new_interactions(request: NewInteractionsRequest) -> InteractionsResponse:
        """Fold a user's new interactions in at once (the next request for the user reflects
        them) and log them durably for the next `graphrec update`, before answering."""
        accepted, new = served.add_interactions(request.user, request.items)
        if accepted:
            now_serving()
        return InteractionsResponse(user=request.user, accepted=accepted, new_user=new,
                                    model_version=served.current()[1])

    @app.post("/v1/items", response_model=AddedItemsResponse)
    def new_items(request: NewItemsRequest) -> AddedItemsResponse:
        """Add items from their text, persisted atomically; recommendable at once."""
        added, num_items = served.add_items(request.items)
        now_serving()
        return AddedItemsResponse(added=added, num_items=num_items,
                                  model_version=served.current()[1])

    return app


class _Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("graphrec_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("graphrec_request_seconds", "Request latency by endpoint",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25, 0.5, 1.0, 2.5))
        self.cache = Counter("graphrec_cache", "Response cache lookups by outcome", ["outcome"],
                             registry=self.registry)
        self.version = Info("graphrec_model", "The model version being served",
                            registry=self.registry)
        self.batch = Histogram("graphrec_batch_size", "Users scored in one product",
                               registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))


CONFIG_ENV = "GRAPHREC_SERVE_CONFIG"
"""Environment variable carrying create_app's arguments (JSON) to each worker process."""


def app_from_env() -> FastAPI:
    """The app a worker process builds (``uvicorn --factory``) from ``GRAPHREC_SERVE_CONFIG``,
    which the command line sets for several workers: uvicorn starts them from an import string,
    so the arguments travel as JSON."""
    try:
        kwargs = json.loads(os.environ[CONFIG_ENV])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{CONFIG_ENV} must hold the service's settings as JSON ({exc})",
                          parameter=CONFIG_ENV) from None
    return create_app(kwargs.pop("model_dir"), **kwargs)
