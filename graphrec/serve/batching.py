"""Micro-batching: concurrent requests for known users, scored as one matrix product.

Requests with the same parameters (include_seen, tail_boost) and the same model form a batch
(at most ``max_batch`` users, the longest k asked), scored on one scoring thread by
``Recommender.recommend_batch``; each request gets its own list, cut to its k. While the
scoring thread is busy the next batches fill, so under load they grow by themselves; when it
is idle a batch goes at once (with ``window_s`` > 0, after waiting that long for
companions), so a lone request waits for nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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
        self._pending: dict[tuple, list[tuple[str, int, asyncio.Future]]] = {}
        self._recommenders: dict[tuple, Recommender] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        # One scoring thread: products run one after another (torch releases the GIL, so the
        # event loop keeps reading requests meanwhile), never two fighting for the cores.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="graphrec-scoring")

    async def submit(self, rec: Recommender, user: str, k: int, include_seen: bool = False,
                     tail_boost: float | None = None) -> list[Recommendation]:
        """``rec.recommend(user, k, include_seen, tail_boost=tail_boost)``, batched. The
        user must be known to ``rec`` (check with ``rec.user_index`` first)."""
        loop = asyncio.get_running_loop()
        key = (id(rec), include_seen, tail_boost)
        future: asyncio.Future = loop.create_future()
        self._pending.setdefault(key, []).append((user, k, future))
        self._recommenders[key] = rec
        if not self._busy and self._timer is None:
            # call_soon: requests read in this turn of the loop still join the batch.
            self._timer = (loop.call_later(self.window_s, self._run) if self.window_s > 0
                           else loop.call_soon(self._run))
        return await future

    def _run(self) -> None:
        """Score the oldest waiting batch on the scoring thread; the next one when it ends."""
        self._timer = None
        if self._busy or not self._pending:
            return
        key = next(iter(self._pending))
        batch = self._pending[key][:self.max_batch]
        rest = self._pending[key][self.max_batch:]
        rec = self._recommenders[key]
        if rest:
            self._pending[key] = rest
        else:
            del self._pending[key], self._recommenders[key]
        if self.on_batch is not None:
            self.on_batch(len(batch))
        _, include_seen, tail_boost = key
        users = [user for user, _, _ in batch]
        k = max(k for _, k, _ in batch)
        self._busy = True
        work = asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: rec.recommend_batch(users, k, include_seen=include_seen,
                                                        tail_boost=tail_boost))
        work.add_done_callback(lambda done: self._done(done, batch))

    def _done(self, done: asyncio.Future, batch: list) -> None:
        self._busy = False
        _deliver(done, batch)
        self._run()  # what queued up meanwhile goes now, as one batch

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _deliver(done: asyncio.Future, batch: list[tuple[str, int, asyncio.Future]]) -> None:
    """Hand each request its list (cut to its k), or the batch's exception."""
    error = done.exception()
    for n, (_, k, future) in enumerate(batch):
        if future.done():  # the client went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(done.result()[n][:k])
