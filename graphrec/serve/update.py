"""Fold a grown graph's new interactions into a trained model directory, without retraining.

``graphrec update`` appends a batch to the graph (``graphrec.build.grow_graph``), then calls
:func:`fold_in_model`, which brings the model up to the graph: the interactions appended
since the graph the model was made from (meta.json ``lineage`` says where that graph ends)
are folded in by :func:`graphrec.model.foldin.fold_in` (touched users and items re-embedded
over the grown graph, every other node frozen), new items without interactions are placed
from their text as ``add-items`` does, and the result is published as a new model version
whose config.json records what it was built from (``built_from``: the training run, then
every update). Because the model finds its own place in the graph's lineage, an update that
crashed after the graph was published is completed by the next run.

:class:`FoldInState` is the same operation for one user in memory (the service's
``POST /v1/interactions``): the user is re-embedded over the frozen items at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphrec.artifacts.graph_dir import GraphData
from graphrec.artifacts.idfiles import (
    ITEMS_FILE,
    USERS_FILE,
    write_items_file,
    write_users_file,
)
from graphrec.artifacts.model_dir import (
    FOLDIN_LAYERS,
    TRAIN_FILE,
    graph_identity,
    load_arrays,
    load_foldin_layers,
    load_train_edges,
    read_model_config,
    save_train_edges,
)
from graphrec.data.csr import Csr, gather_rows
from graphrec.data.split import TRAIN
from graphrec.errors import ArtifactError
from graphrec.fsio import (
    CURRENT,
    VERSIONS,
    link_or_copy,
    publish_version,
    resolve_version,
    write_json,
)
from graphrec.model.foldin import Rows, fold_in, frozen_graph_part

SELF_SHIFT = True
"""Whether a known node's layer 0 moves with its new neighbours (:func:`_shift`). Chosen on
the validation streams of experiments/online_updates.py (MovieLens, inside the first 70%):
recall@20 0.0478 -> 0.0551 (time stream) and 0.1515 -> 0.1567 (per-user stream)."""


@dataclass(frozen=True)
class FoldedIn:
    """What :func:`fold_in_model` did."""

    version: str | None
    """The published model version (None: the model was already up to date)."""
    interactions: int
    users: int
    """Users re-embedded (with new interactions), of which ``new_users`` new."""
    items: int
    """Items re-embedded or placed, of which ``new_items`` new."""
    new_users: int
    new_items: int
    seconds: float
    """The fold-in's computation alone (reading and publishing not included)."""


def graph_position(config: dict, graph: GraphData, model_path: Path) -> int | None:
    """Where the model's graph ends in ``graph``: the number of interactions it had, or None
    when the model is up to date. Raises ArtifactError when the model was made from a graph
    that is not an ancestor of ``graph``."""
    want = config["graph"]
    if want.get("fingerprint") == graph.meta.get("fingerprint"):
        return None
    for entry in graph.meta.get("lineage", []):
        if entry.get("fingerprint") == want.get("fingerprint"):
            if (entry["num_users"], entry["num_items"]) != (want["num_users"],
                                                            want["num_items"]):
                break
            return int(entry["num_interactions"])
    raise ArtifactError(f"model directory {model_path} was not made from this graph or one it "
                        "grew from (its fingerprint is not in the graph's lineage); retrain "
                        "it with `graphrec train`")


class FoldInState:
    """A model version's fold-in arrays: stored layers (memory-mapped), training edges,
    degrees and the maps that give new nodes their layer 0."""

    def __init__(self, folder: Path, arrays: dict):
        layers = load_foldin_layers(folder)
        self.user_layers, self.item_layers = layers["user_layers"], layers["item_layers"]
        self.by_user, self.by_item = load_train_edges(folder)
        self.num_layers = self.user_layers.shape[0]
        n_users, n_items = len(arrays["user_ids"]), len(arrays["item_ids"])
        if (self.user_layers.shape[1] != n_users or self.item_layers.shape[1] != n_items
                or self.by_user.num_rows != n_users or self.by_item.num_rows != n_items):
            raise ArtifactError(f"model directory {folder}: fold-in arrays do not hold "
                                f"{n_users} users and {n_items} items")
        missing = [k for k in ("user_self_map", "item_self_map") if k not in arrays]
        if missing:
            raise ArtifactError(f"model directory {folder}: no {', '.join(missing)}; retrain "
                                "with `graphrec train`")
        self.user_map = torch.as_tensor(arrays["user_self_map"])
        self.item_map = torch.as_tensor(arrays["item_self_map"])
        self.text_proj = (torch.as_tensor(arrays["item_text_proj"])
                          if "item_text_proj" in arrays else None)
        self.user_final = arrays["user_emb"]  # as stored (live changes are the caller's)
        self.user_degree = torch.as_tensor(self.by_user.row_lengths())
        self.item_degree = torch.as_tensor(self.by_item.row_lengths())

    def user_vector(self, user: int | None, items: np.ndarray,
                    self_shift: bool = SELF_SHIFT) -> Tensor:
        """[d] final embedding of a user (index, or None for a new one) whose training items
        are ``items`` [n] int64 (all of them, old and new), the items frozen; ``self_shift``
        as :func:`fold_in_model`'s."""
        items = np.unique(np.asarray(items, dtype=np.int64))
        rows = Rows(torch.zeros(1, dtype=torch.int64), torch.tensor([0, len(items)]),
                    torch.as_tensor(items))
        degree = torch.tensor([len(items)])
        g = frozen_graph_part(self.item_layers, rows, degree, self.item_degree)[0]
        if user is None:
            x0 = g @ self.user_map
        else:
            x0 = torch.from_numpy(np.array(self.user_layers[0, user]))
            if self_shift and self.by_user.row_lengths()[user] > 0:
                old = torch.from_numpy(np.array(self.user_final[user])) \
                    * (self.num_layers + 1) - x0
                x0 = x0 + (g - old) @ self.user_map
        return (x0 + g) / (self.num_layers + 1)


