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
        node = np.asarray([user if user is not None else self.user_layers.shape[1]])
        x0, g, _ = _layer0(self.user_layers, self.item_layers, rows, node,
                           self.by_user.row_lengths(), self.user_final,
                           torch.tensor([len(items)]), self.item_degree, self.user_map, None,
                           self_shift)
        return (x0[0] + g[0]) / (self.num_layers + 1)


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
    ux0, _, old_u = _layer0(state.user_layers, state.item_layers, users, touched_u,
                            state.by_user.row_lengths(), arrays["user_emb"], user_degree,
                            item_degree, state.user_map, base, self_shift)
    ix0, _, old_i = _layer0(state.item_layers, state.user_layers, items, touched_i,
                            state.by_item.row_lengths(), arrays["item_emb"], item_degree,
                            user_degree, state.item_map, ux0[torch.as_tensor(~old_u)],
                            self_shift, base[touched_i[touched_i >= i0] - i0])
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


def _layer0(own_layers: np.ndarray, other_layers: np.ndarray, rows: Rows, touched: np.ndarray,
            old_degree: np.ndarray, final: np.ndarray, own_degree: Tensor,
            other_degree: Tensor, self_map: Tensor, new_neighbours: Tensor | None,
            self_shift: bool, base: Tensor | None = None,
            ) -> tuple[Tensor, Tensor, np.ndarray]:
    """([m, d] layer 0, [m, d] graph part g, [m] bool stored) of the ``touched`` nodes of
    one side, from their graph part over frozen neighbours (``new_neighbours``: the other
    side's new nodes' layer 0, :func:`frozen_graph_part`):

    - a node the model has keeps its stored layer 0; with ``self_shift``, one that had
      training edges (``old_degree`` > 0: its stored ``final`` embedding is propagated) moves
      by (g - its old graph part) W, so the part of its layer 0 that its neighbourhood
      predicts follows the new neighbourhood while its own residual stays;
    - a new node gets ``base`` (its row, in the order of the new nodes; None: zero) + g W.
    """
    n0 = own_layers.shape[1]
    g = frozen_graph_part(other_layers, rows, own_degree, other_degree, new_neighbours)
    stored = touched < n0
    x0 = g @ self_map
    if base is not None:
        x0[torch.as_tensor(~stored)] += base
    if stored.any():
        nodes = touched[stored]
        at = torch.as_tensor(stored)
        x0[at] = torch.as_tensor(np.asarray(own_layers[0, nodes]))
        if self_shift:
            move = torch.as_tensor(old_degree[nodes] > 0)
            rows_at = torch.nonzero(at)[:, 0][move]
            old = (torch.as_tensor(np.asarray(final[nodes[move.numpy()]]))
                   * (own_layers.shape[0] + 1) - x0[rows_at])
            x0[rows_at] += (g[rows_at] - old) @ self_map
    return x0, g, stored


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
