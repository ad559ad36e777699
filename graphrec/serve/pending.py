"""The pending-interactions log: interactions the service acknowledged and folded in live,
kept on disk until `graphrec update` takes them into the graph and a new model version.

Write-ahead: ``POST /v1/interactions`` appends its record and flushes it to disk (fsync)
before it answers, so a crash loses nothing it acknowledged; a record cut short by a crash
mid-write was never acknowledged and is skipped when read. Appends hold an ``flock`` on the
file and check that the path still names the file they opened; :meth:`PendingLog.take` first
renames the log aside (new appends start a fresh one), then waits for the appends that had
it open, so every record lands either in what was taken or in the new log, never in neither.
Taken files are removed only once the update that read them has published; one left by a
crash is read again by the next update and by a service that starts (records are sets of
pairs: reading one twice adds nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from graphrec.data.io import RawInteractions

try:
    import fcntl
except ImportError:  # not POSIX: appends are not excluded from a take there
    fcntl = None

LOG_NAME = "interactions.jsonl"
TAKEN_SUFFIX = ".taken.jsonl"


def pending_dir(model_dir: str | Path) -> Path:
    """Where the log of the model directory ``model_dir`` lives: beside it, in
    ``<parent>/pending/`` (the work directory's)."""
    return Path(model_dir).parent / "pending"


class PendingLog:
    """The log in ``folder`` (created on first append)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOG_NAME

    def append(self, user: str, items: Sequence[str]) -> None:
        """Append one record ``{"user", "items", "at"}`` durably (fsync before returning)."""
        line = json.dumps({"user": user, "items": list(items), "at": round(time.time(), 3)},
                          ensure_ascii=True) + "\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # taken between our open and our lock: write to the new log
                    continue
                size = os.fstat(fd).st_size
                torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
                # A record cut short by a crash ends without a newline: start on a line of
                # our own, or this record would be read as part of it.
                os.write(fd, (b"\n" if torn else b"") + line.encode())
                os.fsync(fd)
                return
            finally:
                os.close(fd)

    def files(self) -> list[Path]:
        """Taken files a crash left (oldest first), then the log itself, those that exist."""
        taken = sorted(self.folder.glob(f"*{TAKEN_SUFFIX}")) if self.folder.is_dir() else []
        return [*taken, *([self.path] if self.path.exists() else [])]

    def records(self, files: Sequence[Path] | None = None) -> list[dict]:
        """The records of ``files`` (default :meth:`files`); a line that does not parse (a
        record cut short by a crash, never acknowledged) is skipped."""
        out = []
        for path in self.files() if files is None else files:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if (isinstance(rec, dict) and isinstance(rec.get("user"), str)
                            and isinstance(rec.get("items"), list)):
                        out.append(rec)
        return out

    @contextlib.contextmanager
    def take(self) -> Iterator[RawInteractions | None]:
        """Yield every pending interaction as one batch (None when there is none); the files
        are removed when the block ends without an exception, and kept for the next take
        otherwise."""
        if self.path.exists():
            taken = self.folder / f"{time.time_ns():020d}-{os.getpid()}{TAKEN_SUFFIX}"
            while taken.exists():  # never over an earlier take's file
                taken = taken.with_name("0" + taken.name)
            os.replace(self.path, taken)
            if fcntl is not None:  # wait for appends that opened it before the rename
                with open(taken, "rb") as f:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        files = [p for p in self.files() if p.name.endswith(TAKEN_SUFFIX)]
        records = self.records(files)
        users = [r["user"] for r in records for _ in r["items"]]
        items = [str(i) for r in records for i in r["items"]]
        yield (RawInteractions(np.asarray(users, dtype=str), np.asarray(items, dtype=str),
                               source=str(self.path)) if users else None)
        for path in files:
            path.unlink(missing_ok=True)
