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
from graphrec.data import TEST, TRAIN, VALID, io
from graphrec.errors import DataError
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


@pytest.mark.parametrize("ids", ["integers", "text", "integers then text"])
def test_a_log_read_in_chunks_builds_the_graph_of_the_whole_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ids: str) -> None:
    # Chunks of 50 rows over 1,000 (duplicates, ids seen again chunks later), the delimited
    # text through pyarrow's streaming reader as a large log would be: the same graph as the
    # whole-file reader, for Parquet and for CSV.
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(0)
    n = 1000
    users, items = rng.integers(1, 60, n), rng.integers(1, 90, n)
    user_ids = [str(u) for u in users]
    if ids != "integers":
        user_ids = [f"u{u}" if (ids == "text" or k > 600) and u % 3 else str(u)
                    for k, u in enumerate(users)]
    times = rng.permutation(n)
    rows = "".join(f"{u},{i},{t}\n" for u, i, t in zip(user_ids, items, times, strict=True))
    csv_path = tmp_path / "log.csv"
    csv_path.write_text("user,item,timestamp\n" + rows)
    pq.write_table(pa.table({"user": user_ids if ids != "integers" else users, "item": items,
                             "timestamp": times.astype(np.int64)}),
                   tmp_path / "log.parquet")
    whole = build_graph(BuildConfig(interactions=str(csv_path), no_text=True, seed=1),
                        tmp_path / "whole")
    assert whole.meta["num_duplicates_removed"] > 0
    monkeypatch.setattr(io, "CHUNK_ROWS", 50)
    monkeypatch.setattr(io, "STREAM_CSV_BYTES", 0)
    reads = []
    real = io.interaction_chunks

    def counted(*args, **kwargs):
        for start, chunk in real(*args, **kwargs):
            reads.append(len(chunk))
            yield start, chunk

    monkeypatch.setattr(io, "interaction_chunks", counted)
    chunked = build_graph(BuildConfig(interactions=str(csv_path), no_text=True, seed=1),
                          tmp_path / "chunked")
    assert len(reads) > 5 and sum(reads) == n
    for got in (chunked, build_graph(BuildConfig(interactions=str(csv_path).replace(
            ".csv", ".parquet"), no_text=True, seed=1), tmp_path / "pq")):
        assert got.user_ids.tolist() == whole.user_ids.tolist()
        assert got.item_ids.tolist() == whole.item_ids.tolist()
        for field in ("users", "items", "folds"):
            assert np.array_equal(getattr(got, field), getattr(whole, field)), field


def test_a_bad_row_in_a_later_chunk_is_named(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyarrow")
    monkeypatch.setattr(io, "CHUNK_ROWS", 20)
    monkeypatch.setattr(io, "STREAM_CSV_BYTES", 0)
    lines = [f"{k % 7},{k % 11},{k}" for k in range(300)]
    lines[250] = ",3,250"
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"log.csv line 252: empty user id"):
        build_graph(BuildConfig(interactions=str(log), no_text=True), tmp_path / "graph")
    lines[250] = "1,3,soon"
    log.write_text("user,item,timestamp\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"log.csv: cannot read past line \d+ .*soon"):
        build_graph(BuildConfig(interactions=str(log), no_text=True), tmp_path / "graph")
    assert not (tmp_path / "graph").exists()
