"""Slow: the real Gowalla LightGCN split (read from ../shared/datasets/gowalla or
GRAPHREC_GOWALLA; skipped when absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from graphrec_cli.main import main

GOWALLA = Path(os.environ.get(
    "GRAPHREC_GOWALLA", Path(__file__).resolve().parents[2] / "shared" / "datasets" / "gowalla"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (GOWALLA / "train.txt").exists(),
                       reason=f"Gowalla split not found at {GOWALLA}"),
]


def test_build_graph_reproduces_the_published_counts(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "--workdir", str(tmp_path), "build-graph", "--no-text",
        "--train", str(GOWALLA / "train.txt"), "--test", str(GOWALLA / "test.txt"),
    ])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "graph" / "meta.json").read_text())
    assert (meta["num_users"], meta["num_items"]) == (29_858, 40_981)
    assert (meta["num_train"], meta["num_valid"], meta["num_test"]) == (810_128, 0, 217_242)
    assert meta["num_cold_items"] == 0 and meta["num_duplicates_removed"] == 0
