"""graphrec.artifacts.graph_dir: a failed save keeps the previous graph directory (the
command line's interrupted saves are in tests/cli/test_cli.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from graphrec.artifacts import graph_dir as store
from graphrec.artifacts.graph_dir import load_graph, save_graph
from tests.helpers import temp_leftovers, tree_bytes


def test_failed_library_save_keeps_previous(trained: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    graph_dir = Path(shutil.copytree(trained / "graph", tmp_path / "graph"))
    before = tree_bytes(graph_dir)
    graph = load_graph(graph_dir)
    graph.meta["num_train"] = -1  # would be visible if the write went through

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.np, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_graph(graph, graph_dir)
    assert tree_bytes(graph_dir) == before
    assert temp_leftovers(tmp_path) == []
