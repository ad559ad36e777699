"""The one atomic writer, and the JSON / JSON-lines / text-lines helpers built on it.

A file is written under an unguessable temporary name in its own folder (``mkstemp``: a
planted symlink cannot redirect it), flushed, and renamed over the target in one step; a
directory (the graph, the model) is published as a version: filled under
``<dir>/versions/``, flushed to disk, then ``<dir>/current``, a relative symlink, is pointed
at it in one rename. A reader that resolved the link keeps a whole version; there is no
moment at which the directory or its files are missing, and a crash (SIGKILL, power loss)
at any step leaves the old version or the new one. An interrupted write (exception, Ctrl-C)
removes its temporary; one killed outright leaves it, for the next publish to remove.

Writers of a work directory hold its lock (:func:`exclusive_lock`): a second one is refused
in one line naming the first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import tokenize
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from graphrec.errors import ArtifactError, BusyError, GraphrecError

try:
    import fcntl
except ImportError:  # not POSIX: writers are not excluded there
    fcntl = None


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
        _fsync(path.parent)  # the rename itself survives a power cut
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


VERSIONS_KEPT = 3
"""Published versions kept (older ones are removed)."""
CURRENT = "current"
"""The link, inside a versioned directory, to the version being served."""
VERSIONS = "versions"
"""The folder, inside a versioned directory, that holds its versions."""


def versions_dir(final: str | Path) -> Path:
    """Where the versions of ``final`` live: ``final/versions``."""
    return Path(final) / VERSIONS


def resolve_version(final: str | Path) -> tuple[Path, str | None]:
    """(the directory to read, its version id) of ``final``: the version ``final/current``
    points at, or ``final`` itself and None for a plain directory (one written before
    versions, a copy made through the links, or a version directory itself)."""
    final = Path(final)
    pointer = final / CURRENT
    if pointer.is_symlink():
        target = final / os.readlink(pointer)
        return target, target.name
    return final, None


def read_consistently(final: str | Path, read):
    """``read(folder)`` of the version ``final`` points at, whole. A plain directory being
    taken over by its first published version (its files replaced by links, one by one)
    is read again from that version when one appeared during the read."""
    while True:
        source, version = resolve_version(final)
        try:
            out = read(source)
        except GraphrecError:  # a mix of old files and new links: read the version
            if version is None and resolve_version(final)[1] is not None:
                continue
            raise
        if version is not None or resolve_version(final)[1] is None:
            return out


@contextlib.contextmanager
def publish_version(final: str | Path, keep: int = VERSIONS_KEPT) -> Iterator[Path]:
    """Yield a new, empty version directory of ``final``; on success ``final/current``
    points at it in one rename, each of its files is reachable as ``final/<name>`` too (a
    link through ``current``), and all but the ``keep`` newest versions are removed (a
    process that still maps a removed version's files keeps reading them). On any exception
    (Ctrl-C included) the new version is removed and ``final`` is left exactly as it was.

    Every link is relative and inside ``final``: the directory can be moved or copied whole.
    Version ids sort by publication time (UTC, microseconds): ``20261201T231500.123456``.
    """
    final = Path(final)
    created = not final.exists()  # a first publish that fails leaves no directory at all
    store = versions_dir(final)
    store.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(store)
    _remove_old_swaps(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=store))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        _crash_point("filled", final)
        fsync_tree(tmp)
        now = time.time()
        version = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}"
        while (store / version).exists():  # two publishes in one microsecond
            version += "0"
        os.rename(tmp, store / version)
        _fsync(store)
        _crash_point("renamed", final)
    except BaseException:
        shutil.rmtree(final if created else tmp, ignore_errors=True)
        raise
    if (final / CURRENT).is_dir() and not (final / CURRENT).is_symlink():
        shutil.rmtree(final / CURRENT)  # a copy made through the links: a plain snapshot
    _swap_link(final / CURRENT, f"{VERSIONS}/{version}")
    _fsync(final)
    _crash_point("pointed", final)
    _link_files(final, store / version)
    _fsync(final)
    _crash_point("linked", final)
    _prune(store, keep, current=version)


CRASH_ENV = "GRAPHREC_CRASH_AT"
"""Test hook: the step of :func:`publish_version` at which the process kills itself
("pointed"), optionally only when publishing a directory of that name ("pointed:model")."""


def _crash_point(step: str, final: Path) -> None:
    want = os.environ.get(CRASH_ENV)
    if want in (step, f"{step}:{final.name}"):
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync(path: Path) -> None:
    """Make a file's bytes, or a directory's entries (renames, new names), durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` and every directory of it to disk."""
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder, name))
        _fsync(Path(folder))


def _remove_abandoned(store: Path) -> None:
    """Remove the temporaries of writers that died before publishing (killed outright: no
    ``finally`` ran); a live writer's is left alone."""
    for entry in store.glob(".tmp-*"):
        pid = entry.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


OLD_SWAP_AGE_S = 3600.0
"""Age beyond which a temporary of the old directory swap (before versions) is abandoned."""


def _remove_old_swaps(final: Path) -> None:
    """Remove what the directory swap of earlier releases left beside ``final`` when killed:
    ``.<name>.old-<pid>`` of a dead process, ``.<name>.tmp-*`` older than an hour."""
    for entry in final.parent.glob(f".{final.name}.old-*"):
        pid = entry.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
    for entry in final.parent.glob(f".{final.name}.tmp-*"):
        if entry.is_dir() and time.time() - entry.stat().st_mtime > OLD_SWAP_AGE_S:
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _swap_link(at: Path, target: str) -> None:
    """Make ``at`` a symlink to ``target`` in one rename (over a link or a plain file)."""
    link = at.parent / f".{at.name}.link-{os.getpid()}-{time.monotonic_ns()}"
    os.symlink(target, link)
    try:
        os.replace(link, at)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(link)
        raise


def _link_files(final: Path, version: Path) -> None:
    """``final/<name>`` -> ``current/<name>`` for each file of ``version`` (replacing the
    plain files of a directory written before versions); links to files the version no
    longer has are removed."""
    names = {p.name for p in version.iterdir()}
    for name in sorted(names):
        at = final / name
        if not (at.is_symlink() and os.readlink(at) == f"{CURRENT}/{name}"):
            if at.is_dir() and not at.is_symlink():
                shutil.rmtree(at)
            _swap_link(at, f"{CURRENT}/{name}")
    for entry in final.iterdir():
        if (entry.is_symlink() and entry.name not in names and entry.name != CURRENT
                and os.readlink(entry).startswith(f"{CURRENT}/")):
            entry.unlink()


def _prune(store: Path, keep: int, current: str) -> None:
    published = sorted(p for p in store.iterdir() if not p.name.startswith("."))
    for old in published[:-keep] if keep > 0 else published:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


LOCK_FILE = ".lock"
"""The lock file a writer holds in the folder it writes into (the work directory)."""


@contextlib.contextmanager
def exclusive_lock(folder: str | Path, holder: str) -> Iterator[None]:
    """Hold ``folder/.lock`` (``flock``) for the block; raise BusyError, naming the holder's
    pid and command, when another process holds it. ``holder`` names this one (e.g.
    "graphrec train"). The lock goes with the process, however it ends (SIGKILL included);
    the file stays (removing it would race with the next writer)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
                raise BusyError(f"in use by {other or 'another process'}; wait for it to "
                                "finish, or stop it", parameter="workdir", value=folder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({holder})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to the file ``src`` (published versions never change in
    place), or a copy where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


ARTIFACT_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
                        SyntaxError, tokenize.TokenError, NotImplementedError, RuntimeError)
"""What reading a damaged array, archive or id file raises (truncated, empty, garbage; numpy
parses a .npy header as a Python literal, hence the syntax errors; zipfile meets a damaged
entry's compression method or encryption flag as NotImplementedError / RuntimeError)."""


def unreadable(exc: BaseException) -> str:
    """One line saying why an artefact file could not be read; never numpy's or torch's
    advice to allow pickles, which would run whatever a planted file holds."""
    text = str(exc).strip()
    if "pickle" in text:
        return "not a plain array file: it holds pickled objects, which graphrec never loads"
    if isinstance(exc, EOFError) or not text:
        return f"empty or cut short ({type(exc).__name__})"
    return text.splitlines()[0][:200]


def write_json(path: str | Path, obj: object) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def read_json(path: str | Path, what: str, keys: tuple[str, ...] = ()) -> dict:
    """The JSON object at ``path``, which must hold ``keys``; ``what`` names the directory
    kind in errors."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ArtifactError(f"{what} {path.parent}: {path.name} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{what} {path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{what} {path}: a JSON {type(doc).__name__}, expected an object")
    _check_keys(doc, keys, path, what)
    return doc


def _check_keys(doc: dict, keys: tuple[str, ...], path: Path, what: str) -> None:
    missing = [k for k in keys if k not in doc]
    if missing:
        raise ArtifactError(f"{what} {path}: no {', '.join(missing)}; it is damaged or from "
                            "another program")


def write_jsonl(f: IO, records: Iterable[dict], ensure_ascii: bool = False) -> int:
    """Write one compact JSON document per line to the open text file ``f``; returns how
    many were written."""
    n = 0
    for record in records:
        f.write(json.dumps(record, ensure_ascii=ensure_ascii) + "\n")
        n += 1
    return n


def read_jsonl(path: str | Path) -> list[dict]:
    """Every line of a JSON-lines file, parsed: as one JSON array, which the C decoder reads
    about 5x faster than line by line (a million-item catalog's items.jsonl in under 2 s);
    a file that is not clean JSON lines is read line by line, so the error is the line's."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    try:
        rows = json.loads("[" + ",".join(lines) + "]")
        if len(rows) == len(lines):
            return rows
    except ValueError:
        pass
    return [json.loads(line) for line in lines]


def write_lines(path: str | Path, lines: Iterable[str]) -> None:
    """One string per line (each must be free of newlines)."""
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def read_lines(path: str | Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def read_versioned(path: Path, name: str, what: str, version: int, command: str,
                   keys: tuple[str, ...] = ()) -> dict:
    """The JSON file ``name`` of the directory ``path``, whose ``format_version`` must be
    ``version`` and which must hold ``keys``; ``command`` is what makes a new one (named in
    the error)."""
    if not path.is_dir():
        raise ArtifactError(f"{what} {path}: not found (run `{command}` first)")
    doc = read_json(path / name, what)
    if doc.get("format_version") != version:
        raise ArtifactError(
            f"{what} {path}: format version {doc.get('format_version')}, expected "
            f"{version}; make it again with `{command}`"
        )
    _check_keys(doc, keys, path / name, what)
    return doc
