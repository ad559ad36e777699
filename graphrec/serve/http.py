"""The HTTP service (FastAPI): recommendations for known and new users, similar items, and new
items added from their text, over one model directory.

FastAPI's conventions: a pydantic model for every request and response (the OpenAPI page at
``/docs`` documents itself), the model held by an app-state object loaded in the lifespan,
errors mapped to JSON in one place, no work at import time. Every bad request gets a 4xx
``{"error": {"field", "value", "expected", "message"}}``, never a 500 on user input. Write
endpoints need the API key when one is set (``X-API-Key``, compared in constant time,
checked before the body is read).

Needs the ``serve`` extra (``pip install -e ".[serve]"``).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from graphrec.errors import (
    NO_VALUE,
    ArtifactError,
    GraphrecError,
    UnknownItemError,
    UnknownUserError,
)
from graphrec.serve.additems import add_items
from graphrec.serve.recommender import Recommendation, Recommender

MAX_K = 1000
"""Longest list a request may ask for."""
MAX_HISTORY = 10_000
"""Most items a new user's history may hold."""
MAX_NEW_ITEMS = 10_000
"""Most items one request may add."""


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


class AddedItemsResponse(BaseModel):
    added: int
    num_items: int
    model_version: str


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    model_version: str | None = None
    num_users: int | None = None
    num_items: int | None = None


