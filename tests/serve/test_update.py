"""Fold-in (graphrec.model.foldin, graphrec.serve.update) and `graphrec update`: exactness
against full propagation, id-map growth, idempotence, faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from graphrec.artifacts import load_graph
from graphrec.artifacts.model_dir import load_arrays, read_model_config
from graphrec.fsio import exclusive_lock, resolve_version
from graphrec.graph import normalized_bipartite
from graphrec.model.foldin import Rows, fold_in
from graphrec.model.lightgcn import lightgcn_propagate
from graphrec.serve.update import FoldInState
from tests.helpers import ok, one_line_error, random_graph, run, tree_bytes, write_csv


def _rows(nodes: np.ndarray, users: np.ndarray, items: np.ndarray, n: int) -> Rows:
    order = np.lexsort((items, users))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n), out=indptr[1:])
    return Rows(torch.as_tensor(nodes), torch.as_tensor(indptr), torch.as_tensor(items[order]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fold_in_of_every_node_is_full_propagation_on_the_grown_graph(seed: int) -> None:
    # Stored layers from the old graph; every node touched (nothing frozen) and new nodes
    # added: the fold-in must be LightGCN over the grown graph exactly.
    users, items, nu, ni = random_graph(seed, 12, 9, 40)
    old_u, old_i = nu - 2, ni - 1  # the last two users and the last item are new
    keep = (users < old_u) & (items < old_i)
    rng = np.random.default_rng(seed)
    k, d = 3, 5
    xu, xi = torch.randn(nu, d, generator=torch.Generator().manual_seed(seed)), \
        torch.as_tensor(rng.normal(size=(ni, d)), dtype=torch.float32)
    r_old, rt_old = normalized_bipartite(users[keep], items[keep], old_u, old_i)
    stored_u, stored_i = _layers(xu[:old_u], xi[:old_i], r_old, rt_old, k)
    r, rt = normalized_bipartite(users, items, nu, ni)
    want_u, want_i = lightgcn_propagate(xu, xi, r, rt, k)
    du = torch.as_tensor(np.bincount(users, minlength=nu))
    di = torch.as_tensor(np.bincount(items, minlength=ni))
    by_user = _rows(np.arange(nu), users, items, nu)
    by_item = _rows(np.arange(ni), items, users, ni)
    _, got_u, _, got_i = fold_in(stored_u.numpy(), stored_i.numpy(), by_user, by_item, xu, xi,
                                 du.clamp(min=1), di.clamp(min=1))
    has_u, has_i = du > 0, di > 0
    assert torch.allclose(got_u[has_u], want_u[has_u], atol=1e-6)
    assert torch.allclose(got_i[has_i], want_i[has_i], atol=1e-6)


def _layers(xu, xi, r, rt, k):
    from graphrec.model.lightgcn import spmm

    hu, hi, lu, li = xu, xi, [xu], [xi]
    for _ in range(k - 1):
        hu, hi = spmm(r, hi), spmm(rt, hu)
        lu.append(hu)
        li.append(hi)
    return torch.stack(lu), torch.stack(li)


@pytest.mark.parametrize("shift", [False, True])
def test_a_user_whose_interactions_did_not_change_gets_its_own_embedding(
        trained: Path, shift: bool) -> None:
    source, _ = resolve_version(trained / "model")
    arrays = load_arrays(source)
    state = FoldInState(source, arrays)
    worst = 0.0
    for u in range(len(arrays["user_ids"])):
        v = state.user_vector(u, state.by_user.row(u), self_shift=shift)
        worst = max(worst, float((v - torch.as_tensor(np.array(arrays["user_emb"][u])))
                                 .abs().max()))
    assert worst < 1e-5


def _batch(path: Path, rows: list[list[object]]) -> Path:
    return write_csv(path, ["user", "item", "rating", "timestamp"], rows)


def test_update_folds_in_grows_id_maps_and_is_idempotent(work: Path, tmp_path: Path) -> None:
    before = load_arrays(work / "model", mmap=False)
    graph_before = load_graph(work / "graph")
    items = (tmp_path / "items.csv")
    write_csv(items, ["item_id", "title", "description"],
              [["901", "Brand new", "alpha beta gamma delta"],
               ["902", "Listed only", "alpha beta epsilon"]])
    batch = _batch(tmp_path / "new.csv", [["1", "105", 5, 1], ["1", "106", 5, 2],
                                          ["new-user", "101", 5, 3], ["new-user", "901", 5, 4],
                                          ["2", "901", 4, 5], ["1", "105", 5, 6]])
    out = ok(run(work, "update", "--interactions", str(batch), "--items", str(items), "--json"))
    summary = json.loads(out.stdout)
    assert summary["new_users"] == 1 and summary["new_items"] == 2
    after = load_arrays(work / "model", mmap=False)
    graph = load_graph(work / "graph")
    # Ids only grow: every old id keeps its index.
    n_u, n_i = len(before["user_ids"]), len(before["item_ids"])
    assert list(after["user_ids"][:n_u]) == list(before["user_ids"])
    assert list(after["item_ids"][:n_i]) == list(before["item_ids"])
    assert list(after["user_ids"][n_u:]) == ["new-user"]
    assert list(after["item_ids"][n_i:]) == ["901", "902"]
    assert list(graph.user_ids) == list(after["user_ids"])
    assert len(graph.users) == len(graph_before.users) + summary["interactions"]
    # Users without new interactions keep their embedding; user 1 changed.
    u1 = list(before["user_ids"]).index("1")
    untouched = [k for k, u in enumerate(before["user_ids"]) if u not in ("1", "2")]
    assert np.array_equal(after["user_emb"][untouched], before["user_emb"][untouched])
    assert not np.allclose(after["user_emb"][u1], before["user_emb"][u1])
    # The new user is served, and its known items are not recommended to it.
    rec = json.loads(ok(run(work, "recommend", "--user", "new-user", "--json", "-k", "40")).stdout)
    assert {"101", "901"}.isdisjoint(r["item"] for r in rec["items"])
    config = read_model_config(resolve_version(work / "model")[0])
    update = config["built_from"]["updates"][-1]
    assert update["method"] == "fold-in" and update["new_users"] == 1
    assert update["interactions_sha256"] and config["built_from"]["base"]["method"] == "train"
    # The same batch again changes nothing at all.
    snapshot = tree_bytes(work / "model")
    out = ok(run(work, "update", "--interactions", str(batch), "--items", str(items)))
    assert "nothing new" in out.stdout
    assert tree_bytes(work / "model") == snapshot
    # A retrain on the grown graph starts from scratch.
    ok(run(work, "train", "--epochs", "1", "--batch-size", "64", "--dim", "8", "--device", "cpu"))
    config = read_model_config(resolve_version(work / "model")[0])
    assert config["built_from"]["updates"] == [] and config["graph"]["num_users"] == n_u + 1


def test_fine_tune_publishes_a_version_that_says_so(work: Path, tmp_path: Path) -> None:
    batch = _batch(tmp_path / "new.csv", [["3", "110", 5, 1], ["fresh", "111", 4, 2]])
    ok(run(work, "update", "--interactions", str(batch), "--fine-tune", "2",
           "--fine-tune-lr", "0.5"))
    config = read_model_config(resolve_version(work / "model")[0])
    methods = [u["method"] for u in config["built_from"]["updates"]]
    assert methods == ["fold-in", "fine-tune"]
    last = config["built_from"]["updates"][-1]
    assert last["replayed"] == 8 and last["lr"] == 0.5 * config["train"]["lr"]
    assert config["train"]["epochs"] == 3  # the training run's settings, not the fine-tune's
    ok(run(work, "recommend", "--user", "fresh"))


def test_bad_update_input_is_one_line_and_changes_nothing(work: Path, tmp_path: Path) -> None:
    def snapshot():
        return tree_bytes(work / "graph"), tree_bytes(work / "model")

    before = snapshot()
    bad = write_csv(tmp_path / "bad.csv", ["who", "what"], [["1", "101"]])
    one_line_error(run(work, "update", "--interactions", str(bad)), str(bad))
    malformed = tmp_path / "malformed.csv"
    malformed.write_text("user,item,rating\n1,101,5\n2,102\n")
    one_line_error(run(work, "update", "--interactions", str(malformed)), str(malformed))
    items = write_csv(tmp_path / "items.csv", ["item_id", "title", "description"],
                      [["950", "", ""]])
    one_line_error(run(work, "update", "--items", str(items)), "950", "no text")
    one_line_error(run(work, "update", "--fine-tune", "-1"), "--fine-tune")
    assert snapshot() == before


def test_a_second_writer_is_refused_while_an_update_holds_the_workdir(
        work: Path, tmp_path: Path) -> None:
    batch = _batch(tmp_path / "new.csv", [["1", "120", 5, 1]])
    with exclusive_lock(work, "graphrec update"):
        one_line_error(run(work, "update", "--interactions", str(batch)), "in use by",
                       "graphrec update")
    ok(run(work, "update", "--interactions", str(batch)))


@pytest.mark.parametrize("where", ["pointed:graph", "linked:graph", "filled:model",
                                   "pointed:model"])
def test_an_update_killed_anywhere_is_completed_by_the_next(work: Path, tmp_path: Path,
                                                             where: str) -> None:
    batch = _batch(tmp_path / "new.csv", [["1", "120", 5, 1], ["brand-new", "121", 5, 2]])
    reference = Path(str(work) + "-reference")
    import shutil

    shutil.copytree(work, reference, symlinks=True)
    ok(run(reference, "update", "--interactions", str(batch)))
    env = {**os.environ, "GRAPHREC_CRASH_AT": where}
    killed = subprocess.run([sys.executable, "-m", "graphrec_cli.main", "--workdir", str(work),
                             "update", "--interactions", str(batch)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    ok(run(work, "recommend", "--user", "1"))  # the version in place loads
    ok(run(work, "update", "--interactions", str(batch)))
    got, want = load_arrays(work / "model", mmap=False), load_arrays(reference / "model",
                                                                     mmap=False)
    assert list(got["user_ids"]) == list(want["user_ids"])
    assert np.allclose(got["user_emb"], want["user_emb"], atol=1e-6)
    assert np.allclose(got["item_emb"], want["item_emb"], atol=1e-6)


def test_the_command_line_replays_as_the_library_does() -> None:
    from graphrec_cli.main import update_cmd

    from graphrec.pipeline import FINE_TUNE_OLD_RATIO

    replay = next(p for p in update_cmd.params if p.name == "old_ratio")
    assert replay.default == FINE_TUNE_OLD_RATIO
