"""The model directory: everything `recommend` needs, without the raw data or the encoder.

Files: model.pt (state_dict, loads with weights_only=True), config.json (resolved training
config + graph identity), metrics.json (history, test metrics, timings), user_emb.npy and
item_emb.npy (final embeddings for serving, memory-mapped on load so that several server
workers share one copy), embeddings.npz (the text map, item degrees, cold mask), text_emb.npy
(item text embeddings, when the graph has text, memory-mapped too), known.npz (every user's
known items, CSR), users.txt and items.jsonl (raw ids and titles).

config.json's ``model`` section says which scorer the directory holds (absent: TextLightGCN,
``lightgcn``). A graph filter (``filter``) or ensemble (``ensemble``) model adds filter.npz
(the training rows the filter was fitted on, CSR) and filter_basis.npy (its singular
vectors, memory-mapped); a filter model has no model.pt, embeddings or fold-in layers.

Each write publishes a new version (``graphrec.fsio.publish_version``): ``model`` is a link to
``.model.versions/<version>``, swapped in one rename. Directories written before versions
(plain, with the embeddings inside embeddings.npz) load as they are.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

import graphrec
from graphrec.artifacts.graph_dir import GraphData
from graphrec.artifacts.idfiles import read_id_files, write_id_files
from graphrec.data.csr import Csr
from graphrec.data.split import TEST, TRAIN, VALID
from graphrec.errors import ArtifactError
from graphrec.fsio import (
    ARTIFACT_READ_ERRORS,
    publish_version,
    read_consistently,
    read_versioned,
    unreadable,
    write_json,
)

MODEL_FORMAT_VERSION = 1

MAPPED_ARRAYS = ("user_emb", "item_emb")
"""Serving arrays stored one per .npy file, memory-mapped on load."""

FOLDIN_LAYERS = ("user_layers", "item_layers")
"""[K, n, d] layers 0..K-1 of every node, one .npy file each, memory-mapped: what folding in
new interactions reads (graphrec.model.foldin)."""
FOLDIN_MAPS = ("user_self_map", "item_self_map", "item_text_proj")
"""Small fold-in arrays kept in embeddings.npz: the self maps [d, d] and the text
projection [t, d] that gives a new item its layer 0."""
FILTER_FILE = "filter.npz"
"""A graph filter's fitted training rows (indptr, indices, num_items)."""
FILTER_BASIS = "filter_basis.npy"
"""A graph filter's singular vectors V_k [I, k] (absent with rank 0)."""
TRAIN_FILE = "train.npz"
"""The training edges from both sides (user CSR: indptr, indices; item CSR: item_indptr,
item_indices): the neighbour lists a fold-in extends."""


class TrainedModel(Protocol):
    """What :func:`save_model` reads of a training result (``graphrec.train.TrainResult``
    has these), so that this module needs nothing of the training stack."""

    model: torch.nn.Module
    config: Any  # a dataclass: saved with dataclasses.asdict
    user_emb: Tensor
    item_emb: Tensor
    text_map: Tensor | None
    history: list[dict]
    test: dict
    best_epoch: int | None
    timings: dict
    foldin: dict  # FOLDIN_LAYERS and FOLDIN_MAPS arrays (numpy), or empty


@dataclass(frozen=True)
class FilterArrays:
    """What :func:`save_model` writes of a fitted graph filter
    (``graphrec.model.filter.GraphFilter``): the training rows it was fitted on (user CSR
    over ``num_items`` items) and its singular vectors [num_items, k] (None with rank 0)."""

    indptr: np.ndarray
    indices: np.ndarray
    num_items: int
    basis: np.ndarray | None


def model_kind(config: dict) -> str:
    """The scorer a model directory's config.json describes: one of
    :data:`graphrec.options.MODEL_KINDS` (directories from before the choice: lightgcn)."""
    return (config.get("model") or {}).get("kind", "lightgcn")