def _rows(old: Csr | None, nodes: np.ndarray, pair_rows: np.ndarray,
          pair_cols: np.ndarray) -> Rows:
    """Full neighbour lists of ``nodes`` [m]: their rows of ``old`` (nodes < old.num_rows)
    plus the new pairs (row node, col) given as ``pair_rows`` / ``pair_cols``."""
    local = np.searchsorted(nodes, pair_rows)
    parts_r, parts_c = [local], [pair_cols]
    stored = nodes < old.num_rows
    if stored.any():
        lr, cols = gather_rows(torch.as_tensor(old.indptr), torch.as_tensor(old.indices),
                               torch.as_tensor(nodes[stored]))
        parts_r.append(np.flatnonzero(stored)[lr.numpy()])
        parts_c.append(cols.numpy())
    csr = Csr.from_pairs(np.concatenate(parts_r), np.concatenate(parts_c), len(nodes))
    return Rows(torch.as_tensor(nodes), torch.as_tensor(csr.indptr),
                torch.as_tensor(csr.indices))


def _grown(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` [n, ...] with ``rows`` zero rows appended (a fresh, writable copy)."""
    out = np.zeros((array.shape[0] + rows, *array.shape[1:]), dtype=array.dtype)
    out[: array.shape[0]] = array
    return out


def fold_in_model(model_path: str | Path, graph: GraphData, record: dict | None = None,
                  self_shift: bool = SELF_SHIFT) -> FoldedIn:
    """Bring the model directory ``model_path`` up to ``graph`` by fold-in and publish the
    result as a new version (nothing is published when it is up to date). ``record``: what
    to note of this update in config.json's ``built_from`` (e.g. the batch's file and
    hash). ``self_shift``: known nodes' layer 0 follows their new neighbourhood
    (:func:`_shift`) instead of staying as trained."""
    path = Path(model_path)
    src, version = resolve_version(path)
    config = read_model_config(src)
    start = graph_position(config, graph, path)
    if start is None:
        return FoldedIn(None, 0, 0, 0, 0, 0, 0.0)
    if int(config.get("added_items", 0)):
        raise ArtifactError(f"model directory {path} has {config['added_items']} items from "
                            "`graphrec add-items` that its graph does not have; give them to "
                            "`graphrec update` as {items} instead (it adds items to the graph "
                            "and the model), or retrain with `graphrec train`")
    arrays = load_arrays(src)
    state = FoldInState(src, arrays)
    u0, i0 = len(arrays["user_ids"]), len(arrays["item_ids"])
    if not (np.array_equal(graph.user_ids[:u0], arrays["user_ids"])
            and np.array_equal(graph.item_ids[:i0], arrays["item_ids"])):
        raise ArtifactError(f"model directory {path}: its ids are not the graph's first ids; "
                            "retrain it with `graphrec train`")
    t0 = time.perf_counter()
    num_users, num_items = graph.num_users, graph.num_items
    new = slice(start, None)
    train = graph.folds[new] == TRAIN
    du_, di_ = graph.users[new][train], graph.items[new][train]
    user_degree = torch.as_tensor(np.bincount(du_, minlength=num_users)
                                  + np.pad(state.by_user.row_lengths(), (0, num_users - u0)))
    item_degree = torch.as_tensor(np.bincount(di_, minlength=num_items)
                                  + np.pad(state.by_item.row_lengths(), (0, num_items - i0)))
    touched_u, touched_i = np.unique(du_), np.unique(di_)
    users = _rows(state.by_user, touched_u, du_, di_)
    items = _rows(state.by_item, touched_i, di_, du_)

    # Layer 0: stored for known nodes; base + (graph part) W for new ones, the graph part
    # over frozen neighbours (new users first, then new items with those users).
    d = state.user_layers.shape[2]
    text_emb = graph.text_emb
    base = torch.zeros(num_items - i0, d)
    if state.text_proj is not None and text_emb is not None and num_items > i0:
        base = torch.as_tensor(text_emb[i0:]) @ state.text_proj
    new_item_x0 = {i0 + k: base[k] for k in range(num_items - i0)}
    ux0, old_u = _layer0(state.user_layers, state.item_layers, users, touched_u, u0,
                         user_degree, item_degree, state.user_map, new_item_x0)
    if self_shift:
        _shift(ux0, old_u & (state.by_user.row_lengths()[np.minimum(touched_u, u0 - 1)] > 0),
               touched_u, arrays["user_emb"], state.user_layers,
               state.item_layers, users, user_degree, item_degree, state.user_map,
               new_item_x0)
    new_user_x0 = {int(u): ux0[k] for k, u in enumerate(touched_u) if u >= u0}
    ix0, old_i = _layer0(state.item_layers, state.user_layers, items, touched_i, i0,
                         item_degree, user_degree, state.item_map, new_user_x0,
                         base[touched_i[touched_i >= i0] - i0])
    if self_shift:
        _shift(ix0, old_i & (state.by_item.row_lengths()[np.minimum(touched_i, i0 - 1)] > 0),
               touched_i, arrays["item_emb"], state.item_layers,
               state.user_layers, items, item_degree, user_degree, state.item_map,
               new_user_x0)
    lu, fu, li, fi = fold_in(state.user_layers, state.item_layers, users, items, ux0, ix0,
                             user_degree, item_degree)

    user_emb = _grown(np.asarray(arrays["user_emb"]), num_users - u0)
    user_emb[touched_u] = fu.numpy()
    item_emb = _grown(np.asarray(arrays["item_emb"]), num_items - i0)
    placed = np.arange(i0, num_items)
    placed = placed[item_degree[i0:].numpy() == 0]  # new items without interactions
    if len(placed) and "text_map" in arrays and text_emb is not None:
        item_emb[placed] = text_emb[placed] @ arrays["text_map"]
    item_emb[touched_i] = fi.numpy()
    layers = {}
    for name, stored, nodes, fresh, n in (
            ("user_layers", state.user_layers, touched_u, lu, num_users),
            ("item_layers", state.item_layers, touched_i, li, num_items)):
        out = np.zeros((stored.shape[0], n, d), dtype=np.float32)
        out[:, : stored.shape[1]] = stored
        out[:, nodes] = fresh.numpy()
        layers[name] = out
    layers["item_layers"][0, placed] = base[placed - i0].numpy()
    seconds = time.perf_counter() - t0

    known = arrays["known"]
    known_rows = np.concatenate([known.row_index(), du_])
    known = Csr.from_pairs(known_rows, np.concatenate([known.indices, di_]), num_users)
    extra = {
        "item_degree": item_degree.numpy(),
        "cold_items": np.concatenate([arrays["cold_items"],
                                      item_degree[i0:].numpy() == 0]),
    }
    npz = {k: v for k, v in _npz(src).items() if k not in extra}
    config = {**config, "graph": graph_identity(graph)}
    built = dict(config.get("built_from") or {"base": {"version": None}, "updates": []})
    built["updates"] = [*built.get("updates", []), {
        **(record or {}), "method": "fold-in", "from_version": version,
        "graph": graph.meta.get("fingerprint"), "interactions": int(len(du_)),
        "users": len(touched_u), "items": len(touched_i) + len(placed),
        "new_users": num_users - u0, "new_items": num_items - i0,
        "seconds": round(seconds, 4), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }]
    config["built_from"] = built
    rewritten = {"embeddings.npz", "user_emb.npy", "item_emb.npy", "text_emb.npy", "known.npz",
                 "users.txt", "items.jsonl", "config.json", "model.pt", TRAIN_FILE, CURRENT,
                 VERSIONS, *(f"{n}.npy" for n in FOLDIN_LAYERS)}
    with publish_version(path) as tmp:
        for entry in src.iterdir():
            if entry.name not in rewritten and entry.is_file() and not entry.is_symlink():
                link_or_copy(entry, tmp / entry.name)
        np.save(tmp / "user_emb.npy", user_emb)
        np.save(tmp / "item_emb.npy", item_emb)
        for name, arr in layers.items():
            np.save(tmp / f"{name}.npy", arr)
        np.savez(tmp / "embeddings.npz", **npz, **extra)
        if num_items == i0 and (src / "text_emb.npy").exists():
            link_or_copy(src / "text_emb.npy", tmp / "text_emb.npy")
        elif text_emb is not None:
            np.save(tmp / "text_emb.npy", np.asarray(text_emb, dtype=np.float32))
        np.savez(tmp / "known.npz", indptr=known.indptr, indices=known.indices)
        u_all, i_all = graph.train
        save_train_edges(tmp, u_all, i_all, num_users, num_items)
        if num_users == u0:
            link_or_copy(src / USERS_FILE, tmp / USERS_FILE)
        else:
            write_users_file(tmp, graph.user_ids)
        if num_items == i0:
            link_or_copy(src / ITEMS_FILE, tmp / ITEMS_FILE)
        else:
            write_items_file(tmp, graph.item_ids, graph.item_titles)
        item_free = ix0.clone()  # layer 0 less the text projection: the free embedding
        if state.text_proj is not None and text_emb is not None:
            item_free -= torch.as_tensor(np.asarray(text_emb[touched_i])) @ state.text_proj
        _grow_state(src / "model.pt", tmp / "model.pt", ux0, touched_u, u0, num_users,
                    item_free, touched_i, i0, num_items)
        write_json(tmp / "config.json", config)
    return FoldedIn(resolve_version(path)[1], int(len(du_)), len(touched_u),
                    len(touched_i) + len(placed), num_users - u0, num_items - i0, seconds)


def _shift(x0: Tensor, stored: np.ndarray, touched: np.ndarray, final: np.ndarray,
           own_layers: np.ndarray, other_layers: np.ndarray, rows: Rows, own_degree: Tensor,
           other_degree: Tensor, self_map: Tensor, new_neighbours: dict[int, Tensor]) -> None:
    """Move the stored layer 0 of known touched nodes by (new graph part - old graph part)
    times the self map: a trained node keeps its own residual, and the part of its layer 0
    that its neighbourhood predicts follows the new neighbourhood. ``stored``: the touched
    nodes to move (known, with training edges before: their final embedding is propagated).
    In place on x0."""
    if not stored.any():
        return
    nodes = touched[stored]
    k = own_layers.shape[0]
    old = torch.as_tensor(np.asarray(final[nodes])) * (k + 1) - x0[torch.as_tensor(stored)]
    new = frozen_graph_part(other_layers, _subset(rows, stored), own_degree, other_degree,
                            new_neighbours)
    x0[torch.as_tensor(stored)] += (new - old) @ self_map


def _layer0(own_layers: np.ndarray, other_layers: np.ndarray, rows: Rows, touched: np.ndarray,
            n0: int, own_degree: Tensor, other_degree: Tensor, self_map: Tensor,
            new_neighbours: dict[int, Tensor], base: Tensor | None = None,
            ) -> tuple[Tensor, np.ndarray]:
    """([m, d] layer 0, [m] bool stored) of the ``touched`` nodes of one side: the stored
    one for a node the model has (index < n0); for a new one ``base`` (its row, in order of
    the new nodes; None: zero) + its graph part over frozen neighbours times ``self_map``."""
    x0 = torch.zeros(len(rows), own_layers.shape[2])
    stored = touched < n0
    if stored.any():
        x0[torch.as_tensor(stored)] = torch.as_tensor(own_layers[0, touched[stored]])
    if (~stored).any():
        g = frozen_graph_part(other_layers, _subset(rows, ~stored), own_degree, other_degree,
                              new_neighbours)
        x0[torch.as_tensor(~stored)] = (0.0 if base is None else base) + g @ self_map
    return x0, stored


def _subset(rows: Rows, keep: np.ndarray) -> Rows:
    """The rows of ``rows`` where ``keep`` [m] bool."""
    idx = torch.as_tensor(np.flatnonzero(keep))
    local, cols = gather_rows(rows.indptr, rows.cols, idx)
    indptr = torch.zeros(len(idx) + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.bincount(local, minlength=len(idx)), 0)
    return Rows(rows.nodes[idx], indptr, cols)


def _npz(folder: Path) -> dict:
    with np.load(folder / "embeddings.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _grow_state(src: Path, dst: Path, user_x0: Tensor, users: np.ndarray, u0: int,
                num_users: int, item_free: Tensor, items: np.ndarray, i0: int,
                num_items: int) -> None:
    """model.pt with the touched nodes' fold-in layer 0 (rows added for new nodes): a
    user's free embedding is its layer 0, an item's its layer 0 less its text projection
    (what a fine-tune starts from)."""
    state = torch.load(src, map_location="cpu", weights_only=True)
    for key, x0, nodes, n0, n in (("user_emb.weight", user_x0, users, u0, num_users),
                                  ("item_emb.weight", item_free, items, i0, num_items)):
        if key not in state:
            continue
        grown = torch.zeros(n, state[key].shape[1], dtype=state[key].dtype)
        grown[:n0] = state[key]
        grown[torch.as_tensor(nodes)] = x0.to(grown.dtype)
        state[key] = grown
    torch.save(state, dst)