class ErrorBody(BaseModel):
    field: str | None
    value: str | None
    expected: str | None
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def model_version(path: Path) -> str:
    """A short content hash of the model directory's serving arrays and config: it changes
    whenever a retrain or add-items publishes new embeddings or items."""
    h = hashlib.sha256()
    for name in ("config.json", "embeddings.npz", "items.jsonl"):
        with open(path / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


class ServedModel:
    """The model the service answers from, with its version; swapped whole under a lock."""

    def __init__(self, model_dir: Path, cache_dir: Path | None = None,
                 device: str | None = None):
        self.model_dir = model_dir
        self.cache_dir = cache_dir
        self.device = device
        self.recommender: Recommender | None = None
        self.version: str | None = None
        self._write_lock = threading.Lock()

    def load(self) -> None:
        recommender = Recommender.load(self.model_dir)
        version = model_version(self.model_dir)
        self.recommender, self.version = recommender, version  # readers see old or new

    def current(self) -> tuple[Recommender, str]:
        recommender, version = self.recommender, self.version
        if recommender is None or version is None:
            raise ArtifactError("the model is not loaded yet")
        return recommender, version

    def add_items(self, items: Sequence[NewItem]) -> tuple[int, int]:
        """Encode and append ``items`` to the model directory (atomically, as add-items
        does), then serve the new version."""
        with self._write_lock:
            added = add_items(self.model_dir, [i.id for i in items], [i.title for i in items],
                              [i.text for i in items], source="items",
                              cache_dir=self.cache_dir, device=self.device)
            self.load()
        return added.added, added.num_items


def _error(status: int, exc: GraphrecError) -> JSONResponse:
    body = ErrorBody(field=exc.parameter,
                     value=None if exc.value is NO_VALUE else str(exc.value),
                     expected=exc.expected, message=exc.describe())
    return JSONResponse(status_code=status, content={"error": body.model_dump()})


def _unauthorized() -> JSONResponse:
    body = ErrorBody(field="X-API-Key", value=None, expected="the service's API key",
                     message="X-API-Key: missing or wrong")
    return JSONResponse(status_code=401, content={"error": body.model_dump()})


WRITE_PATHS = ("/v1/items", "/admin/")
"""Endpoints that change what is served: they need the API key when one is set."""


_BOUNDS = {"ge": ">= {}", "gt": "> {}", "le": "<= {}", "lt": "< {}",
           "min_length": "at least {} long", "max_length": "at most {} long"}


def _expected(ctx: dict) -> str | None:
    """What a failed pydantic constraint wanted, e.g. ">= 1" (None when it says nothing)."""
    parts = [_BOUNDS[k].format(v) for k, v in ctx.items() if k in _BOUNDS]
    return ", ".join(parts) or None


_STATUS = ((UnknownUserError, 404), (UnknownItemError, 404), (ArtifactError, 503))


def create_app(model_dir: str | Path, *, api_key: str | None = None,
               cache_dir: str | Path | None = None, device: str | None = None) -> FastAPI:
    """The service over ``model_dir``. ``api_key``: required on write endpoints when set;
    ``cache_dir``: the text-embedding cache for added items; ``device``: the encoder's."""
    served = ServedModel(Path(model_dir), Path(cache_dir) if cache_dir else None, device)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served.load()
        yield

    app = FastAPI(title="graphrec", summary="Graph-based recommendations over HTTP.",
                  lifespan=lifespan, responses={400: {"model": ErrorResponse},
                                                404: {"model": ErrorResponse},
                                                422: {"model": ErrorResponse}})
    app.state.served = served

    @app.exception_handler(GraphrecError)
    async def graphrec_error(request: Request, exc: GraphrecError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 422)
        return _error(status, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":  # loc holds a byte offset, not a field
            body = ErrorBody(field=None, value=None, expected="a JSON body",
                             message=f"request body: {first.get('msg')}")
            return JSONResponse(status_code=422, content={"error": body.model_dump()})
        field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query",
                                                                           "path"))
        value = first.get("input")
        body = ErrorBody(field=field or None,
                         value=None if value is None or isinstance(value, dict) else str(value),
                         expected=_expected(first.get("ctx") or {}),
                         message=f"{field or 'request'}: {first.get('msg')}")
        return JSONResponse(status_code=422, content={"error": body.model_dump()})

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        # Before routing, so a write request without the key never has its body read.
        if (api_key is not None and request.method != "GET"
                and request.url.path.startswith(WRITE_PATHS)):
            given = request.headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return _unauthorized()
        return await call_next(request)

    def listing(recs: list[Recommendation], k: int, version: str, **where) -> Recommendations:
        return Recommendations(items=[Item(**r.as_dict()) for r in recs], k=k,
                               model_version=version, **where)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok")

    @app.get("/ready", response_model=Ready)
    def ready() -> JSONResponse | Ready:
        """Readiness: a model is loaded (503 until then)."""
        if served.recommender is None:
            return JSONResponse(status_code=503, content=Ready(ready=False).model_dump())
        rec, version = served.current()
        return Ready(ready=True, model_version=version, num_users=rec.num_users,
                     num_items=rec.num_items)

    @app.get("/v1/users/{user}/recommendations", response_model=Recommendations,
             response_model_exclude_none=True)
    def user_recommendations(
        user: str,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        diversity: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0,
        tail_boost: Annotated[float, Query(ge=0.0, le=10.0)] = 0.0,
        exclude_seen: bool = True,
    ) -> Recommendations:
        """Top-k for a known user: the same list as `graphrec recommend` gives for them."""
        rec, version = served.current()
        recs = rec.recommend(user, k, include_seen=not exclude_seen, diversity=diversity,
                             tail_boost=tail_boost)
        return listing(recs, k, version, user=user)

    @app.post("/v1/recommendations", response_model=Recommendations,
             response_model_exclude_none=True)
    def new_user_recommendations(request: NewUserRequest) -> Recommendations:
        """Top-k for a new user from their history, without retraining."""
        rec, version = served.current()
        recs = rec.recommend_new_user(request.history, request.k,
                                      include_seen=not request.exclude_seen,
                                      diversity=request.diversity,
                                      tail_boost=request.tail_boost)
        return listing(recs, request.k, version, history=request.history)

    @app.get("/v1/items/{item}/similar", response_model=Recommendations,
             response_model_exclude_none=True)
    def similar_items(item: str,
                      k: Annotated[int, Query(ge=1, le=MAX_K)] = 10) -> Recommendations:
        """The k items closest to ``item`` (cold and added items included)."""
        rec, version = served.current()
        return listing(rec.similar_items(item, k), k, version, item=item)

    @app.post("/v1/items", response_model=AddedItemsResponse)
    def new_items(request: NewItemsRequest) -> AddedItemsResponse:
        """Add items from their text, persisted atomically; recommendable at once."""
        added, num_items = served.add_items(request.items)
        return AddedItemsResponse(added=added, num_items=num_items,
                                  model_version=served.current()[1])

    return app