def load_filter_arrays(folder: Path) -> FilterArrays:
    """The fitted filter of a model directory version; ArtifactError when missing or
    damaged."""
    try:
        with np.load(folder / FILTER_FILE, allow_pickle=False) as z:
            indptr, indices, num_items = z["indptr"], z["indices"], int(z["num_items"])
        basis_path = folder / FILTER_BASIS
        basis = (np.load(basis_path, mmap_mode="r", allow_pickle=False)
                 if basis_path.exists() else None)
    except ARTIFACT_READ_ERRORS as exc:
        raise ArtifactError(f"model directory {folder}: {FILTER_FILE} unreadable "
                            f"({unreadable(exc)}); retrain the filter or ensemble model") from None
    if (indptr.ndim != 1 or len(indptr) < 1 or indptr[-1] != len(indices)
            or (len(indices) and not 0 <= indices.min() <= indices.max() < num_items)
            or (basis is not None and (basis.ndim != 2 or basis.shape[0] != num_items
                                       or not np.isfinite(basis).all()))):
        raise ArtifactError(f"model directory {folder}: {FILTER_FILE} / {FILTER_BASIS} do "
                            f"not describe one filter over {num_items} items; retrain it")
    return FilterArrays(indptr, indices, num_items, basis)


def graph_identity(graph: GraphData) -> dict:
    """What a model must agree on with the graph it is evaluated on."""
    return {
        "num_users": graph.num_users,
        "num_items": graph.num_items,
        "fingerprint": graph.meta.get("fingerprint"),
        "text_model": graph.meta.get("text_model"),
        "text_precision": graph.meta.get("text_precision"),
        "text_dim": graph.meta.get("text_dim"),
    }


