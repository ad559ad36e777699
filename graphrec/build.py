"""build-graph: read interactions and item text, clean, split, embed text, write the graph
directory. Above data/, text, graph and artifacts/, which it brings together."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import graphrec
from graphrec.artifacts.graph_dir import GRAPH_FORMAT_VERSION, GraphData, save_graph
from graphrec.data import io
from graphrec.data.config import BUNDLED_DATASET, BuildConfig
from graphrec.data.interactions import IdGrower, IdMap, Interactions, deduplicate, k_core
from graphrec.data.split import (
    TEST,
    TRAIN,
    VALID,
    assign_folds,
    choose_cold_items,
    cold_item_folds,
)
from graphrec.errors import NO_VALUE, ConfigError, DataError
from graphrec.graph import graph_statistics

log = logging.getLogger(__name__)



def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_inputs(cfg: BuildConfig) -> tuple[io.RawInteractions, io.ItemText | None, list[str]]:
    if cfg.train is not None:
        raw = io.read_lightgcn(cfg.train, cfg.test)
        if cfg.test is None:
            raw.fold = None  # one file only: split it like any other log
        text = io.read_items(cfg.items, cfg.item_id_col, list(cfg.text_cols) or None) \
            if cfg.items else None
        return raw, text, [p for p in (cfg.train, cfg.test, cfg.items) if p]
    if cfg.interactions is not None:
        raw = io.read_interactions(cfg.interactions, cfg.user_col, cfg.item_col,
                                   cfg.rating_col, cfg.time_col)
        text = io.read_items(cfg.items, cfg.item_id_col, list(cfg.text_cols) or None) \
            if cfg.items else None
        return raw, text, [p for p in (cfg.interactions, cfg.items) if p]
    folder = Path(cfg.movielens) if cfg.movielens else BUNDLED_DATASET
    raw, text = io.read_movielens(folder)
    return raw, text, [str(folder / f) for f in ("ratings.csv", "movies.csv", "tags.csv")
                       if (folder / f).exists()]


def build_graph(cfg: BuildConfig, out_dir: str | Path) -> GraphData:
    """Run the whole build and write the graph directory ``out_dir`` atomically."""
    cfg.validate()
    t0 = time.perf_counter()
    if cfg.interactions is not None and io.streams(cfg.interactions):
        user_map, item_map, inter = _read_log_in_chunks(cfg)
        item_text = io.read_items(cfg.items, cfg.item_id_col, list(cfg.text_cols) or None) \
            if cfg.items else None
        sources, source = [p for p in (cfg.interactions, cfg.items) if p], cfg.interactions
    else:
        raw, item_text, sources = _read_inputs(cfg)
        user_map, users = IdMap.build(raw.users)
        item_map, items = IdMap.build(raw.items)
        inter = Interactions(users, items, raw.ratings, raw.timestamps, raw.fold)
        source = raw.source
        del raw
    if cfg.split == "temporal" and inter.timestamps is None:
        raise ConfigError(
            f"{source} has no timestamp column; expected one (name it with {{time_col}}) "
            "or another split", parameter="split", value="temporal"
        )
    fixed_split = inter.fold is not None
    valid_ratio = cfg.valid_ratio if cfg.valid_ratio is not None else (0.0 if fixed_split else 0.1)
    n_raw = len(inter)
    if fixed_split:
        # A pair in both train and test files stays a test pair; drop its training copy.
        order_key = inter.fold.astype(np.float64)
        inter = Interactions(inter.users, inter.items, None, order_key, inter.fold)
    inter, n_dup = deduplicate(inter, len(item_map))
    if fixed_split:
        inter.timestamps = None
    if n_dup:
        log.warning("dropped %d duplicate (user, item) interactions, kept the latest", n_dup)

    if cfg.min_rating is not None:
        if inter.ratings is None:
            raise ConfigError("the input has no rating column", parameter="min_rating",
                              value=cfg.min_rating)
        inter = inter.take(inter.ratings >= cfg.min_rating)
    inter = k_core(inter, len(user_map), len(item_map), cfg.min_user_interactions,
                   cfg.min_item_interactions)
    if len(inter) == 0:
        raise DataError(
            f"{source}: no interactions left after {{min_rating}} / k-core filtering"
        )
    # Compact the index space to users and items that still have interactions.
    user_map, u_remap = user_map.subset(np.bincount(inter.users, minlength=len(user_map)) > 0)
    item_map, i_remap = item_map.subset(np.bincount(inter.items, minlength=len(item_map)) > 0)
    inter = Interactions(u_remap[inter.users], i_remap[inter.items], inter.ratings,
                         inter.timestamps, inter.fold)
    num_users, num_items = len(user_map), len(item_map)

    folds, cold = _split(inter, num_items, cfg, valid_ratio)
    if not (folds == TRAIN).any():  # before the text is encoded: fail fast
        raise ConfigError(
            f"the split leaves no training interactions ({int(cold.sum())} of {num_items} items "
            f"cold, {{test_ratio}} {cfg.test_ratio}); expected a smaller {{cold_items}} or "
            "{test_ratio}", parameter="cold_items", value=cfg.cold_items)

    texts, titles, n_missing = _align_text(item_map, item_text)
    text_emb, text_stats = None, {}
    if not cfg.no_text:
        text_emb, text_stats = _embed(texts, cfg)

    train_mask = folds == TRAIN
    stats = graph_statistics(inter.users[train_mask], inter.items[train_mask], num_users, num_items)
    meta = {
        "format_version": GRAPH_FORMAT_VERSION,
        "graphrec_version": graphrec.__version__,
        "num_users": num_users,
        "num_items": num_items,
        "num_interactions": int(len(inter)),
        "num_train": int(train_mask.sum()),
        "num_valid": int((folds == VALID).sum()),
        "num_test": int((folds == TEST).sum()),
        "num_cold_items": int(cold.sum()),
        "num_raw_rows": int(n_raw),
        "num_duplicates_removed": int(n_dup),
        "num_items_without_text": int(n_missing),
        "split": {
            "strategy": "given" if fixed_split else cfg.split,
            "test_ratio": None if fixed_split else cfg.test_ratio,
            "valid_ratio": valid_ratio,
            "cold_items": cfg.cold_items,
            "seed": cfg.seed,
        },
        "filters": {
            "min_rating": cfg.min_rating,
            "min_user_interactions": cfg.min_user_interactions,
            "min_item_interactions": cfg.min_item_interactions,
        },
        "text_model": None if cfg.no_text else text_stats.get("model_id"),
        "text_precision": None if cfg.no_text else text_stats.get("precision"),
        "text_dim": None if text_emb is None else int(text_emb.shape[1]),
        "sources": {str(Path(p).resolve()): file_sha256(p) for p in sources},
        "build_seconds": None,
        "text": {k: v for k, v in text_stats.items() if k != "model_id"},
    }
    graph = GraphData(
        user_ids=user_map.ids, item_ids=item_map.ids, item_titles=titles, item_texts=texts,
        users=inter.users, items=inter.items, folds=folds, cold_items=cold,
        text_emb=text_emb, meta=meta, stats=stats,
    )
    meta["fingerprint"] = _fingerprint(graph)
    meta["build_seconds"] = round(time.perf_counter() - t0, 3)
    meta["config"] = {k: v for k, v in asdict(cfg).items() if k != "progress"}
    save_graph(graph, out_dir)
    return graph


def _read_log_in_chunks(cfg: BuildConfig) -> tuple[IdMap, IdMap, Interactions]:
    """The interaction log read chunk by chunk (io.interaction_chunks): ids mapped to
    indices as they arrive (IdGrower), so that the whole log is never held as text; the
    maps and indices are those :meth:`IdMap.build` gives the whole log."""
    users, items = IdGrower(), IdGrower()
    columns: dict[str, _Growing] = {}
    capacity = io.estimated_rows(cfg.interactions)
    for _, chunk in io.interaction_chunks(cfg.interactions, cfg.user_col, cfg.item_col,
                                          cfg.rating_col, cfg.time_col,
                                          with_ratings=cfg.min_rating is not None):
        for name, values in (("users", users.add(chunk.users)),
                             ("items", items.add(chunk.items)), ("ratings", chunk.ratings),
                             ("timestamps", chunk.timestamps)):
            if values is not None:
                columns.setdefault(name, _Growing(capacity, values.dtype)).extend(values)
    arrays = {name: col.array() for name, col in columns.items()}
    columns.clear()
    maps = []
    for name, grower in (("users", users), ("items", items)):
        id_map, renumber = grower.finish()
        _renumber(arrays[name], renumber)
        maps.append(id_map)
    return maps[0], maps[1], Interactions(arrays["users"], arrays["items"],
                                          arrays.get("ratings"), arrays.get("timestamps"))


def _renumber(index: np.ndarray, new: np.ndarray, chunk: int = 1 << 22) -> None:
    """index[k] = new[index[k]] in place, a slice at a time (no second whole array)."""
    for start in range(0, len(index), chunk):
        part = index[start:start + chunk]
        part[:] = new[part]


class _Growing:
    """An array filled chunk by chunk: ``capacity`` rows up front (a good guess wastes
    nothing), grown by half when it runs out."""

    def __init__(self, capacity: int, dtype: np.dtype):
        self.data = np.empty(max(capacity, 1), dtype=dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.empty(max(end, len(self.data) * 3 // 2), dtype=self.data.dtype)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[self.size:end] = values
        self.size = end

    def array(self) -> np.ndarray:
        """The rows filled (a copy only when the guess was more than 5% too high)."""
        if self.size < 0.95 * len(self.data):
            return self.data[:self.size].copy()
        return self.data[:self.size]


def _fingerprint(graph: GraphData) -> str:
    """Hash of the interactions, folds and ids: a model trained on one graph is checked
    against it before it is evaluated on another."""
    h = hashlib.sha256()
    for arr in (graph.users, graph.items, graph.folds, graph.cold_items):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update("\n".join(graph.user_ids).encode())
    h.update("\n".join(graph.item_ids).encode())
    return h.hexdigest()[:16]


def _split(inter: Interactions, num_items: int, cfg: BuildConfig,
           valid_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Fold of every interaction and the [I] bool mask of cold items."""
    folds = np.full(len(inter), TRAIN, dtype=np.int8)
    if inter.fold is not None:
        # Items that appear only in the test file are cold by construction.
        cold = np.bincount(inter.items[inter.fold == TRAIN], minlength=num_items) == 0
    else:
        cold = np.zeros(num_items, dtype=bool)
    if cfg.cold_items > 0:
        extra = choose_cold_items(num_items, cfg.cold_items, cfg.seed) & ~cold
        cold |= extra
    cold_rows = cold[inter.items]
    if inter.fold is not None:
        folds[inter.fold == TEST] = TEST
        pool = ~cold_rows & (inter.fold == TRAIN)
        test_ratio = 0.0
    else:
        pool = ~cold_rows
        test_ratio = cfg.test_ratio
    if test_ratio > 0 or valid_ratio > 0:
        # Only what the split reads: each user's rows, and their times for a temporal one.
        times = inter.timestamps[pool] if inter.timestamps is not None and \
            cfg.split != "random" else None
        folds[pool] = assign_folds(Interactions(inter.users[pool], inter.items[pool], None,
                                                times), cfg.split, test_ratio, valid_ratio,
                                   cfg.seed)
        del times
    if cold.any():
        extra_rows = cold_rows & (folds == TRAIN)
        if inter.fold is not None:
            # Given split: cold items' training rows move to validation/test as whole items.
            # An item with rows in the test file stays wholly in test, or it would be
            # validated on and scored again at test.
            cf = cold_item_folds(inter.items, cold, 1.0, valid_ratio, cfg.seed)
            in_test = np.bincount(inter.items[inter.fold == TEST], minlength=num_items) > 0
            cf[in_test[inter.items]] = TEST
            folds[extra_rows] = cf[extra_rows]
        else:
            cf = cold_item_folds(inter.items, cold, cfg.test_ratio, valid_ratio, cfg.seed)
            folds[cold_rows] = cf[cold_rows]
    return folds, cold


