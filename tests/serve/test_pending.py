"""graphrec.serve.pending: the write-ahead log of acknowledged interactions."""

from __future__ import annotations

import threading
from pathlib import Path

from graphrec.serve.pending import PendingLog


def test_records_survive_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    log = PendingLog(tmp_path / "pending")
    log.append("u1", ["a", "b"])
    log.append("u2", ["c"])
    with open(log.path, "a") as f:
        f.write('{"user": "u3", "items": ["d"')  # a crash mid-write: never acknowledged
    assert [(r["user"], r["items"]) for r in log.records()] == [("u1", ["a", "b"]),
                                                                ("u2", ["c"])]
    log.append("u4", ["e"])  # after a torn line, the next record still reads
    assert [r["user"] for r in log.records()] == ["u1", "u2", "u4"]


def test_a_take_removes_only_after_success_and_keeps_what_it_could_not_use(
        tmp_path: Path) -> None:
    log = PendingLog(tmp_path / "pending")
    log.append("u1", ["a", "b"])
    try:
        with log.take() as raw:
            assert list(raw.users) == ["u1", "u1"] and list(raw.items) == ["a", "b"]
            log.append("u2", ["c"])  # arrives during the update: a new log
            raise RuntimeError("the update failed")
    except RuntimeError:
        pass
    assert sorted(r["user"] for r in log.records()) == ["u1", "u2"]
    with log.take() as raw:
        assert sorted(set(raw.users)) == ["u1", "u2"]
    assert log.records() == [] and log.files() == []
    with log.take() as raw:
        assert raw is None


def test_appends_racing_takes_lose_nothing(tmp_path: Path) -> None:
    log = PendingLog(tmp_path / "pending")
    taken: list[str] = []
    stop = threading.Event()

    def writer(w: int) -> None:
        for k in range(200):
            log.append(f"w{w}-{k}", ["x"])

    def taker() -> None:
        while not stop.is_set():
            with log.take() as raw:
                if raw is not None:
                    taken.extend(raw.users.tolist())

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    t = threading.Thread(target=taker)
    t.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    t.join()
    with log.take() as raw:
        if raw is not None:
            taken.extend(raw.users.tolist())
    assert sorted(taken) == sorted(f"w{w}-{k}" for w in range(3) for k in range(200))
