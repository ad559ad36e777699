"""The graph directory (written by build-graph, read by train and evaluate).

Files: interactions.npz (users, items, folds, cold_items), text_emb.npy (item text
embeddings, when built with text), users.txt and items.jsonl (raw ids, titles, text),
stats.json and meta.json (counts, split settings, seed, source hashes, text model).
Everything is plain JSON, text and ``.npy``/``.npz`` arrays loaded with ``allow_pickle=False``;
each build publishes a new version of the directory (:func:`graphrec.fsio.publish_version`,
the previous one kept), read whole by :func:`load_graph` even while another lands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graphrec.artifacts.idfiles import (
    ITEMS_FILE,
    USERS_FILE,
    read_id_files,
    write_id_files,
    write_items_file,
    write_users_file,
)
from graphrec.data.csr import Csr
from graphrec.data.split import TEST, TRAIN, VALID
from graphrec.errors import ArtifactError
from graphrec.fsio import (
    ARTIFACT_READ_ERRORS,
    link_or_copy,
    publish_version,
    read_consistently,
    read_json,
    read_versioned,
    unreadable,
    write_json,
)

GRAPH_FORMAT_VERSION = 1


@dataclass
class GraphData:
    """Everything build-graph produces, in index space.

    ``users``/``items``/``folds``: [n] int64/int64/int8 interactions with their fold
    (TRAIN, VALID, TEST); ``cold_items``: [I] bool items held out of training;
    ``text_emb``: [I, d] float32 L2-normalised item text embeddings (zero rows for items
    without text), or None for a graph built without text.
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


GRAPH_VERSIONS_KEPT = 2
"""Graph versions kept: the new one and the one before (graphs can be large)."""


def save_graph(graph: GraphData, path: str | Path, same_as: Path | None = None,
               same_users: bool = False, same_items: bool = False) -> None:
    """Publish ``graph`` as a new version of the directory ``path``, atomically (the
    previous version is kept: a reader that started on it finishes). ``same_as``: a version
    folder whose users (``same_users``) or items, their text and text embeddings
    (``same_items``) are this graph's too: those files are linked, not written again."""
    with publish_version(path, keep=GRAPH_VERSIONS_KEPT) as tmp:
        np.savez(tmp / "interactions.npz", users=graph.users, items=graph.items,
                 folds=graph.folds, cold_items=graph.cold_items)
        if same_as is not None and same_items:
            for name in ("text_emb.npy", ITEMS_FILE):
                if (same_as / name).exists():
                    link_or_copy(same_as / name, tmp / name)
        elif graph.text_emb is not None:
            np.save(tmp / "text_emb.npy", graph.text_emb.astype(np.float32, copy=False))
        if same_as is not None and same_users:
            link_or_copy(same_as / USERS_FILE, tmp / USERS_FILE)
            if not same_items:
                write_items_file(tmp, graph.item_ids, graph.item_titles, graph.item_texts)
        elif same_as is not None and same_items:
            write_users_file(tmp, graph.user_ids)
        else:
            write_id_files(tmp, graph.user_ids, graph.item_ids, graph.item_titles,
                           graph.item_texts)
        write_json(tmp / "stats.json", graph.stats)
        write_json(tmp / "meta.json", graph.meta)


def _fits(arrays: dict, num_users: int, num_items: int) -> bool:
    """Whether the interaction arrays agree in length and index only known users and items."""
    users, items = arrays["users"], arrays["items"]
    if len(items) != len(users) or len(arrays["folds"]) != len(users):
        return False
    if len(arrays["cold_items"]) != num_items:
        return False
    return not len(users) or bool(0 <= users.min() and users.max() < num_users
                                  and 0 <= items.min() and items.max() < num_items)


def load_graph(path: str | Path) -> GraphData:
    """Read a graph directory written by :func:`save_graph` (its current version)."""
    return read_consistently(path, _load_graph)


def _load_graph(path: Path) -> GraphData:
    meta = read_versioned(path, "meta.json", "graph directory", GRAPH_FORMAT_VERSION,
                          "graphrec build-graph", keys=("num_users", "num_items"))
    try:
        with np.load(path / "interactions.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("users", "items", "folds", "cold_items")}
        text_emb = None
        if (path / "text_emb.npy").exists():
            text_emb = np.load(path / "text_emb.npy", allow_pickle=False)
        user_ids, item_ids, titles, texts = read_id_files(path)
        if texts is None and len(item_ids):
            raise KeyError("text")  # a graph directory keeps every item's text
    except ARTIFACT_READ_ERRORS as exc:
        raise ArtifactError(f"graph directory {path}: unreadable ({unreadable(exc)})") from None
    stats = read_json(path / "stats.json", "graph directory")
    graph = GraphData(
        user_ids=user_ids,
        item_ids=item_ids, item_titles=titles,
        item_texts=texts or [],
        text_emb=text_emb, meta=meta, stats=stats, **arrays,
    )
    if graph.num_users != meta["num_users"] or graph.num_items != meta["num_items"]:
        raise ArtifactError(
            f"graph directory {path}: {graph.num_users} users / {graph.num_items} items on disk, "
            f"meta.json says {meta['num_users']} / {meta['num_items']}"
        )
    if not _fits(arrays, len(user_ids), len(item_ids)):
        raise ArtifactError(f"graph directory {path}: interactions.npz does not fit "
                            f"{len(user_ids)} users and {len(item_ids)} items; rebuild it with "
                            "`graphrec build-graph`")
    return graph
