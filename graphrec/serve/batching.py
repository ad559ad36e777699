"""Micro-batching: concurrent requests for known users, scored as one matrix product.

Requests with the same parameters (include_seen, tail_boost) and the same model form a batch
(at most ``max_batch`` users, the longest k asked), scored by ``Recommender.recommend_batch``
on the event loop; each request gets its own list, cut to its k. A batch is scored once the
requests the loop has read in this turn have joined it (or after ``window_s``, when > 0), so
a lone request waits for nothing, and under load, while one batch is being scored, the
requests arriving meanwhile wait in the sockets and form the next batch by themselves.

Scoring on the loop rather than on a thread of its own: with two threads, each hand-over of
the interpreter lock can wait out its switch interval (5 ms), which costs more than it saves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from graphrec.errors import check_positive_int, check_range
from graphrec.serve.recommender import Recommendation, Recommender

BATCH_WINDOW_S = 0.0
"""How long a request waits for companions when the scoring thread is idle, by default."""
MAX_BATCH = 64
"""Most users scored in one product by default."""


class MicroBatcher:
    """Groups concurrent ``submit`` calls into ``recommend_batch`` calls (see the module)."""

    def __init__(self, window_s: float = BATCH_WINDOW_S, max_batch: int = MAX_BATCH,
                 on_batch: Callable[[int], None] | None = None):
        check_range("batch_window", window_s, 0.0, 1.0)
        check_positive_int("max_batch", max_batch)
        self.window_s = window_s
        self.max_batch = max_batch
        self.on_batch = on_batch
        """Called with each batch's size (metrics)."""
        # (model, include_seen, tail_boost) -> the model and the waiting (user, k, future)s
        self._pending: dict[tuple, tuple[Recommender, list]] = {}
        self._timer: asyncio.Handle | None = None

    async def submit(self, rec: Recommender, user: str, k: int, include_seen: bool = False,
                     tail_boost: float | None = None) -> list[Recommendation]:
        """``rec.recommend(user, k, include_seen, tail_boost=tail_boost)``, batched. The
        user must be known to ``rec`` (check with ``rec.user_index`` first)."""
        loop = asyncio.get_running_loop()
        key = (id(rec), include_seen, tail_boost)
        future: asyncio.Future = loop.create_future()
        self._pending.setdefault(key, (rec, []))[1].append((user, k, future))
        if self._timer is None:
            # call_soon: runs after the requests read in this turn of the loop have joined.
            self._timer = (loop.call_later(self.window_s, self._run) if self.window_s > 0
                           else loop.call_soon(self._run))
        return await future

    def _run(self) -> None:
        """Score every waiting batch, ``max_batch`` users at a time."""
        self._timer = None
        while self._pending:
            key, (rec, waiting) = next(iter(self._pending.items()))
            batch, rest = waiting[:self.max_batch], waiting[self.max_batch:]
            if rest:
                self._pending[key] = (rec, rest)
            else:
                del self._pending[key]
            if self.on_batch is not None:
                self.on_batch(len(batch))
            _, include_seen, tail_boost = key
            try:
                lists = rec.recommend_batch([user for user, _, _ in batch],
                                            max(k for _, k, _ in batch),
                                            include_seen=include_seen, tail_boost=tail_boost)
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets it
                _deliver(batch, error=exc)
            else:
                _deliver(batch, lists=lists)

    def close(self) -> None:
        """Fail what still waits (the server is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, batch in self._pending.values():
            _deliver(batch, error=RuntimeError("the server is stopping"))
        self._pending.clear()


def _deliver(batch: list[tuple[str, int, asyncio.Future]], lists: list | None = None,
             error: BaseException | None = None) -> None:
    """Hand each request its list (cut to its k), or the batch's exception."""
    for n, (_, k, future) in enumerate(batch):
        if future.done():  # the client went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(lists[n][:k])
