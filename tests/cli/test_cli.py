"""The `graphrec` command line through click's CliRunner, on temporary work directories.

One module-scoped workdir (the ``trained`` fixture of tests/conftest.py) is built and trained
once (planted-community data, tiny BERT, 3 epochs); tests that change a workdir work on a
copy of it (``work``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from graphrec.artifacts import graph_dir as store
from graphrec.artifacts import model_dir as artifact
from graphrec.artifacts.graph_dir import load_graph
from graphrec.build import BuildConfig, build_graph
from graphrec.data import TRAIN
from graphrec.errors import ConfigError
from graphrec.serve.recommender import Recommender
from graphrec.train import Trainer
from tests.helpers import (
    TRAIN_ARGS,
    ok,
    one_line_error,
    run,
    temp_leftovers,
    tree_bytes,
    write_csv,
)

# ----------------------------------------------------------------------------- happy paths


def test_build_graph_writes_meta_and_stats(trained: Path, planted) -> None:
    meta = json.loads((trained / "graph" / "meta.json").read_text())
    assert meta["num_users"] == 42 and meta["num_items"] == 30
    assert meta["num_train"] + meta["num_valid"] + meta["num_test"] == planted.num_rows
    assert meta["num_cold_items"] == 3 and meta["num_duplicates_removed"] == 0
    assert meta["num_items_without_text"] == 0 and meta["text_dim"] == 32
    assert meta["text_precision"] in ("float32", "bfloat16")  # auto, as resolved here
    assert meta["split"] == {"strategy": "random", "test_ratio": 0.2, "valid_ratio": 0.1,
                             "cold_items": 0.1, "seed": 0}
    stats = json.loads((trained / "graph" / "stats.json").read_text())
    assert {"density", "user_degree", "item_degree", "head_interaction_share",
            "components"} <= set(stats)
    assert temp_leftovers(trained) == []


def test_rebuild_hits_the_text_cache(work: Path, planted, tiny_bert: str) -> None:
    result = ok(run(work, "build-graph", "--interactions", str(planted.interactions), "--items",
                    str(planted.items), "--text-model", tiny_bert, "--cold-items", "0.1"))
    assert "graph: 42 users, 30 items" in result.stdout
    meta = json.loads((work / "graph" / "meta.json").read_text())
    assert meta["text"]["encoded"] == 0 and meta["text"]["cached"] == 30


def test_build_graph_text_precision(work: Path, planted, tiny_bert: str) -> None:
    args = ["build-graph", "--interactions", str(planted.interactions), "--items",
            str(planted.items), "--text-model", tiny_bert, "--cold-items", "0.1"]
    meta = {}
    for precision in ("float32", "bfloat16"):
        ok(run(work, *args, "--text-precision", precision))
        meta[precision] = json.loads((work / "graph" / "meta.json").read_text())
        assert meta[precision]["text_precision"] == precision
    # The trained fixture's cache (auto) served one of the two; the other was encoded afresh.
    assert meta["float32"]["text"]["cached"] + meta["bfloat16"]["text"]["cached"] == 30
    result = run(work, *args, "--text-precision", "float16")
    assert result.exit_code == 2 and "--text-precision" in result.stderr
    assert "Traceback" not in result.output
    # The Python API refuses it before reading any input.
    with pytest.raises(ConfigError, match="text_precision 'float16'"):
        build_graph(BuildConfig(interactions="/nonexistent.csv", text_precision="float16"),
                    work / "other")


def test_train_writes_model_dir(trained: Path) -> None:
    model = trained / "model"
    assert {"model.pt", "config.json", "metrics.json", "embeddings.npz", "known.npz",
            "users.txt", "items.jsonl", "text_emb.npy"} <= {p.name for p in model.iterdir()}
    metrics = json.loads((model / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]
    assert all({"loss", "train_seconds", "valid"} <= set(row) for row in metrics["history"])
    assert "recall@20" in metrics["test"] and metrics["test"]["num_cold_items"] == 3
    assert "cold_recall@20" not in metrics["test"]  # 3 cold items: a list of 20 holds them all
    config = json.loads((model / "config.json").read_text())
    init = config["train"]["item_init"]
    assert init in ("text", "text+id") and config["train"]["dim"] == 8  # auto, with text
    state = torch.load(model / "model.pt", weights_only=True)
    expected = {"user_emb.weight", "text_proj.weight"} | (
        {"item_emb.weight"} if init == "text+id" else set())
    assert set(state) == expected
    assert not (trained / "model.ckpt").exists()  # removed once the model is saved


def test_evaluate_json_is_one_document(trained: Path) -> None:
    result = ok(run(trained, "evaluate", "--json", "--k", "10,20"))
    doc = json.loads(result.stdout)
    assert doc["split"] == "test"
    for k in (10, 20):
        for name in ("recall", "ndcg", "precision", "hit", "coverage", "tail_recall"):
            assert 0.0 <= doc["model"][f"{name}@{k}"] <= 1.0
        assert f"cold_recall@{k}" not in doc["model"]  # 3 cold items: trivially all found
    assert doc["model"]["num_users"] == 42
    assert doc["model"]["recall@20"] >= doc["model"]["recall@10"]


def test_evaluate_baselines_and_table(trained: Path) -> None:
    doc = json.loads(ok(run(trained, "evaluate", "--json", "--baselines")).stdout)
    assert set(doc["baselines"]) == {"most-popular", "item-knn"}
    assert "recall@20" in doc["baselines"]["item-knn"]
    table = ok(run(trained, "evaluate", "--baselines", "--split", "valid")).stdout
    assert "valid split" in table and "most-popular" in table and "recall@20" in table


def test_recommend_user_json(trained: Path) -> None:
    doc = json.loads(ok(run(trained, "recommend", "--user", "4", "-k", "5", "--json")).stdout)
    assert doc["user"] == "4" and doc["k"] == 5 and len(doc["items"]) == 5
    scores = [r["score"] for r in doc["items"]]
    assert scores == sorted(scores, reverse=True)
    graph = load_graph(trained / "graph")
    u = graph.user_ids.tolist().index("4")
    known = set(graph.item_ids[graph.items[graph.users == u]].tolist())
    assert not known & {r["item"] for r in doc["items"]}
    assert all(r["title"] for r in doc["items"])
    seen = json.loads(ok(run(trained, "recommend", "--user", "4", "-k", "30", "--include-seen",
                             "--json")).stdout)
    assert known <= {r["item"] for r in seen["items"]}


def test_recommend_plain_text(trained: Path) -> None:
    lines = ok(run(trained, "recommend", "--user", "4", "-k", "3")).stdout.splitlines()
    assert len(lines) == 3 and lines[0].lstrip().startswith("1.")


def test_recommend_history(trained: Path) -> None:
    doc = json.loads(ok(run(trained, "recommend", "--history", "101, 102", "-k", "4",
                            "--json")).stdout)
    assert doc["history"] == ["101", "102"] and len(doc["items"]) == 4
    assert not {"101", "102"} & {r["item"] for r in doc["items"]}


def test_recommend_all_users(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    result = ok(run(trained, "recommend", "--all-users", "-k", "5", "--output", str(out)))
    assert "42 users" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 42 and len({r["user"] for r in rows}) == 42
    assert all(len(r["items"]) == len(r["scores"]) == 5 for r in rows)
    single = json.loads(ok(run(trained, "recommend", "--user", rows[0]["user"], "-k", "5",
                               "--json")).stdout)
    assert [r["item"] for r in single["items"]] == rows[0]["items"]
    assert temp_leftovers(tmp_path) == []


def test_similar_items_including_cold(trained: Path) -> None:
    doc = json.loads(ok(run(trained, "similar", "--item", "101", "-k", "4", "--json")).stdout)
    assert doc["item"] == "101" and len(doc["items"]) == 4
    assert "101" not in {r["item"] for r in doc["items"]}
    graph = load_graph(trained / "graph")
    cold = graph.item_ids[graph.cold_items][0]
    doc = json.loads(ok(run(trained, "similar", "--item", cold, "--json")).stdout)
    assert len(doc["items"]) == 10 and all(np.isfinite(r["score"]) for r in doc["items"])


@pytest.mark.parametrize("fmt", ["graphml", "gexf"])
def test_export_graph(trained: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"g.{fmt}"
    result = ok(run(trained, "export-graph", "--format", fmt, "--output", str(out)))
    meta = json.loads((trained / "graph" / "meta.json").read_text())
    g = nx.read_graphml(out) if fmt == "graphml" else nx.read_gexf(out)
    assert g.number_of_nodes() == meta["num_users"] + meta["num_items"]
    assert g.number_of_edges() == meta["num_train"]
    assert f"{g.number_of_nodes()} nodes, {g.number_of_edges()} edges" in result.stdout
    assert g.nodes["i:101"]["kind"] == "item" and g.nodes["u:1"]["kind"] == "user"
    assert temp_leftovers(tmp_path) == []


def test_export_graph_default_path(work: Path) -> None:
    ok(run(work, "export-graph"))
    assert (work / "graph.graphml").exists()


# ----------------------------------------------------------------------------- bad input


def assert_no_graph(workdir: Path) -> None:
    assert not (workdir / "graph").exists()
    assert temp_leftovers(workdir) == []


def test_missing_files(tmp_path: Path, planted) -> None:
    missing = tmp_path / "nope.csv"
    result = run(tmp_path / "w", "build-graph", "--interactions", str(missing))
    one_line_error(result, "--interactions", str(missing), "file not found")
    result = run(tmp_path / "w", "build-graph", "--interactions", str(planted.interactions),
                 "--items", str(missing))
    one_line_error(result, "--items", str(missing), "file not found")
    result = run(tmp_path / "w", "build-graph", "--train", str(missing), "--no-text")
    one_line_error(result, "--train", str(missing), "file not found")
    assert_no_graph(tmp_path / "w")


@pytest.mark.parametrize(
    ("text", "extra", "needles"),
    [
        ("user,item,rating\n", [], ("header only",)),
        ("", [], ("file is empty",)),
        ("user,product\n1,2\n", [], ("no item column", "product", "--item-col")),
        ("user,item\n1,2\n", ["--user-col", "customer"], ("no column 'customer'",
                                                          "--user-col")),
        ("user,item,rating\n1,2,5\n1,3,good\n", [], ("line 3", "'good'", "not a number")),
        ("user,item,rating\n1,2,5\n1,3\n", [], ("line 3", "2 fields, expected 3")),
    ],
    ids=["header-only", "empty", "missing-column", "misnamed-column", "non-numeric-rating",
         "field-count"],
)
def test_bad_interactions_file(tmp_path: Path, text: str, extra: list[str],
                               needles: tuple[str, ...]) -> None:
    path = tmp_path / "log.csv"
    path.write_text(text)
    result = run(tmp_path / "w", "build-graph", "--interactions", str(path), "--no-text",
                 *extra)
    one_line_error(result, str(path), *needles)
    assert_no_graph(tmp_path / "w")


def test_malformed_lightgcn_line(tmp_path: Path, lightgcn_files) -> None:
    bad = tmp_path / "train.txt"
    bad.write_text("0 1 2\n1 2 three\n")
    result = run(tmp_path / "w", "build-graph", "--train", str(bad), "--test",
                 str(lightgcn_files.test), "--no-text")
    one_line_error(result, "--train", str(bad), "line 2", "'three'")
    assert_no_graph(tmp_path / "w")


def test_lightgcn_build(tmp_path: Path, lightgcn_files) -> None:
    result = ok(run(tmp_path / "w", "build-graph", "--train", str(lightgcn_files.train),
                    "--test", str(lightgcn_files.test), "--no-text"))
    assert "train 13, valid 0, test 6, cold items 1" in result.stdout


def test_unknown_text_model(tmp_path: Path, planted, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run(tmp_path / "w", "build-graph", "--interactions", str(planted.interactions),
                 "--items", str(planted.items), "--text-model", "no-such-org/no-such-model")
    one_line_error(result, "--text-model 'no-such-org/no-such-model'")
    assert_no_graph(tmp_path / "w")


def test_text_model_folder_without_model(tmp_path: Path, planted) -> None:
    folder = tmp_path / "empty-model"
    folder.mkdir()
    result = run(tmp_path / "w", "build-graph", "--interactions", str(planted.interactions),
                 "--items", str(planted.items), "--text-model", str(folder))
    one_line_error(result, "--text-model", str(folder))
    assert_no_graph(tmp_path / "w")


def test_items_without_any_text(tmp_path: Path, planted) -> None:
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n999,unrelated\n")
    result = run(tmp_path / "w", "build-graph", "--interactions", str(planted.interactions),
                 "--items", str(items), "--text-model", "unused")
    one_line_error(result, "no item has text", "--no-text")
    assert_no_graph(tmp_path / "w")


def test_bad_option_values_are_one_line(tmp_path: Path, planted) -> None:
    args = ["build-graph", "--interactions", str(planted.interactions), "--no-text"]
    one_line_error(run(tmp_path / "w", *args, "--test-ratio", "0.7", "--valid-ratio", "0.4"),
                   "--test-ratio 0.7")
    one_line_error(run(tmp_path / "w", *args, "--cold-items", "1.5"), "--cold-items 1.5")
    one_line_error(run(tmp_path / "w", *args, "--min-rating", "6"), "no interactions left")
    assert_no_graph(tmp_path / "w")


def test_failed_build_keeps_the_previous_graph(work: Path, tmp_path: Path) -> None:
    before = tree_bytes(work / "graph")
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,rating\n1,2,x\n")
    one_line_error(run(work, "build-graph", "--interactions", str(bad), "--no-text"), str(bad))
    assert tree_bytes(work / "graph") == before


def test_duplicates_are_counted(tmp_path: Path, planted) -> None:
    lines = planted.interactions.read_text().splitlines()
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join(lines + lines[1:4] + lines[5:6]) + "\n")
    result = ok(run(tmp_path / "w", "build-graph", "--interactions", str(dup), "--no-text"))
    meta = json.loads((tmp_path / "w" / "graph" / "meta.json").read_text())
    assert meta["num_duplicates_removed"] == 4
    assert meta["num_raw_rows"] == planted.num_rows + 4
    assert meta["num_interactions"] == planted.num_rows
    assert "removed 4 duplicate interactions" in result.stdout
    assert "dropped 4 duplicate" in result.stderr


def test_items_without_text_are_counted(tmp_path: Path, planted, tiny_bert: str) -> None:
    lines = planted.items.read_text().splitlines()
    items = tmp_path / "items.csv"
    items.write_text("\n".join(lines[:-5]) + "\n")  # the last 5 items have no row
    result = ok(run(tmp_path / "w", "build-graph", "--interactions", str(planted.interactions),
                    "--items", str(items), "--text-model", tiny_bert))
    meta = json.loads((tmp_path / "w" / "graph" / "meta.json").read_text())
    assert meta["num_items_without_text"] == 5
    assert "5 items have no text" in result.stderr
    graph = load_graph(tmp_path / "w" / "graph")
    no_text = np.array([not t for t in graph.item_texts])
    assert no_text.sum() == 5 and not graph.text_emb[no_text].any()


def test_unknown_user_suggests_history(trained: Path) -> None:
    one_line_error(run(trained, "recommend", "--user", "no-such-user"), "--user 'no-such-user'",
                   "--history")


def test_unknown_items(trained: Path) -> None:
    one_line_error(run(trained, "similar", "--item", "999"), "--item '999'", "not in the model")
    one_line_error(run(trained, "recommend", "--history", "101,999"), "--history '999'")


@pytest.mark.parametrize(
    "args",
    [["recommend", "--user", "1", "-k", "0"], ["recommend", "--history", "101", "-k", "-2"],
     ["similar", "--item", "101", "-k", "0"], ["evaluate", "--k", "0"],
     ["evaluate", "--k", "ten"]],
)
def test_bad_k(trained: Path, args: list[str]) -> None:
    one_line_error(run(trained, *args), "-k" if "-k" in args else "--k")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu(work: Path) -> None:
    one_line_error(run(work, "evaluate", "--device", "cuda"), "--device 'cuda'", "no GPU")
    shutil.rmtree(work / "model")
    one_line_error(run(work, "train", "--epochs", "1", "--device", "cuda"), "--device 'cuda'",
                   "no GPU")
    assert not (work / "model").exists() and not (work / "model.ckpt").exists()


def test_missing_graph_and_model(tmp_path: Path) -> None:
    one_line_error(run(tmp_path, "train"), "graph directory", "build-graph")
    one_line_error(run(tmp_path, "recommend", "--user", "1"), "model directory", "train")
    one_line_error(run(tmp_path, "export-graph"), "graph directory")


def test_model_from_another_graph_is_refused(work: Path, planted) -> None:
    # Same data, another seed: another split, so the model's test items were trained on.
    ok(run(work, "build-graph", "--interactions", str(planted.interactions), "--no-text",
           "--seed", "1"))
    one_line_error(run(work, "evaluate"), str(work / "model"), "different graph", "fingerprint")
    # Serving needs only the model directory, so recommend still works.
    ok(run(work, "recommend", "--user", "1"))


def test_compare_two_models(work: Path, planted) -> None:
    second = work / "model-seed1"
    out = ok(run(work, "train", *TRAIN_ARGS, "--seed", "1", "--output", str(second)))
    assert f"wrote {second}" in out.stdout
    assert (work / "model").resolve() != second.resolve()
    doc = json.loads(ok(run(work, "compare", str(work / "model"), str(second), "--json",
                            "--k", "10,20", "--resamples", "500")).stdout)
    assert doc["users"] == 42 and doc["split"] == "test" and doc["resamples"] == 500
    assert list(doc["metrics"]) == ["recall@10", "ndcg@10", "tail_recall@10", "recall@20",
                                    "ndcg@20", "tail_recall@20"]
    single = json.loads(ok(run(work, "evaluate", "--json", "--k", "10,20")).stdout)["model"]
    for key, m in doc["metrics"].items():
        assert m["a"] == pytest.approx(single[key], abs=1e-9)
        assert m["diff"] == pytest.approx(m["b"] - m["a"], abs=1e-12)
        assert m["ci"][0] <= m["diff"] <= m["ci"][1]
        assert 0.0 < m["p_value"] <= m["p_holm"] <= 1.0
        assert m["wins_a"] + m["wins_b"] + m["ties"] == m["users"]
    table = ok(run(work, "compare", str(work / "model"), str(second), "--metrics",
                   "recall,tail_recall")).stdout
    for key in ("recall@20", "tail_recall@20"):
        m = doc["metrics"][key]
        flagged = f"note: {key}: the models differ on {m['wins_a'] + m['wins_b']} users" in table
        assert flagged == (0 < m["wins_a"] + m["wins_b"] < 50), key
    # A model against itself: no difference, interval [0, 0], p = 1.
    table = ok(run(work, "compare", str(second), str(second), "--metrics", "recall")).stdout
    assert "recall@20" in table and "[+0.0000, +0.0000]" in table and "1.0000" in table
    one_line_error(run(work, "compare", str(second), str(second), "--metrics", "coverage"),
                   "--metrics", "coverage")
    one_line_error(run(work, "compare", str(work / "no-model"), str(second)),
                   str(work / "no-model"), "not found")
    one_line_error(run(work, "compare", str(work / "graph"), str(second)),
                   str(work / "graph"), "config.json")
    one_line_error(run(work, "compare", str(second), str(second), "--metrics",
                       "cold_recall"), "--metrics", "cold_recall")  # 3 cold items only
    # Another graph: both models were trained on the old one.
    ok(run(work, "build-graph", "--interactions", str(planted.interactions), "--no-text",
           "--seed", "1"))
    one_line_error(run(work, "compare", str(work / "model"), str(second)),
                   str(work / "model"), "different graph")


def test_report_is_one_self_contained_file(work: Path) -> None:
    pytest.importorskip("matplotlib")
    second = work / "model-b"
    ok(run(work, "train", *TRAIN_ARGS, "--seed", "2", "--output", str(second)))
    out = ok(run(work, "report", "--compare", str(second), "--k", "10"))
    path = work / "report.html"
    assert f"wrote {path}" in out.stdout
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 5  # training curve, recall@K, long tail, tail/coverage, cold
    assert all(src.startswith("data:image/png;base64,") for src in images)
    for src in images:  # each is a real PNG
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from the network
    for text in ("recall@10", "most-popular", "item-knn", "tail_share@10", "Cold items",
                 "Comparison", "p Holm"):
        assert text in page, text
    single = json.loads(ok(run(work, "evaluate", "--json", "--k", "10")).stdout)["model"]
    assert f"<td>{single['recall@10']:.4f}</td>" in page
    one_line_error(run(work, "report", "--k", "0"), "--k")
    one_line_error(run(work, "report", "--output", str(path / "r.html")), "--output")


def test_model_of_another_format_version_is_refused(work: Path) -> None:
    path = work / "model" / "config.json"
    config = json.loads(path.read_text())
    config["format_version"] = 99
    path.write_text(json.dumps(config))
    one_line_error(run(work, "recommend", "--user", "1"), "format version 99")


def test_damaged_model_is_one_line(work: Path) -> None:
    (work / "model" / "embeddings.npz").write_bytes(b"garbage")
    one_line_error(run(work, "recommend", "--user", "1"), "unreadable")


# ----------------------------------------------------------------------------- interrupted saves


def interrupt_on(name: str, write_json):
    def patched(path, obj):
        if Path(path).name == name:
            raise KeyboardInterrupt
        return write_json(path, obj)

    return patched


def test_interrupted_graph_save_keeps_previous(work: Path, planted,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    before = tree_bytes(work / "graph")
    monkeypatch.setattr(store, "write_json", interrupt_on("meta.json", store.write_json))
    result = run(work, "build-graph", "--interactions", str(planted.interactions), "--no-text",
                 "--seed", "5")
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert "Traceback" not in result.output
    assert tree_bytes(work / "graph") == before
    assert temp_leftovers(work) == []


def test_interrupted_first_graph_save_leaves_nothing(tmp_path: Path, planted,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "write_json", interrupt_on("meta.json", store.write_json))
    result = run(tmp_path / "w", "build-graph", "--interactions", str(planted.interactions),
                 "--no-text")
    assert result.exit_code == 130
    assert_no_graph(tmp_path / "w")


def test_interrupted_model_save_keeps_previous(work: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    before = tree_bytes(work / "model")
    monkeypatch.setattr(artifact, "write_json", interrupt_on("metrics.json",
                                                             artifact.write_json))
    result = run(work, "train", *TRAIN_ARGS, "--seed", "9")
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert tree_bytes(work / "model") == before
    assert temp_leftovers(work) == []


# ----------------------------------------------------------------------------- resume


def test_resume_continues_from_checkpoint(trained: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    straight = Path(shutil.copytree(trained, tmp_path / "straight"))
    resumed = Path(shutil.copytree(trained, tmp_path / "resumed"))
    args = [*TRAIN_ARGS[2:], "--epochs", "4", "--seed", "2"]
    ok(run(straight, "train", *args))

    calls = {"n": 0}
    original = Trainer.train_epoch

    def dies_in_epoch_3(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_epoch", dies_in_epoch_3)
        result = run(resumed, "train", *args)
    assert result.exit_code == 130
    assert (resumed / "model.ckpt").exists()
    assert json.loads((resumed / "model" / "metrics.json").read_text())["history"][-1][
        "epoch"] == 3  # the old model is untouched

    # Changed settings are refused, naming them.
    one_line_error(run(resumed, "train", *args, "--dim", "16", "--resume"), "--resume", "dim",
                   banner=True)

    result = ok(run(resumed, "train", *args, "--resume"))
    assert "resumed from" in result.stderr and "at epoch 2" in result.stderr
    assert not (resumed / "model.ckpt").exists()
    history = json.loads((resumed / "model" / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    for name in ("user_emb.npy", "item_emb.npy"):
        np.testing.assert_allclose(np.load(resumed / "model" / name),
                                   np.load(straight / "model" / name), atol=1e-6)


def test_resume_without_checkpoint(work: Path) -> None:
    one_line_error(run(work, "train", "--resume", "--epochs", "1"), "--resume",
                   "no checkpoint", banner=True)


# ----------------------------------------------------------------------------- --debug


def test_debug_raises_instead_of_one_line(tmp_path: Path) -> None:
    from graphrec.errors import DataError

    result = run(tmp_path, "--debug", "build-graph", "--interactions", str(tmp_path / "x.csv"))
    assert result.exit_code != 0 and isinstance(result.exception, DataError)


def test_debug_prints_traceback_in_a_real_process(tmp_path: Path) -> None:
    # One real process (the one-line form is checked through CliRunner above).
    missing = tmp_path / "nope.csv"
    env = {k: v for k, v in os.environ.items() if k != "GRAPHREC_WORKDIR"}
    debug = subprocess.run(
        [sys.executable, "-m", "graphrec_cli.main", "--workdir", str(tmp_path / "w"), "--debug",
         "build-graph", "--interactions", str(missing)],
        capture_output=True, text=True, env=env, timeout=120)
    assert debug.returncode != 0 and debug.stdout == ""
    assert "Traceback" in debug.stderr and "graphrec.errors.DataError" in debug.stderr
    assert f"interactions {missing}: file not found" in debug.stderr


# ----------------------------------------------------------------------------- bundled data


def test_build_graph_on_bundled_movielens(tmp_path: Path) -> None:
    result = ok(run(tmp_path, "build-graph", "--no-text"))
    meta = json.loads((tmp_path / "graph" / "meta.json").read_text())
    assert meta["num_users"] == 610 and meta["num_items"] == 9_724
    assert meta["num_train"] + meta["num_valid"] + meta["num_test"] == 100_836
    assert "graph: 610 users, 9724 items" in result.stdout
    graph = load_graph(tmp_path / "graph")
    assert graph.csr(TRAIN).nnz == meta["num_train"]


# ----------------------------------------------------------------------------- more paths


def test_output_into_new_folder_and_unwritable_output(trained: Path, tmp_path: Path,
                                                      planted) -> None:
    out = tmp_path / "new" / "deeper" / "g.gexf"
    ok(run(trained, "export-graph", "--format", "gexf", "--output", str(out)))
    assert out.exists()
    under_a_file = planted.interactions / "all.jsonl"
    one_line_error(run(trained, "recommend", "--all-users", "--output", str(under_a_file)),
                   "--output", str(under_a_file))
    one_line_error(run(trained, "export-graph", "--output", str(under_a_file)), "--output")


def test_k_larger_than_catalog(trained: Path) -> None:
    doc = json.loads(ok(run(trained, "recommend", "--user", "1", "-k", "500", "--json")).stdout)
    graph = load_graph(trained / "graph")
    u = graph.user_ids.tolist().index("1")
    known = len(set(graph.items[graph.users == u].tolist()))
    assert len(doc["items"]) == graph.num_items - known
    doc = json.loads(ok(run(trained, "similar", "--item", "101", "-k", "500", "--json")).stdout)
    assert len(doc["items"]) == graph.num_items - 1


def test_lightgcn_end_to_end(tmp_path: Path, lightgcn_files) -> None:
    work = tmp_path / "w"
    ok(run(work, "build-graph", "--train", str(lightgcn_files.train), "--test",
           str(lightgcn_files.test), "--no-text"))
    result = ok(run(work, "train", "--epochs", "2", "--dim", "4", "--device", "cpu"))
    assert "best epoch" not in result.stdout  # no validation split: nothing to select on
    doc = json.loads(ok(run(work, "evaluate", "--json")).stdout)
    assert doc["model"]["num_users"] == 5 and doc["model"]["num_cold_items"] > 0
    assert "cold_recall@20" not in doc["model"]  # test-only items, fewer than 20
    one_line_error(run(work, "evaluate", "--split", "valid"), "no valid interactions")
    doc = json.loads(ok(run(work, "recommend", "--user", "2", "-k", "3", "--json")).stdout)
    assert len(doc["items"]) == 3
    assert not {"3", "4", "0", "6"} & {r["item"] for r in doc["items"]}  # known items masked


def test_pair_in_train_and_test_file_stays_test(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("0 1 2\n1 0 2\n")
    (tmp_path / "test.txt").write_text("0 2\n1 1\n")
    result = ok(run(tmp_path / "w", "build-graph", "--train", str(tmp_path / "train.txt"),
                    "--test", str(tmp_path / "test.txt"), "--no-text"))
    assert "removed 1 duplicate" in result.stdout
    graph = load_graph(tmp_path / "w" / "graph")
    pairs = {(int(graph.user_ids[u]), int(graph.item_ids[i])): int(f)
             for u, i, f in zip(graph.users, graph.items, graph.folds, strict=True)}
    assert pairs == {(0, 1): 0, (0, 2): 2, (1, 0): 0, (1, 2): 0, (1, 1): 2}


def test_temporal_split_without_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user,item\n1,2\n1,3\n2,2\n")
    result = run(tmp_path / "w", "build-graph", "--interactions", str(path), "--no-text",
                 "--split", "temporal")
    one_line_error(result, "--split 'temporal'", str(path), "timestamp")
    assert_no_graph(tmp_path / "w")


@pytest.mark.parametrize(("args", "needle"), [
    (["--epochs", "0"], "--epochs 0"),
    (["--item-init", "text"], "--item-init 'text'"),
    (["--layers", "-1"], "--layers -1"),
    (["--neg-candidates", "0"], "--neg-candidates 0"),
    (["--k", "0"], "--k '0'"),
])
def test_bad_train_options(tmp_path: Path, lightgcn_files, args: list[str], needle: str) -> None:
    work = tmp_path / "w"
    ok(run(work, "build-graph", "--train", str(lightgcn_files.train), "--test",
           str(lightgcn_files.test), "--no-text"))
    one_line_error(run(work, "train", "--device", "cpu", *args), needle)
    assert not (work / "model").exists()


def test_resume_from_another_graph_is_refused(tmp_path: Path, lightgcn_files, planted,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "w"
    ok(run(work, "build-graph", "--train", str(lightgcn_files.train), "--test",
           str(lightgcn_files.test), "--no-text"))
    original = Trainer.train_epoch

    def dies_in_epoch_2(self, *a, **kw):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_epoch", dies_in_epoch_2)
        assert run(work, "train", "--epochs", "3", "--device", "cpu").exit_code == 130
    ok(run(work, "build-graph", "--interactions", str(planted.interactions), "--no-text"))
    one_line_error(run(work, "train", "--epochs", "3", "--device", "cpu", "--resume"),
                   "--resume", banner=True)


def test_zero_padded_ids_keep_their_spelling(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("user,item\n007,001\n007,002\n008,002\n008,010\n009,001\n009,010\n")
    items = tmp_path / "items.csv"
    items.write_text("item,title\n001,one\n002,two\n010,ten\n")
    work = tmp_path / "w"
    ok(run(work, "build-graph", "--interactions", str(log), "--items", str(items),
           "--no-text", "--test-ratio", "0", "--valid-ratio", "0"))
    meta = json.loads((work / "graph" / "meta.json").read_text())
    assert meta["num_items_without_text"] == 0  # "001" in both files is the same item
    ok(run(work, "train", "--epochs", "1", "--dim", "4", "--device", "cpu"))
    doc = json.loads(ok(run(work, "recommend", "--user", "007", "--json")).stdout)
    assert [r["item"] for r in doc["items"]] == ["010"] and doc["items"][0]["title"] == "ten"


# ------------------------------------------------------------------------ --tail-boost, --diversity


def test_cli_tail_boost(trained: Path) -> None:  # noqa: F811
    plain = json.loads(ok(run(trained, "evaluate", "--json")).stdout)["model"]
    boosted = json.loads(ok(run(trained, "evaluate", "--json", "--tail-boost", "10")).stdout)
    assert boosted["model"]["tail_share@20"] > plain["tail_share@20"]
    user = load_graph(trained / "graph").user_ids[0]
    doc = json.loads(ok(run(trained, "recommend", "--user", str(user), "--tail-boost", "10",
                            "--json", "-k", "3")).stdout)
    rec = Recommender.load(trained / "model")  # degree shape: only tail items with
    for r in doc["items"]:                      # interactions are lifted
        assert rec.tail[rec.item_index(r["item"])] > 0
    flat = json.loads(ok(run(trained, "evaluate", "--json", "--tail-boost", "10",
                             "--tail-shape", "flat")).stdout)["model"]
    assert flat["tail_share@20"] > plain["tail_share@20"]
    assert flat != boosted["model"]
    one_line_error(run(trained, "recommend", "--user", str(user), "--tail-boost", "-1"),
                   "--tail-boost -1")
    one_line_error(run(trained, "evaluate", "--tail-boost", "nan"), "--tail-boost nan")


def test_cli_recommend_with_diversity(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    doc = json.loads(ok(run(trained, "recommend", "--user", "4", "-k", "5", "--diversity",
                            "0.5", "--json")).stdout)
    items = [r["item"] for r in doc["items"]]
    assert len(items) == len(set(items)) == 5
    graph = load_graph(trained / "graph")
    u = graph.user_ids.tolist().index("4")
    assert not set(graph.item_ids[graph.items[graph.users == u]].tolist()) & set(items)

    new = json.loads(ok(run(trained, "recommend", "--history", "101,102", "-k", "4",
                            "--diversity", "1", "--json")).stdout)
    assert len({r["item"] for r in new["items"]} - {"101", "102"}) == 4

    out = tmp_path / "all.jsonl"
    ok(run(trained, "recommend", "--all-users", "-k", "5", "--diversity", "0.5",
           "--output", str(out)))
    rows = {r["user"]: r["items"] for r in map(json.loads, out.read_text().splitlines())}
    assert len(rows) == 42 and rows["4"] == items


@pytest.mark.parametrize("value", ["2", "-0.5", "nan"])
def test_cli_bad_diversity(trained: Path, value: str) -> None:  # noqa: F811
    one_line_error(run(trained, "recommend", "--user", "4", "--diversity", value),
                   "--diversity")


def test_a_second_writer_of_the_workdir_gets_one_line(work: Path, tmp_path: Path) -> None:
    from graphrec.fsio import exclusive_lock

    before = tree_bytes(work / "model")
    with exclusive_lock(work, "graphrec train"):  # as a running train would hold it
        for args in (("train", *TRAIN_ARGS), ("build-graph", "--no-text"),
                     ("add-items", "--items", str(tmp_path / "x.csv"))):
            one_line_error(run(work, *args), "workdir", "in use by pid", "graphrec train")
    assert tree_bytes(work / "model") == before
    user = (work / "model" / "users.txt").read_text().split()[0]
    ok(run(work, "recommend", "--user", user))  # readers never wait


def test_a_damaged_checkpoint_is_one_line_without_torch_advice(work: Path) -> None:
    (work / "model.ckpt").write_bytes(b"\x80\x04garbage")
    line = one_line_error(run(work, "train", *TRAIN_ARGS, "--resume"), "--resume", "damaged",
                          banner=True)
    assert "weights_only" not in line


DAMAGES = {"empty": lambda b: b"", "half": lambda b: b[:len(b) // 2],
           "garbage": lambda b: b"\x00garbage{["}


@pytest.mark.parametrize("kind", ["model", "graph"])
def test_every_damaged_artefact_file_is_one_line(work: Path, tmp_path: Path, kind: str) -> None:
    from graphrec.fsio import resolve_version

    source, _ = resolve_version(work / kind)
    names = sorted(p.name for p in source.iterdir() if p.is_file())
    user = (work / "model" / "users.txt").read_text().split()[0]
    args = ("recommend", "--user", user) if kind == "model" else ("train", *TRAIN_ARGS)
    batch = write_csv(tmp_path / "batch.csv", ["user", "item"], [[user, "130"], ["new", "101"]])
    checked = 0
    for name in names:
        if name == "metrics.json":  # history for people: serving never reads it
            continue
        # Fold-in's arrays are read by update, not by serving.
        used_by = ("update", "--interactions", str(batch)) \
            if name in ("user_layers.npy", "item_layers.npy", "train.npz") else args
        for how, damage in DAMAGES.items():
            copy = tmp_path / f"{name}-{how}"
            shutil.copytree(work, copy)  # follows the links: a plain, private copy
            target = copy / kind / name
            target.write_bytes(damage(target.read_bytes()))
            result = run(copy, *used_by)
            if how == "half":  # may still read whole (a zip's header, a consistent prefix)
                assert result.exit_code in (0, 1), (name, how, result.output)
            else:
                assert result.exit_code == 1, (name, how, result.output)
            if result.exit_code:
                line = one_line_error(result, kind, banner=True)
                assert "unsafely" not in line and "allow_pickle" not in line, line
            checked += 1
    assert checked >= 15


def test_the_workdir_may_follow_the_command_and_bad_places_are_one_line(
        work: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from graphrec_cli.main import main

    user = (work / "model" / "users.txt").read_text().split()[0]
    runner = CliRunner(env={"GRAPHREC_DEVICE": None, "GRAPHREC_WORKDIR": None})
    after = runner.invoke(main, ["recommend", "--workdir", str(work), "--user", user, "--json"])
    before = runner.invoke(main, ["--workdir", str(work), "recommend", "--user", user, "--json"])
    assert after.exit_code == 0 and after.stdout == before.stdout
    (tmp_path / "file").write_text("")
    one_line_error(run(tmp_path / "file" / "w", "build-graph", "--no-text"), "Not a directory")
    one_line_error(run(tmp_path / "w", "build-graph", "--no-text", "--seed", "-1"), "--seed -1")


def test_artefacts_that_load_but_do_not_fit_are_one_line(work: Path) -> None:
    import torch

    from graphrec.fsio import resolve_version

    graph, _ = resolve_version(work / "graph")
    with np.load(graph / "interactions.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(graph / "interactions.npz", **{**arrays, "items": arrays["items"] + 10_000})
    one_line_error(run(work, "train", *TRAIN_ARGS), "interactions.npz does not fit", banner=True)
    np.savez(graph / "interactions.npz", **arrays)
    model, _ = resolve_version(work / "model")
    with np.load(model / "embeddings.npz") as z:
        kept = {k: z[k] for k in z.files if k != "item_degree"}
    np.savez(model / "embeddings.npz", **kept)
    one_line_error(run(work, "similar", "--item", "101"), "no item_degree")
    torch.save({"model": {}}, work / "model.ckpt")  # loads, but is not a whole checkpoint
    one_line_error(run(work, "train", *TRAIN_ARGS, "--resume"), "--resume", "lacks config",
                   banner=True)


def test_titles_with_control_characters_export_and_read_back(planted, tmp_path: Path) -> None:
    import csv

    import networkx as nx

    items = tmp_path / "items.csv"
    with open(planted.items, newline="") as f:
        rows = list(csv.reader(f))
    rows[1][1] = "Bad\x1b[31m\x07 title\x0b"  # escape codes, bell, vertical tab
    with open(items, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    work = tmp_path / "w"
    ok(run(work, "build-graph", "--interactions", str(planted.interactions), "--items",
           str(items), "--no-text"))
    ok(run(work, "export-graph", "--format", "graphml"))
    graph = nx.read_graphml(work / "graph.graphml")  # networkx reads its own file back
    assert not any(ord(c) < 32 for _, d in graph.nodes(data=True) for v in d.values()
                   for c in str(v))


def test_progress_in_a_log_is_a_few_lines(planted, tiny_bert: str, tmp_path: Path) -> None:
    result = ok(run(tmp_path / "w", "build-graph", "--interactions", str(planted.interactions),
                    "--items", str(planted.items), "--text-model", tiny_bert))
    assert len(result.stderr.splitlines()) <= 6, result.stderr  # not one line per refresh