def _align_text(item_map: IdMap, item_text: io.ItemText | None) -> tuple[list[str], list[str], int]:
    """Text and title for every catalog item ("" when the item file lacks it)."""
    n = len(item_map)
    if item_text is None:
        return [""] * n, [""] * n, n
    lookup = {rid: k for k, rid in enumerate(item_text.ids)}
    texts, titles = [], []
    for rid in item_map.ids:
        k = lookup.get(rid)
        texts.append(item_text.texts[k] if k is not None else "")
        titles.append(item_text.titles[k] if k is not None else "")
    return texts, titles, sum(1 for t in texts if not t.strip())


def _embed(texts: list[str], cfg: BuildConfig) -> tuple[np.ndarray, dict]:
    from graphrec.text import DEFAULT_TEXT_MODEL, embed_texts

    has_text = np.asarray([bool(t.strip()) for t in texts])
    if not has_text.any():
        raise DataError("no item has text: give {items} (a file with text columns), or build "
                        "without text ({no_text})")
    emb, stats = embed_texts(
        [t for t, h in zip(texts, has_text, strict=True) if h],
        model=cfg.text_model or DEFAULT_TEXT_MODEL, cache_dir=cfg.cache_dir, device=cfg.device,
        batch_size=cfg.text_batch_size, progress=cfg.progress, precision=cfg.text_precision,
    )
    full = np.zeros((len(texts), stats["dim"]), dtype=np.float32)
    full[has_text] = emb
    if not has_text.all():
        # Warned once the encoder has worked: a build that fails prints its one error line.
        log.warning("%d of %d items have no text; their text embedding is zero",
                    len(texts) - int(has_text.sum()), len(texts))
    return full, stats


