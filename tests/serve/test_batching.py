"""graphrec.serve.batching: concurrent requests scored as one product give each request the
list it would get alone, cut to its own k; a failure reaches every request of its batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from graphrec.errors import ConfigError
from graphrec.serve.batching import MicroBatcher
from graphrec.serve.recommender import Recommender


def lists(recs) -> list[tuple[str, float]]:
    return [(r.item, round(r.score, 5)) for r in recs]


def test_concurrent_requests_get_their_own_lists(trained: Path) -> None:
    rec = Recommender.load(trained / "model")
    sizes: list[int] = []
    batcher = MicroBatcher(window_s=0.005, max_batch=16, on_batch=sizes.append)
    users = [str(u) for u in rec.user_ids]
    ks = [1 + n % 7 for n in range(len(users))]  # different k in one batch

    async def everyone():
        pairs = zip(users, ks, strict=True)
        return await asyncio.gather(*(batcher.submit(rec, u, k) for u, k in pairs))

    try:
        got = asyncio.run(everyone())
    finally:
        batcher.close()
    for user, k, recs in zip(users, ks, got, strict=True):
        assert lists(recs) == lists(rec.recommend(user, k))
    assert sum(sizes) == len(users) and max(sizes) == 16  # full batches, none lost


def test_parameters_split_batches_and_errors_reach_every_request(trained: Path) -> None:
    rec = Recommender.load(trained / "model")
    sizes: list[int] = []
    batcher = MicroBatcher(window_s=0.005, on_batch=sizes.append)
    user = str(rec.user_ids[0])

    async def mixed():
        return await asyncio.gather(batcher.submit(rec, user, 5),
                                    batcher.submit(rec, user, 5, include_seen=True),
                                    batcher.submit(rec, user, 5, tail_boost=2.0))

    async def failing():
        return await asyncio.gather(batcher.submit(rec, "no-such-user", 5),
                                    batcher.submit(rec, user, 5), return_exceptions=True)

    try:
        plain, seen, boosted = asyncio.run(mixed())
        outcomes = asyncio.run(failing())
    finally:
        batcher.close()
    assert lists(plain) == lists(rec.recommend(user, 5))
    assert lists(seen) == lists(rec.recommend(user, 5, include_seen=True))
    assert lists(boosted) == lists(rec.recommend(user, 5, tail_boost=2.0))
    assert sizes[:3] == [1, 1, 1]  # three parameter sets, three products
    assert all(isinstance(o, Exception) and "no-such-user" in str(o) for o in outcomes)


@pytest.mark.parametrize(("window", "size"), [(-0.1, 8), (2.0, 8), (0.001, 0)])
def test_bad_settings_name_themselves(window: float, size: int) -> None:
    with pytest.raises(ConfigError, match="batch_window|max_batch"):
        MicroBatcher(window, size)
