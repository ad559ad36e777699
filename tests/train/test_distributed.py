"""Training on several processes: data-parallel (graphrec.distributed, Trainer(group=...)) and
with the model split between them (graphrec.train.partition). Two gloo processes on the CPU
take the same steps as one process on the same global batch, their sharded evaluation gives
one process's metrics, their checkpoint resumes in one, and a group refuses what it cannot
do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from graphrec.artifacts import load_graph
from graphrec.build import build_graph
from graphrec.data import TEST, VALID
from graphrec.data.config import BuildConfig
from graphrec.distributed import SOLO, Group
from graphrec.errors import ConfigError
from graphrec.eval import EvalContext
from graphrec.train import TrainConfig, Trainer
from graphrec.train.partition import PartitionedTrainer, balanced_bounds

WORKER = Path(__file__).with_name("dist_worker.py")
SETTINGS = dict(epochs=2, batch_size=100, lr=0.01, dim=8, layers=2, item_init="id",
                device="cpu", eval_every=1, patience=5, seed=3, neg_candidates=4)


@pytest.fixture(scope="module")
def graphs(planted, tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Graph folders the worker processes load: ids only, and text items with validation and
    cold items."""
    folder = tmp_path_factory.mktemp("dist-graphs")
    build_graph(BuildConfig(interactions=str(planted.interactions), no_text=True,
                            test_ratio=0.2, valid_ratio=0.0, seed=0), folder / "ids")
    build_graph(BuildConfig(interactions=str(planted.interactions), items=str(planted.items),
                            text_model=tiny_bert, cold_items=0.2, test_ratio=0.2,
                            valid_ratio=0.1, seed=0, cache_dir=str(folder / "cache")),
                folder / "text")
    return {name: (folder / name, load_graph(folder / name)) for name in ("ids", "text")}


def launch(graph_dir: Path, out: Path, cfg: dict, *mode: str, nproc: int = 2) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRAPHREC_DIST_TIMEOUT": "180"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={nproc}", str(WORKER), str(graph_dir), str(out), json.dumps(cfg),
         *mode], capture_output=True, text=True, env=env, timeout=480)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=False)


def one_process(graph, cfg: dict, steps: int) -> Trainer:
    trainer = Trainer(graph, TrainConfig(**cfg))
    while trainer.steps_done < steps:
        for batch in trainer.batches():
            trainer.train_step(*batch)
            if trainer.steps_done == steps:
                break
    return trainer


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        diff = (a[name].float() - b[name].float()).abs().max().item()
        assert diff <= atol, (name, diff)


def one_process_fit(graph, cfg: dict, stop: int):
    """(trainer, result): one process's fit with validation and test, ended after epoch
    ``stop`` (as dist_worker.py fits)."""
    ref = Trainer(graph, TrainConfig(**cfg))
    ctx = EvalContext.from_graph(graph, ref.cfg.ks, ref.device)
    return ref, ref.fit(ctx.validator(VALID), ctx.validator(TEST),
                        on_epoch=lambda row: ref.epoch >= stop)


def assert_resumes_in_one_process(graph, cfg: dict, checkpoint: Path, atol: float) -> None:
    """One process resumes the checkpoint written after epoch 1 and trains epoch 2: the
    weights of a process that trained both epochs itself."""
    resumed = Trainer(graph, TrainConfig(**cfg))
    resumed.load_checkpoint(checkpoint)
    assert resumed.epoch == 1
    resumed.train_epoch()
    straight = Trainer(graph, TrainConfig(**cfg))
    straight.train_epoch()
    straight.train_epoch()
    assert_same_weights(resumed.model.state_dict(), straight.model.state_dict(), atol)


