"""graphrec.build: graphs built from interaction logs and LightGCN files keep cold
items out of training, whole; and end to end, a command-line workdir never lets a cold
item reach training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from graphrec.artifacts.graph_dir import load_graph
from graphrec.build import BuildConfig, build_graph
from graphrec.data import TEST, TRAIN, VALID
from graphrec.serve.recommender import Recommender
from graphrec.train.sampling import BPRSampler


@pytest.mark.parametrize("split", ["random", "temporal", "leave-one-out"])
@pytest.mark.parametrize("seed", [0, 1])
def test_build_cold_items_never_in_training(planted, tmp_path: Path, split: str,
                                            seed: int) -> None:
    cfg = BuildConfig(interactions=str(planted.interactions), no_text=True, split=split,
                      test_ratio=0.2, valid_ratio=0.1, cold_items=0.2, seed=seed)
    graph = build_graph(cfg, tmp_path / "graph")
    cold = graph.cold_items
    assert cold.sum() == round(graph.num_items * 0.2) == graph.meta["num_cold_items"]
    train_items = graph.items[graph.folds == TRAIN]
    assert not cold[train_items].any()
    valid_cold = set(graph.items[(graph.folds == VALID) & cold[graph.items]].tolist())
    test_cold = set(graph.items[(graph.folds == TEST) & cold[graph.items]].tolist())
    assert not valid_cold & test_cold  # whole items: none is validated on and tested again
    assert valid_cold | test_cold == set(np.flatnonzero(cold).tolist())
    # The folds partition the deduplicated interactions, with no (user, item) pair twice.
    assert len(graph.folds) == graph.meta["num_interactions"] == (
        graph.meta["num_train"] + graph.meta["num_valid"] + graph.meta["num_test"])
    keys = graph.users * graph.num_items + graph.items
    assert len(np.unique(keys)) == len(keys)
    # Same seed -> same graph.
    again = build_graph(cfg, tmp_path / "again")
    np.testing.assert_array_equal(again.folds, graph.folds)
    np.testing.assert_array_equal(again.cold_items, graph.cold_items)
    assert again.meta["fingerprint"] == graph.meta["fingerprint"]


def test_build_lightgcn_test_only_items_are_cold(lightgcn_files, tmp_path: Path) -> None:
    cfg = BuildConfig(train=str(lightgcn_files.train), test=str(lightgcn_files.test),
                      no_text=True)
    graph = build_graph(cfg, tmp_path / "graph")
    assert graph.meta["num_train"] == 13 and graph.meta["num_test"] == 6
    assert graph.meta["num_valid"] == 0 and graph.meta["split"]["strategy"] == "given"
    assert graph.item_ids[graph.cold_items].tolist() == ["6"]
    assert not graph.cold_items[graph.items[graph.folds == TRAIN]].any()
    # Integer ids keep index == raw id.
    assert graph.user_ids.tolist() == ["0", "1", "2", "3", "4"]
    assert graph.item_ids.tolist() == [str(i) for i in range(7)]


@pytest.mark.parametrize("seed", range(6))
def test_build_lightgcn_extra_cold_items_whole(lightgcn_files, tmp_path: Path, seed: int) -> None:
    cfg = BuildConfig(train=str(lightgcn_files.train), test=str(lightgcn_files.test),
                      no_text=True, cold_items=0.5, valid_ratio=0.2, seed=seed)
    graph = build_graph(cfg, tmp_path / "graph")
    cold = graph.cold_items
    assert cold[graph.item_ids.tolist().index("6")]
    assert not cold[graph.items[graph.folds == TRAIN]].any()
    valid_cold = set(graph.items[(graph.folds == VALID) & cold[graph.items]].tolist())
    test_cold = set(graph.items[(graph.folds == TEST) & cold[graph.items]].tolist())
    assert not valid_cold & test_cold
    # The given test file stays the test split.
    assert graph.meta["num_test"] >= 6


def test_cold_items_never_reach_training(trained: Path) -> None:  # noqa: F811
    """The cold protocol's no-leakage property, end to end: no training edge, never drawn as a
    positive or a negative, and zero degree in the saved model."""
    graph = load_graph(trained / "graph")
    cold = graph.cold_items
    assert cold.any()
    u, i = graph.fold_pairs(TRAIN)
    assert not cold[i].any()
    assert (graph.train_item_degree()[cold] == 0).all()
    sampler = BPRSampler(torch.as_tensor(u), torch.as_tensor(i), graph.num_items, "popularity",
                         alpha=0.5)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        for _users, pos, neg in sampler.epoch(64, gen):
            assert not cold[pos.numpy()].any() and not cold[neg.numpy()].any()
    rec = Recommender.load(trained / "model")
    assert (rec.item_degree[cold] == 0).all()


def test_a_split_that_leaves_nothing_to_train_on_is_refused(tmp_path: Path) -> None:
    from graphrec.errors import ConfigError

    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id\n" + "".join(f"u{u},i{i}\n" for u in range(6)
                                                 for i in range(4)))
    with pytest.raises(ConfigError, match="no training interactions"):
        build_graph(BuildConfig(interactions=str(log), no_text=True, cold_items=0.99),
                    tmp_path / "graph")
    assert not (tmp_path / "graph").exists()


def test_a_parquet_log_builds_the_graph_its_csv_builds(planted, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pcsv = pytest.importorskip("pyarrow.csv")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pcsv.read_csv(planted.interactions)  # typed columns: int ids and times
    assert pa.types.is_integer(table.schema.field("user").type)
    pq.write_table(table, tmp_path / "log.parquet")
    graphs = [build_graph(BuildConfig(interactions=str(path), no_text=True, seed=3,
                                      split="temporal"), tmp_path / name)
              for path, name in ((planted.interactions, "a"), (tmp_path / "log.parquet", "b"))]
    a, b = graphs
    assert a.user_ids.tolist() == b.user_ids.tolist()
    assert a.item_ids.tolist() == b.item_ids.tolist()
    for field in ("users", "items", "folds"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert (a.folds == TEST).any()  # the temporal split read the times
