"""Atomic writes and the graph directory (written by build-graph, read by train).

Everything is plain JSON, text and ``.npy``/``.npz`` arrays loaded with ``allow_pickle=False``.
A directory is filled under a temporary name and renamed into place, so an interrupted write
never leaves a directory that loads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graphrec.data import TEST, TRAIN, VALID, Csr
from graphrec.errors import ArtifactError

GRAPH_FORMAT_VERSION = 1


@contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``final`` in one rename.

    On any exception (Ctrl-C included) the temporary directory is removed and ``final`` is
    left exactly as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the result should look like mkdir's
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
    """Write JSON via a temporary file and rename (atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str | Path, what: str) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ArtifactError(f"{what} {path.parent}: {path.name} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{what} {path}: not valid JSON ({exc})") from None


def write_lines(path: Path, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


@dataclass
class GraphData:
    """Everything build-graph produces, in index space.

    ``users``/``items``/``folds``: [n] int64/int64/int8 interactions with their fold
    (TRAIN, VALID, TEST); ``cold_items``: [I] bool items held out of training;
    ``text_emb``: [I, d] float32 L2-normalised item text embeddings (zero rows for items
    without text), or None with --no-text.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    item_titles: list[str]
    item_texts: list[str]
    users: np.ndarray
    items: np.ndarray
    folds: np.ndarray
    cold_items: np.ndarray
    text_emb: np.ndarray | None
    meta: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def fold_pairs(self, *folds: int) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) [n] int64 of the interactions in any of ``folds``."""
        mask = np.isin(self.folds, folds)
        return self.users[mask], self.items[mask]

    def csr(self, *folds: int) -> Csr:
        u, i = self.fold_pairs(*folds)
        return Csr.from_pairs(u, i, self.num_users)

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.fold_pairs(TRAIN)

    def train_item_degree(self) -> np.ndarray:
        """[I] int64 number of training interactions per item."""
        return np.bincount(self.train[1], minlength=self.num_items)

    def has_valid(self) -> bool:
        return bool((self.folds == VALID).any())

    def has_test(self) -> bool:
        return bool((self.folds == TEST).any())


def save_graph(graph: GraphData, path: str | Path) -> None:
    """Write ``graph`` to the directory ``path`` atomically."""
    with atomic_directory(path) as tmp:
        np.savez(tmp / "interactions.npz", users=graph.users, items=graph.items,
                 folds=graph.folds, cold_items=graph.cold_items)
        if graph.text_emb is not None:
            np.save(tmp / "text_emb.npy", graph.text_emb.astype(np.float32))
        write_lines(tmp / "users.txt", [str(u) for u in graph.user_ids])
        with open(tmp / "items.jsonl", "w", encoding="utf-8") as f:
            for rid, title, text in zip(graph.item_ids, graph.item_titles, graph.item_texts,
                                        strict=True):
                f.write(json.dumps({"id": str(rid), "title": title, "text": text},
                                   ensure_ascii=False) + "\n")
        write_json(tmp / "stats.json", graph.stats)
        write_json(tmp / "meta.json", graph.meta)


def read_versioned(path: Path, name: str, what: str, version: int, command: str) -> dict:
    """The JSON file ``name`` of the directory ``path``, whose ``format_version`` must be
    ``version``; ``command`` is what makes a new one."""
    if not path.is_dir():
        raise ArtifactError(f"{what} {path}: not found (run `{command}` first)")
    doc = read_json(path / name, what)
    if doc.get("format_version") != version:
        raise ArtifactError(
            f"{what} {path}: format version {doc.get('format_version')}, expected "
            f"{version}; make it again with `{command}`"
        )
    return doc


def load_graph(path: str | Path) -> GraphData:
    """Read a graph directory written by :func:`save_graph`."""
    path = Path(path)
    meta = read_versioned(path, "meta.json", "graph directory", GRAPH_FORMAT_VERSION,
                          "graphrec build-graph")
    try:
        with np.load(path / "interactions.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("users", "items", "folds", "cold_items")}
        text_emb = None
        if (path / "text_emb.npy").exists():
            text_emb = np.load(path / "text_emb.npy", allow_pickle=False)
        user_ids = np.asarray(read_lines(path / "users.txt"), dtype=str)
        with open(path / "items.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"graph directory {path}: unreadable ({exc})") from None
    stats = read_json(path / "stats.json", "graph directory")
    graph = GraphData(
        user_ids=user_ids,
        item_ids=np.asarray([r["id"] for r in rows], dtype=str),
        item_titles=[r["title"] for r in rows],
        item_texts=[r["text"] for r in rows],
        text_emb=text_emb, meta=meta, stats=stats, **arrays,
    )
    if graph.num_users != meta["num_users"] or graph.num_items != meta["num_items"]:
        raise ArtifactError(
            f"graph directory {path}: {graph.num_users} users / {graph.num_items} items on disk, "
            f"meta.json says {meta['num_users']} / {meta['num_items']}"
        )
    return graph