def test_group_shares_cover_the_rows_once() -> None:
    for n in (0, 1, 5, 100, 101):
        for world in (1, 2, 3, 7):
            parts = [Group(r, world).share(n) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("batch_size", [100, 333])  # a full-graph step; the batch-rows one
def test_two_processes_take_one_process_steps(graphs, tmp_path: Path, batch_size: int) -> None:
    folder, planted_graph = graphs["ids"]
    # 20 steps over several epochs, the last batch of an epoch uneven between the two.
    cfg = {**SETTINGS, "batch_size": batch_size, "epochs": 10}
    ref = one_process(planted_graph, cfg, 20)
    got = launch(folder, tmp_path / "w.pt", cfg, "steps", "20")
    assert_same_weights(got["model"], ref.model.state_dict(), 1e-6)
    # The check is not vacuous: the weights moved well past that tolerance.
    fresh = Trainer(planted_graph, TrainConfig(**cfg)).model.state_dict()
    assert (fresh["user_emb.weight"] - got["model"]["user_emb.weight"]).abs().max() > 1e-3


def test_two_processes_evaluate_and_resume_in_one(graphs, tmp_path: Path) -> None:
    # One of two epochs on two processes, validated and tested (sharded), with a checkpoint...
    folder, graph = graphs["text"]  # text items, validation split, cold items
    cfg = {**SETTINGS, "item_init": "text", "epochs": 2, "ks": [3, 20]}
    got = launch(folder, tmp_path / "w.pt", cfg, "fit", "1")
    ref, result = one_process_fit(graph, cfg, 1)
    assert_same_weights(got["model"], ref.model.state_dict(), 1e-6)
    assert "cold_recall@3" in result.test and result.test["recall@20"] > 0
    for key, value in result.test.items():
        assert got["test"][key] == pytest.approx(value, abs=1e-6), key
    for key, value in result.history[0]["valid"].items():
        assert got["history"][0]["valid"][key] == pytest.approx(value, abs=1e-6), key
    # ...that one process resumes for the second epoch, as if it had trained both.
    assert_resumes_in_one_process(graph, cfg, tmp_path / "w.pt.ckpt", 1e-6)


def test_a_group_refuses_different_settings_and_per_draw_picks(planted_graph) -> None:
    class Two(Group):  # a group whose other process holds other settings
        def all_gather_bytes(self, payload, what):
            return [payload, b"other"]

    with pytest.raises(ConfigError, match="rank 1 of 2 has a different graph and training"):
        Trainer(planted_graph, TrainConfig(**SETTINGS), group=Two(0, 2))
    with pytest.raises(ConfigError, match="neg_top 2"):
        Trainer(planted_graph, TrainConfig(**{**SETTINGS, "neg_top": 2}), group=Two(0, 2))
    assert Trainer(planted_graph, TrainConfig(**SETTINGS), group=SOLO).group.solo
    assert asdict(TrainConfig(**SETTINGS))["seed"] == 3


# -- the model split between the processes (graphrec.train.partition) ----------------------

def test_balanced_bounds_cut_contiguous_ranges_of_equal_weight() -> None:
    rng = np.random.default_rng(0)
    weights = rng.pareto(1.5, 1000) + 1
    for world in (1, 2, 3, 8):
        bounds = balanced_bounds(weights, world)
        assert bounds[0] == 0 and bounds[-1] == 1000 and np.all(np.diff(bounds) >= 0)
        sums = [weights[a:b].sum() for a, b in zip(bounds, bounds[1:], strict=False)]
        # Each range is off its fair share by less than one row's weight.
        assert max(abs(s - weights.sum() / world) for s in sums) <= weights.max()
    # More processes than rows: one row each at most, some own none.
    assert np.diff(balanced_bounds(np.ones(3), 5)).tolist() == [1, 1, 0, 1, 0]


@pytest.mark.parametrize("name, init", [("ids", "id"), ("text", "text+id")])
def test_a_split_model_takes_one_process_steps(graphs, tmp_path: Path, name: str,
                                               init: str) -> None:
    # 20 steps with 4 hard-negative candidates each; the text projection is the one weight
    # both processes hold (its gradient summed), the embedding tables are split by rows.
    folder, graph = graphs[name]
    cfg = {**SETTINGS, "item_init": init, "batch_size": 333, "epochs": 10}
    ref = one_process(graph, cfg, 20)
    got = launch(folder, tmp_path / "w.pt", cfg, "part-steps", "20")
    assert_same_weights(got["model"], ref.model.state_dict(), 1e-5)
    fresh = Trainer(graph, TrainConfig(**cfg)).model.state_dict()
    assert (fresh["user_emb.weight"] - got["model"]["user_emb.weight"]).abs().max() > 1e-3


def test_a_split_model_evaluates_and_its_checkpoint_resumes_in_one_process(
        graphs, tmp_path: Path) -> None:
    folder, graph = graphs["text"]
    cfg = {**SETTINGS, "item_init": "text+id", "epochs": 2, "ks": [3, 20]}
    got = launch(folder, tmp_path / "w.pt", cfg, "part-fit", "1")
    ref, result = one_process_fit(graph, cfg, 1)
    assert_same_weights(got["model"], ref.model.state_dict(), 1e-5)
    for key, value in result.test.items():
        assert got["test"][key] == pytest.approx(value, abs=1e-4), key
    # The checkpoint holds the whole model and optimizer, as one process writes them.
    assert_resumes_in_one_process(graph, cfg, tmp_path / "w.pt.ckpt", 1e-5)


def test_a_split_model_refuses_what_it_cannot_split(planted_graph) -> None:
    for change in ({"neg_top": 2}, {"precision": "bfloat16"}):
        with pytest.raises(ConfigError, match=next(iter(change))):
            PartitionedTrainer(planted_graph, TrainConfig(**{**SETTINGS, **change}), Group(0, 2))

    class Two(Group):  # a group whose other process holds other settings
        def all_gather_bytes(self, payload, what):
            return [payload, b"other"]

    with pytest.raises(ConfigError, match="rank 1 of 2 has a different graph and training"):
        PartitionedTrainer(planted_graph, TrainConfig(**SETTINGS), Two(0, 2))
