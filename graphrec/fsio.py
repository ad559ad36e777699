"""The one atomic writer, and the JSON / JSON-lines / text-lines helpers built on it.

A file is written under an unguessable temporary name in its own folder (``mkstemp``: a
planted symlink cannot redirect it), flushed, and renamed over the target in one step; a
directory is filled under a temporary sibling and renamed into place. An interrupted write
(exception, Ctrl-C) removes the temporary and leaves the target exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from graphrec.errors import ArtifactError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Yield a file object open on a fresh temporary sibling of ``path`` (``mode`` "w" for
    text in UTF-8, "wb" for bytes); on success it replaces ``path`` in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; look like a plain open's file
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``final`` in one rename.

    On any exception (Ctrl-C included) the temporary directory is removed and ``final`` is
    left exactly as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result should look like mkdir's
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | Path, obj: object) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def read_json(path: str | Path, what: str) -> dict:
    """The JSON document at ``path``; ``what`` names the directory kind in errors."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ArtifactError(f"{what} {path.parent}: {path.name} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{what} {path}: not valid JSON ({exc})") from None


def write_jsonl(f: IO, records: Iterable[dict], ensure_ascii: bool = False) -> int:
    """Write one compact JSON document per line to the open text file ``f``; returns how
    many were written."""
    n = 0
    for record in records:
        f.write(json.dumps(record, ensure_ascii=ensure_ascii) + "\n")
        n += 1
    return n


def read_jsonl(path: str | Path) -> list[dict]:
    """Every line of a JSON-lines file, parsed."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_lines(path: str | Path, lines: Iterable[str]) -> None:
    """One string per line (each must be free of newlines)."""
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def read_lines(path: str | Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def read_versioned(path: Path, name: str, what: str, version: int, command: str) -> dict:
    """The JSON file ``name`` of the directory ``path``, whose ``format_version`` must be
    ``version``; ``command`` is what makes a new one (named in the error)."""
    if not path.is_dir():
        raise ArtifactError(f"{what} {path}: not found (run `{command}` first)")
    doc = read_json(path / name, what)
    if doc.get("format_version") != version:
        raise ArtifactError(
            f"{what} {path}: format version {doc.get('format_version')}, expected "
            f"{version}; make it again with `{command}`"
        )
    return doc