@dataclass(frozen=True)
class Growth:
    """What :func:`grow_graph` appended: ``interactions`` new (user, item) pairs (rows of
    the batch already in the graph, repeated, or under ``min_rating`` are not counted),
    ``users`` and ``items`` new ids."""

    rows: int
    interactions: int
    users: int
    items: int


def read_update(graph: GraphData, interactions: str | Path | None,
                items: str | Path | None) -> tuple[io.RawInteractions | None, io.ItemText | None]:
    """Read an update's files with the column settings the graph was built with."""
    cfg = graph.meta.get("config") or {}
    raw = None
    if interactions is not None:
        raw = io.read_interactions(interactions, cfg.get("user_col"), cfg.get("item_col"),
                                   cfg.get("rating_col"), cfg.get("time_col"))
    text = None
    if items is not None:
        text_cols = list(cfg.get("text_cols") or ()) or None
        text = io.read_items(items, cfg.get("item_id_col"), text_cols)
    return raw, text


def grow_graph(graph: GraphData, raw: io.RawInteractions | None, item_text: io.ItemText | None,
               record: dict, cache_dir: str | Path | None = None,
               device: str | None = None) -> tuple[GraphData, Growth]:
    """``graph`` with the batch appended: new interactions in the training fold, new users
    and items at new indices (the id maps grow, never renumber), new items' text embedded
    with the graph's text model. Pairs the graph already has (in any fold) are dropped, so
    the same batch twice adds nothing. ``record`` (source, hash) is kept in meta.json's
    ``updates``. Returns the grown graph (not written) and what was added.

    Raises DataError for an item file row with no text for a new item that no interaction
    names (nothing would place it).
    """
    cfg = graph.meta.get("config") or {}
    user_map, item_map = IdMap(graph.user_ids), IdMap(graph.item_ids)
    rows = 0
    users = items = np.zeros(0, dtype=np.int64)
    if raw is not None:
        rows = len(raw)
        keep = np.ones(rows, dtype=bool)
        if cfg.get("min_rating") is not None and raw.ratings is not None:
            keep &= raw.ratings >= cfg["min_rating"]
        user_map, users = user_map.grow(raw.users[keep])
        item_map, items = item_map.grow(raw.items[keep])
    text_lookup = {}
    if item_text is not None:
        text_lookup = {rid: k for k, rid in enumerate(item_text.ids.tolist())}
        listed = item_text.ids[[item_map.get(rid) is None for rid in item_text.ids.tolist()]]
        blank = [rid for rid in listed.tolist() if not item_text.texts[text_lookup[rid]].strip()]
        if blank:  # items listed without interactions yet must have text
            raise DataError(f"item {blank[0]!r} has no text and no interaction: nothing "
                            "would place it; give it text or an interaction",
                            parameter="items", value=record.get("items") or NO_VALUE)
        item_map, _ = item_map.grow(listed)
    new_user_ids = user_map.ids[graph.num_users:].tolist()
    new_item_ids = item_map.ids[graph.num_items:].tolist()
    num_users = graph.num_users + len(new_user_ids)
    num_items = graph.num_items + len(new_item_ids)
    # New pairs only: not in the graph (any fold), not repeated in the batch.
    keys = np.unique(users * num_items + items)
    have = np.sort(graph.users * num_items + graph.items)  # a sort: np.isin hashes all of it
    at = np.searchsorted(have, keys).clip(max=max(len(have) - 1, 0))
    keys = keys[~(have[at] == keys)] if len(have) else keys
    users, items = keys // num_items, keys % num_items
    titles, texts = list(graph.item_titles), list(graph.item_texts)
    for rid in new_item_ids:
        k = text_lookup.get(rid)
        titles.append(item_text.titles[k] if k is not None else "")
        texts.append(item_text.texts[k] if k is not None else "")
    text_emb = graph.text_emb
    if text_emb is not None and new_item_ids:
        text_emb = np.concatenate([text_emb, _embed_new(texts[graph.num_items:], graph.meta,
                                                        cache_dir, device)])
    meta = dict(graph.meta)
    meta["lineage"] = [*graph.meta.get("lineage", []), {
        "fingerprint": graph.meta.get("fingerprint"), "num_interactions": len(graph.users),
        "num_users": graph.num_users, "num_items": graph.num_items}]
    grown = GraphData(
        user_ids=user_map.ids, item_ids=item_map.ids,
        item_titles=titles, item_texts=texts,
        users=np.concatenate([graph.users, users]), items=np.concatenate([graph.items, items]),
        folds=np.concatenate([graph.folds, np.full(len(users), TRAIN, dtype=graph.folds.dtype)]),
        cold_items=np.concatenate([graph.cold_items, np.zeros(len(new_item_ids), dtype=bool)]),
        text_emb=text_emb, meta=meta, stats=graph.stats,
    )
    growth = Growth(rows=rows, interactions=len(users), users=len(new_user_ids),
                    items=len(new_item_ids))
    meta.update(num_users=num_users, num_items=num_items, num_interactions=len(grown.users),
                num_train=int((grown.folds == TRAIN).sum()))
    meta["updates"] = [*graph.meta.get("updates", []),
                       {**record, "rows": rows, "interactions": growth.interactions,
                        "new_users": growth.users, "new_items": growth.items}]
    meta["fingerprint"] = _fingerprint(grown)
    return grown, growth


def _embed_new(texts: list[str], meta: dict, cache_dir, device) -> np.ndarray:
    """Text embeddings [n, t] of new items, as build-graph made the graph's (zero rows for
    items without text)."""
    from graphrec.text import embed_texts

    full = np.zeros((len(texts), meta["text_dim"]), dtype=np.float32)
    has = [k for k, t in enumerate(texts) if t.strip()]
    if has:
        emb, _ = embed_texts([texts[k] for k in has], model=meta["text_model"],
                             cache_dir=cache_dir, device=device,
                             precision=meta.get("text_precision") or "float32")
        full[has] = emb
    return full
