"""Add items to a trained model directory from their text alone, without retraining.

A new item has no edges, so LightGCN propagation has nothing to say about it; it is placed
exactly like a cold item at training time: ``item_emb_new = text_emb_new @ text_map``, with the
model's own text encoder and the saved text map (Trainer.embeddings places cold items with the
same map, whichever ``cold_start`` design made it).
User embeddings and existing item rows are unchanged, so every existing score is unchanged.

The model directory is rewritten as a whole into a temporary sibling and swapped in (as
``save_model`` does): a crash at any point leaves the previous directory, which loads.

config.json keeps its ``graph`` section (the identity of the graph the model was trained on)
and gains ``added_items``, the number of rows appended after training. ``evaluate`` on the
original graph still works: it scores only the graph's items (the first ``num_items`` rows),
which reproduces the pre-add metrics exactly; the added items have no interactions in that
graph's split, so ranking them would only push real test items down. ``graphrec train``
rewrites the model from the graph, without the added items.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphrec.artifacts.idfiles import append_items
from graphrec.artifacts.model_dir import (
    TRAIN_FILE,
    load_arrays,
    load_train_edges,
    model_kind,
    read_model_config,
)
from graphrec.data import io
from graphrec.errors import NO_VALUE, ArtifactError, DataError
from graphrec.fsio import (
    CURRENT,
    VERSIONS,
    link_or_copy,
    publish_version,
    resolve_version,
    write_json,
)

_SHOWN = 5  # ids named in an error message before "and N more"


@dataclass(frozen=True)
class AddedItems:
    """What :func:`add_items` did: ``added`` new items, the catalog now has ``num_items``."""

    added: int
    num_items: int


def _first(ids: Sequence[str]) -> str:
    head = ", ".join(repr(str(i)) for i in ids[:_SHOWN])
    return head + (f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")


def add_items(model_path: str | Path, item_ids: Sequence[str], titles: Sequence[str],
              texts: Sequence[str], source: str = "items", source_path: Path | None = None,
              cache_dir: str | Path | None = None,
              device: str | None = None, batch_size: int = 64,
              progress: bool = False) -> AddedItems:
    """Append items to the model directory ``model_path``, placed from their text.

    ``item_ids``, ``titles``, ``texts``: n raw ids, titles and texts; ``source`` names the
    argument they came from in error messages (``source_path``: the file, when read from
    one). Text is encoded with the model's text model (config
    ``graph.text_model``), through the embedding cache in ``cache_dir``. Raises ArtifactError
    for a model without a text map, DataError for ids already in the model, repeated or empty
    ids, and items without text.
    """
    from graphrec.text import embed_texts

    path = Path(model_path)
    source_dir, _ = resolve_version(path)  # read one version whole, even if another lands
    config = read_model_config(source_dir)
    arrays = load_arrays(source_dir)
    if model_kind(config) == "filter":
        raise ArtifactError(f"model directory {path} is a filter model: it scores items "
                            "from their interactions only and cannot place one from its "
                            "text; an ensemble model can")
    if "text_map" not in arrays or arrays["text_emb"] is None:
        raise ArtifactError(
            f"model directory {path} has no text map (its graph was built without text, "
            "{no_text}); adding items needs text"
        )
    where = {"parameter": source, "value": source_path if source_path is not None else NO_VALUE}
    ids = [str(i).strip() for i in item_ids]
    if not ids:
        raise DataError(**where, message="no items to add")
    if not len(ids) == len(titles) == len(texts):
        raise DataError(**where, message=f"{len(ids)} ids, {len(titles)} titles, "
                        f"{len(texts)} texts; expected one of each per item")
    empty = [k for k, i in enumerate(ids) if not i]
    if empty:
        raise DataError(**where, message=f"item #{empty[0] + 1} has an empty id")
    present = set(arrays["item_ids"].tolist())
    clash = [i for i in ids if i in present]
    if clash:
        raise DataError(**where, message=f"{len(clash)} item ids already in model directory {path} "
                        f"({_first(clash)}); add only new items")
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    if repeated:
        raise DataError(**where, message=f"item ids given more than once ({_first(repeated)})")
    no_text = [i for i, t in zip(ids, texts, strict=True) if not t.strip()]
    if no_text:
        raise DataError(**where, message=f"{len(no_text)} items have no text ({_first(no_text)}); "
                        "an added item is placed from its text alone")

    text_map = arrays["text_map"]
    # The graph's own precision (float32 for graphs built before it was recorded), whatever
    # this machine's auto would pick: new items must sit where the training items' text did.
    emb, _ = embed_texts(list(texts), model=config["graph"]["text_model"],
                             cache_dir=cache_dir, device=device, batch_size=batch_size,
                             progress=progress,
                             precision=config["graph"].get("text_precision") or "float32")
    if emb.shape[1] != text_map.shape[0]:
        raise ArtifactError(
            f"model directory {path}: text model {config['graph']['text_model']} gives "
            f"{emb.shape[1]}-dim embeddings, the text map expects {text_map.shape[0]}"
        )
    # Exactly how training places cold items (Trainer.embeddings).
    new_emb = (emb @ text_map).astype(arrays["item_emb"].dtype)

    item_emb = np.concatenate([arrays["item_emb"], new_emb])
    out = {"text_map": arrays["text_map"]}
    out["item_degree"] = np.concatenate(
        [arrays["item_degree"], np.zeros(len(ids), dtype=arrays["item_degree"].dtype)])
    out["cold_items"] = np.concatenate([arrays["cold_items"], np.ones(len(ids), dtype=bool)])
    # Arrays this module does not know about travel unchanged.
    skip = {"known", "text_emb", "user_ids", "item_ids", "item_titles", "user_emb", "item_emb"}
    out.update({k: v for k, v in arrays.items() if k not in out and k not in skip})
    config = {**config, "added_items": int(config.get("added_items", 0)) + len(ids)}

    rewritten = {"embeddings.npz", "user_emb.npy", "item_emb.npy", "text_emb.npy",
                 "items.jsonl", "config.json", CURRENT, VERSIONS, "item_layers.npy", TRAIN_FILE}
    with publish_version(path) as tmp:
        # Everything else (model.pt, metrics.json, known.npz, users.txt, ...) is linked as is:
        # known.npz rows are users and its item indices stay valid under an append.
        for entry in source_dir.iterdir():
            if entry.name in rewritten:
                continue
            if entry.is_symlink() or entry.is_dir():  # a version holds plain files only
                raise ArtifactError(f"model directory {path}: {entry.name} is a link or a "
                                    "folder, not a file a model writes; remove it")
            link_or_copy(entry, tmp / entry.name)
        np.save(tmp / "user_emb.npy", arrays["user_emb"])
        np.save(tmp / "item_emb.npy", item_emb)
        np.savez(tmp / "embeddings.npz", **out)
        np.save(tmp / "text_emb.npy",
                np.concatenate([arrays["text_emb"], emb.astype(arrays["text_emb"].dtype)]))
        _grow_foldin(source_dir, tmp, emb, arrays.get("item_text_proj"))
        shutil.copy2(source_dir / "items.jsonl", tmp / "items.jsonl")  # appended: not a link
        append_items(tmp, ids, titles)
        write_json(tmp / "config.json", config)
    return AddedItems(added=len(ids), num_items=len(arrays["item_ids"]) + len(ids))


def _grow_foldin(source: Path, tmp: Path, text_emb: np.ndarray,
                 text_proj: np.ndarray | None) -> None:
    """The fold-in arrays with rows for the added items: layer 0 their text projection
    (zero without one), higher layers zero (no edges), empty neighbour lists."""
    layers_path = source / "item_layers.npy"
    if layers_path.exists():
        layers = np.load(layers_path, mmap_mode="r", allow_pickle=False)
        grown = np.zeros((layers.shape[0], layers.shape[1] + len(text_emb), layers.shape[2]),
                         dtype=layers.dtype)
        grown[:, : layers.shape[1]] = layers
        if text_proj is not None:
            grown[0, layers.shape[1]:] = text_emb @ text_proj
        np.save(tmp / "item_layers.npy", grown)
    if (source / TRAIN_FILE).exists():
        by_user, by_item = load_train_edges(source)
        indptr = np.concatenate([by_item.indptr,
                                 np.full(len(text_emb), by_item.indptr[-1], by_item.indptr.dtype)])
        np.savez(tmp / TRAIN_FILE, indptr=by_user.indptr, indices=by_user.indices,
                 item_indptr=indptr, item_indices=by_item.indices)


def add_items_from_file(model_path: str | Path, items_file: str | Path,
                        id_col: str | None = None, text_cols: Sequence[str] = (),
                        cache_dir: str | Path | None = None, device: str | None = None,
                        progress: bool = False) -> AddedItems:
    """:func:`add_items` from an item file read as build-graph reads its item file."""
    text = io.read_items(items_file, id_col, list(text_cols) or None)
    return add_items(model_path, text.ids.tolist(), text.titles, text.texts,
                     source="items", source_path=Path(items_file), cache_dir=cache_dir,
                     device=device, progress=progress)
