"""What a model hands to other systems: every user's top-k in shards (JSON lines or
Parquet), and the embeddings (Parquet, a faiss index, or numpy) for an existing vector engine.

Batch recommendations split the users into ``world`` contiguous shares; shard ``rank``
writes its share to ``part-RRRRR-of-WWWWW.<ext>`` in the output folder, atomically, so a
folder holds a complete result when all ``world`` parts are there. The shards can run as
processes of one machine or on different machines reading the same model directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from graphrec.distributed import Group
from graphrec.errors import ConfigError
from graphrec.fsio import atomic_file
from graphrec.serve.workdir import write_recommendations

REC_FORMATS = ("jsonl", "parquet")
EMBEDDING_FORMATS = ("parquet", "faiss", "npy")
ROWS_PER_GROUP = 8192
"""Users per Parquet row group (and per written batch)."""


def _pyarrow(what: str):
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what} needs pyarrow (pip install 'graphrec[scale]')",
                          parameter="format", value="parquet") from None
    return pyarrow


def check_format(fmt: str, formats: tuple[str, ...]) -> None:
    if fmt not in formats:
        raise ConfigError(parameter="format", value=fmt, expected=" or ".join(formats))


def shard_path(folder: str | Path, rank: int, world: int, fmt: str) -> Path:
    """The file shard ``rank`` of ``world`` writes in ``folder``."""
    return Path(folder) / f"part-{rank:05d}-of-{world:05d}.{fmt}"


def parse_shard(text: str) -> Group:
    """``"R/N"`` (shard R of N, from 0) as a Group."""
    try:
        rank, world = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(parameter="shard", value=text, expected="R/N, e.g. 0/4") from None
    if not (world >= 1 and 0 <= rank < world):
        raise ConfigError(parameter="shard", value=text, expected="R/N with 0 <= R < N")
    return Group(rank, world)


def write_recommendation_shard(rec, folder: str | Path, shard: Group, k: int = 10,
                               include_seen: bool = False, diversity: float = 0.0,
                               fmt: str = "jsonl") -> tuple[int, Path]:
    """Top-``k`` lists of ``shard``'s share of ``rec``'s users (a Recommender) to its part
    file in ``folder``; returns (users written, the file)."""
    check_format(fmt, REC_FORMATS)
    lo, hi = shard.share(rec.num_users)
    rows = rec.recommend_all(k, include_seen=include_seen, diversity=diversity,
                             users=range(lo, hi))
    path = shard_path(folder, shard.rank, shard.world, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_recommendation_file(rows, path, fmt), path


def write_recommendation_file(rows, path: str | Path, fmt: str = "jsonl") -> int:
    """``(user, items, scores)`` rows to ``path`` atomically, as JSON lines or Parquet (columns
    user: string, items: list<string>, scores: list<float32>); returns the rows written."""
    check_format(fmt, REC_FORMATS)
    if fmt == "jsonl":
        with atomic_file(path, "w") as f:
            return write_recommendations(f, rows)
    pa = _pyarrow("Parquet output")
    schema = pa.schema([("user", pa.string()), ("items", pa.list_(pa.string())),
                        ("scores", pa.list_(pa.float32()))])
    n = 0
    with atomic_file(path, "wb") as f, pa.parquet.ParquetWriter(f, schema) as writer:
        for batch in _batches(rows, ROWS_PER_GROUP):
            users, items, scores = zip(*batch, strict=True)
            writer.write_table(pa.table([list(users), list(items), list(scores)],
                                        schema=schema))
            n += len(batch)
        if n == 0:
            writer.write_table(schema.empty_table())
    return n


def _batches(rows, size: int) -> Iterator[list]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def export_embeddings(rec, output: str | Path, fmt: str) -> dict:
    """``rec``'s final user and item embeddings (a TextLightGCN model: score = user . item)
    for a vector engine, atomically:

    - parquet: ``output`` is a folder with users.parquet and items.parquet (columns id: string,
      embedding: fixed-size list<float32>);
    - faiss: ``output`` is a folder with items.faiss (an exact inner-product index; item
      row k has id k of items.json) and items.json, plus users.npy / users.json to query it;
    - npy: ``output`` is a folder with users.npy, items.npy and their ids in JSON.

    Returns what was written."""
    check_format(fmt, EMBEDDING_FORMATS)
    users, items = rec.embedding_arrays()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    user_ids = [str(u) for u in rec.user_ids]
    item_ids = [str(i) for i in rec.item_ids]
    written = []
    if fmt == "parquet":
        pa = _pyarrow("Parquet export")
        for name, ids, emb in (("users", user_ids, users), ("items", item_ids, items)):
            flat = pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(-1))
            table = pa.table({"id": pa.array(ids, pa.string()), "embedding":
                              pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])})
            path = out / f"{name}.parquet"
            with atomic_file(path, "wb") as f:
                pa.parquet.write_table(table, f)
            written.append(path)
    else:
        if fmt == "faiss":
            try:
                import faiss
            except ImportError:
                raise ConfigError("needs faiss (pip install 'graphrec[serve]')",
                                  parameter="format", value="faiss") from None
            index = faiss.IndexFlatIP(items.shape[1])
            index.add(np.ascontiguousarray(items, dtype=np.float32))
            path = out / "items.faiss"
            with atomic_file(path, "wb") as f:
                f.write(faiss.serialize_index(index).tobytes())
            written.append(path)
        arrays = {"users": users} if fmt == "faiss" else {"users": users, "items": items}
        for name, emb in arrays.items():
            path = out / f"{name}.npy"
            with atomic_file(path, "wb") as f:
                np.save(f, np.ascontiguousarray(emb, dtype=np.float32))
            written.append(path)
        for name, ids in (("users", user_ids), ("items", item_ids)):
            path = out / f"{name}.json"
            with atomic_file(path, "w") as f:
                json.dump(ids, f)
            written.append(path)
    return {"format": fmt, "users": len(user_ids), "items": len(item_ids),
            "dim": int(items.shape[1]), "files": [str(p) for p in written]}
