"""Batch output beyond one file: `recommend --all-users` in shards (--shard R/N, --nproc N)
and as Parquet, and `export-embeddings` (Parquet, faiss, numpy) that rank like the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphrec.serve import Recommender
from tests.helpers import ok, one_line_error, run


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_shards_cover_every_user_once_as_one_run_does(trained: Path, tmp_path: Path) -> None:
    whole = tmp_path / "all.jsonl"
    ok(run(trained, "recommend", "--all-users", "-k", "5", "--output", str(whole)))
    parts = tmp_path / "parts"
    for r in range(3):
        ok(run(trained, "recommend", "--all-users", "-k", "5", "--shard", f"{r}/3",
               "--output", str(parts)))
    files = sorted(parts.iterdir())
    assert [f.name for f in files] == [f"part-{r:05d}-of-00003.jsonl" for r in range(3)]
    rows = [row for f in files for row in read_jsonl(f)]
    assert rows == read_jsonl(whole)
    assert all(len(read_jsonl(f)) > 0 for f in files)


def test_nproc_writes_one_part_per_process(trained: Path, tmp_path: Path) -> None:
    whole = tmp_path / "all.jsonl"
    ok(run(trained, "recommend", "--all-users", "-k", "5", "--output", str(whole)))
    parts = tmp_path / "parts"
    done = subprocess.run(
        [sys.executable, "-m", "graphrec_cli", "--workdir", str(trained), "recommend",
         "--all-users", "-k", "5", "--nproc", "2", "--output", str(parts)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted(parts.iterdir())
    assert [f.name for f in files] == [f"part-{r:05d}-of-00002.jsonl" for r in range(2)]
    assert [row for f in files for row in read_jsonl(f)] == read_jsonl(whole)


def test_parquet_output_holds_the_json_lines(trained: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    ok(run(trained, "recommend", "--all-users", "-k", "5", "--output", str(tmp_path / "a.jsonl")))
    ok(run(trained, "recommend", "--all-users", "-k", "5", "--format", "parquet",
           "--output", str(tmp_path / "a.parquet")))
    table = pq.read_table(tmp_path / "a.parquet").to_pylist()
    expected = read_jsonl(tmp_path / "a.jsonl")
    assert [(r["user"], r["items"]) for r in table] == [(r["user"], r["items"])
                                                         for r in expected]
    for got, want in zip(table, expected, strict=True):
        assert got["scores"] == pytest.approx(want["scores"], rel=1e-6, abs=1e-6)
    ok(run(trained, "recommend", "--all-users", "-k", "5", "--format", "parquet", "--shard", "1/2",
           "--output", str(tmp_path / "parts")))
    part = pq.read_table(tmp_path / "parts" / "part-00001-of-00002.parquet").to_pylist()
    assert part and part == table[len(table) - len(part):]


def test_exported_embeddings_rank_like_the_model(trained: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    faiss = pytest.importorskip("faiss")
    rec = Recommender.load(trained / "model")
    user = str(rec.user_ids[3])
    listed = [r.item for r in rec.recommend(user, 5, include_seen=True)]
    ok(run(trained, "export-embeddings", "--format", "parquet", "--output",
           str(tmp_path / "pq")))
    users = pq.read_table(tmp_path / "pq" / "users.parquet").to_pydict()
    items = pq.read_table(tmp_path / "pq" / "items.parquet").to_pydict()
    u = np.asarray(users["embedding"][users["id"].index(user)], dtype=np.float32)
    top = np.argsort(-(np.asarray(items["embedding"], dtype=np.float32) @ u), kind="stable")
    assert [items["id"][i] for i in top[:5]] == listed
    doc = json.loads(ok(run(trained, "export-embeddings", "--format", "faiss", "--output",
                            str(tmp_path / "fx"), "--json")).stdout)
    assert doc["items"] == rec.num_items and doc["users"] == rec.num_users
    index = faiss.read_index(str(tmp_path / "fx" / "items.faiss"))
    ids = json.loads((tmp_path / "fx" / "items.json").read_text())
    user_rows = np.load(tmp_path / "fx" / "users.npy")
    user_ids = json.loads((tmp_path / "fx" / "users.json").read_text())
    _, found = index.search(user_rows[[user_ids.index(user)]], 5)
    assert [ids[i] for i in found[0]] == listed
    ok(run(trained, "export-embeddings", "--format", "npy", "--output", str(tmp_path / "np")))
    assert np.load(tmp_path / "np" / "items.npy").shape == (rec.num_items, doc["dim"])


def test_bad_shard_and_format_arguments(trained: Path, tmp_path: Path) -> None:
    one_line_error(run(trained, "recommend", "--all-users", "--shard", "2/2", "--output",
                       str(tmp_path / "p")), "--shard '2/2'")
    one_line_error(run(trained, "recommend", "--all-users", "--shard", "x", "--output",
                       str(tmp_path / "p")), "--shard 'x'")
    (tmp_path / "file").write_text("")
    one_line_error(run(trained, "recommend", "--all-users", "--shard", "0/2", "--output",
                       str(tmp_path / "file")), "--output", "folder")
    result = run(trained, "recommend", "--user", "1", "--format", "parquet")
    assert result.exit_code == 2 and "--all-users" in result.output