def save_model(result: TrainedModel | None, graph: GraphData, path: str | Path,
               built_from: dict | None = None, *, model: dict | None = None,
               filter_arrays: FilterArrays | None = None,
               metrics: dict | None = None) -> None:
    """Publish the model directory ``path`` as a new version, atomically. ``built_from``:
    what config.json records the model was made from (default: this training run).
    ``model``: config.json's ``model`` section (kind and settings; None: TextLightGCN);
    ``filter_arrays``: the fitted filter of a filter or ensemble model; ``result`` None: a
    filter model (no TextLightGCN), whose metrics.json is ``metrics``."""
    kind = (model or {}).get("kind", "lightgcn")
    if (kind == "lightgcn") != (filter_arrays is None) or (kind == "filter") != (result is None):
        raise ValueError(f"save_model: a {kind} model needs "
                         + {"lightgcn": "a training result and no filter",
                            "filter": "a filter and no training result",
                            "ensemble": "a training result and a filter"}.get(kind, "?"))
    with publish_version(path) as tmp:
        arrays = {
            "item_degree": graph.train_item_degree(),
            "cold_items": graph.cold_items,
        }
        if result is not None:
            torch.save({k: v.detach().cpu() for k, v in result.model.state_dict().items()},
                       tmp / "model.pt")
            np.save(tmp / "user_emb.npy", result.user_emb.numpy())
            np.save(tmp / "item_emb.npy", result.item_emb.numpy())
            if result.text_map is not None:
                arrays["text_map"] = result.text_map.numpy()
            foldin = getattr(result, "foldin", None) or {}
            arrays.update({k: foldin[k] for k in FOLDIN_MAPS if k in foldin})
            for name in FOLDIN_LAYERS:
                if name in foldin:
                    np.save(tmp / f"{name}.npy", foldin[name])
        np.savez(tmp / "embeddings.npz", **arrays)
        if filter_arrays is not None:
            np.savez(tmp / FILTER_FILE, indptr=filter_arrays.indptr,
                     indices=filter_arrays.indices, num_items=filter_arrays.num_items)
            if filter_arrays.basis is not None:
                np.save(tmp / FILTER_BASIS, np.asarray(filter_arrays.basis, dtype=np.float32))
        u, i = graph.train
        save_train_edges(tmp, u, i, graph.num_users, graph.num_items)
        if graph.text_emb is not None:
            np.save(tmp / "text_emb.npy", graph.text_emb.astype(np.float32))
        known = graph.csr(TRAIN, VALID, TEST)
        np.savez(tmp / "known.npz", indptr=known.indptr, indices=known.indices)
        write_id_files(tmp, graph.user_ids, graph.item_ids, graph.item_titles)
        base = {"method": "train", "graph": graph.meta.get("fingerprint"),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if result is not None:
            base.update(epochs=len(result.history), best_epoch=result.best_epoch)
        config = {
            "format_version": MODEL_FORMAT_VERSION,
            "graphrec_version": graphrec.__version__,
            "train": asdict(result.config) if result is not None else {},
            "graph": graph_identity(graph),
            "built_from": built_from or {"base": base, "updates": []},
        }
        if model is not None:
            config["model"] = model
        write_json(tmp / "config.json", config)
        write_json(tmp / "metrics.json", metrics if result is None else {
            "history": result.history,
            "best_epoch": result.best_epoch,
            "test": result.test,
            "timings": result.timings,
            **({"cold_start": result.cold_start} if getattr(result, "cold_start", None) else {}),
            **(metrics or {}),
        })


def save_train_edges(folder: Path, users: np.ndarray, items: np.ndarray, num_users: int,
                     num_items: int) -> None:
    """``folder``/train.npz: the training edges as user and item CSR."""
    by_user, by_item = Csr.from_pairs(users, items, num_users), Csr.from_pairs(items, users,
                                                                             num_items)
    np.savez(folder / TRAIN_FILE, indptr=by_user.indptr, indices=by_user.indices,
             item_indptr=by_item.indptr, item_indices=by_item.indices)


def load_train_edges(folder: Path) -> tuple[Csr, Csr]:
    """(user CSR, item CSR) of train.npz; raises ArtifactError when missing or damaged."""
    try:
        with np.load(folder / TRAIN_FILE, allow_pickle=False) as z:
            return (Csr(z["indptr"], z["indices"]), Csr(z["item_indptr"], z["item_indices"]))
    except ARTIFACT_READ_ERRORS as exc:
        raise ArtifactError(f"model directory {folder}: {TRAIN_FILE} unreadable "
                            f"({unreadable(exc)}); a model trained before fold-in existed "
                            "cannot be updated, retrain it with `graphrec train`") from None


def load_foldin_layers(folder: Path) -> dict:
    """The memory-mapped FOLDIN_LAYERS of a model directory version ``folder``."""
    try:
        return {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                for name in FOLDIN_LAYERS}
    except ARTIFACT_READ_ERRORS as exc:
        raise ArtifactError(f"model directory {folder}: fold-in layers unreadable "
                            f"({unreadable(exc)}); a model trained before fold-in existed "
                            "(or with {{layers}} 0) cannot be updated, retrain it with "
                            "`graphrec train`") from None


def read_model_config(path: str | Path) -> dict:
    """config.json of a model directory, checked for format version."""
    return read_versioned(Path(path), "config.json", "model directory", MODEL_FORMAT_VERSION,
                          "graphrec train", keys=("train", "graph"))


def check_compatible(model_cfg: dict, graph: GraphData, model_path: str | Path) -> None:
    """Raise ArtifactError when a model was not trained on ``graph``."""
    want, have = model_cfg["graph"], graph_identity(graph)
    diff = [k for k in ("num_users", "num_items", "fingerprint") if want.get(k) != have.get(k)]
    if diff:
        raise ArtifactError(
            f"model directory {model_path} was trained on a different graph "
            f"({', '.join(f'{k}: model {want.get(k)} vs graph {have.get(k)}' for k in diff)}); "
            "retrain with `graphrec train`"
        )


def mapped_tensor(array: np.ndarray) -> Tensor:
    """A tensor over ``array``'s memory, without a copy: a read-only memory map stays one
    (shared by every process that maps the file). Serving never writes to these tensors, so
    torch's warning about read-only memory does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(array)


def load_arrays(path: str | Path, mmap: bool = True) -> dict:
    """Serving arrays of a model directory (embeddings, text, known items, ids, titles), from
    the version ``path`` points at; the embeddings and text are memory-mapped (read-only)
    unless ``mmap`` is False."""
    return read_consistently(path, lambda folder: _load_arrays(folder, mmap))


def _load_arrays(path: Path, mmap: bool) -> dict:
    mode = "r" if mmap else None
    try:
        with np.load(path / "embeddings.npz", allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        for name in MAPPED_ARRAYS:
            if (path / f"{name}.npy").exists():
                out[name] = np.load(path / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
        with np.load(path / "known.npz", allow_pickle=False) as z:
            out["known"] = Csr(z["indptr"], z["indices"])
        text_path = path / "text_emb.npy"
        out["text_emb"] = (np.load(text_path, mmap_mode=mode, allow_pickle=False)
                           if text_path.exists() else None)
        out["user_ids"], out["item_ids"], out["item_titles"], _ = read_id_files(path)
    except ARTIFACT_READ_ERRORS as exc:
        raise ArtifactError(f"model directory {path}: unreadable ({unreadable(exc)})") from None
    n_users, n_items = len(out["user_ids"]), len(out["item_ids"])
    if "item_emb" not in out and "user_emb" not in out and (path / FILTER_FILE).exists():
        out["user_emb"] = out["item_emb"] = None  # a filter model: no factors
        _check_serving_arrays(path, out, n_users, n_items)
        return out
    if any(name not in out for name in MAPPED_ARRAYS):
        raise ArtifactError(f"model directory {path}: no user_emb / item_emb arrays; it is "
                            "damaged, retrain with `graphrec train`")
    if out["user_emb"].shape[0] != n_users or out["item_emb"].shape[0] != n_items:
        raise ArtifactError(
            f"model directory {path}: embeddings for {out['user_emb'].shape[0]} users / "
            f"{out['item_emb'].shape[0]} items, but {n_users} / {n_items} ids"
        )
    _check_serving_arrays(path, out, n_users, n_items)
    return out


def _check_serving_arrays(path: Path, out: dict, n_users: int, n_items: int) -> None:
    """Raise ArtifactError for arrays that load but would serve wrong: non-finite
    embeddings, known items out of range, a model.pt that is not a torch archive."""
    missing = [k for k in ("item_degree", "cold_items") if k not in out]
    if missing:
        raise ArtifactError(f"model directory {path}: no {', '.join(missing)} array; it is "
                            "damaged, retrain with `graphrec train`")
    if len(out["item_degree"]) != n_items or len(out["cold_items"]) != n_items:
        raise ArtifactError(f"model directory {path}: item_degree / cold_items do not hold "
                            f"{n_items} items")
    for name in MAPPED_ARRAYS:
        if out[name] is not None and not np.isfinite(out[name]).all():
            raise ArtifactError(f"model directory {path}: {name} holds NaN or infinite values "
                                "(training diverged?); retrain with a lower {lr}")
    known = out["known"]
    if (len(known.indptr) != n_users + 1 or known.indptr[-1] != len(known.indices)
            or (len(known.indices) and not 0 <= known.indices.min() <= known.indices.max()
                < n_items)):
        raise ArtifactError(f"model directory {path}: known.npz does not fit {n_users} users "
                            f"and {n_items} items")
    state = path / "model.pt"
    if state.exists():  # serving does not read it; a damaged one is still worth a line
        with open(state, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                raise ArtifactError(f"model directory {path}: model.pt is not a torch archive "
                                    "(empty or damaged); retrain with `graphrec train`")
