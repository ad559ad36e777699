"""`graphrec add-items`: new items placed from their text in a trained model, no retraining.

One module-scoped workdir is built and trained once on the planted communities, with a tiny
BERT that knows the communities' words; tests that change a model work on a copy of it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from graphrec.artifacts.graph_dir import load_graph
from graphrec.artifacts.model_dir import load_arrays
from graphrec.data import io
from graphrec.errors import ArtifactError, DataError
from graphrec.serve import additems
from graphrec.serve.additems import add_items, add_items_from_file
from graphrec.serve.recommender import Recommender
from graphrec.text import embed_texts
from tests.helpers import (
    COMMUNITY_WORDS,
    ok,
    one_line_error,
    run,
    temp_leftovers,
    tree_bytes,
    write_csv,
)

TRAIN_ARGS = ["--epochs", "10", "--batch-size", "64", "--lr", "0.05", "--dim", "16",
              "--eval-every", "0", "--device", "cpu", "--seed", "0"]
NEW = [f"n{c}" for c in range(len(COMMUNITY_WORDS))]
"""Added item ids: NEW[c] has community c's words."""


@pytest.fixture(scope="module")
def topical_bert(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny BERT with each community's words pushed along one axis of its own.

    A random BERT maps every text to nearly one direction (cosine > 0.9 across communities),
    too weak a signal to rank by; a pretrained encoder separates topics, and so does this one
    (cosine ~0.98 within a community, ~0.5 across).
    """
    from transformers import AutoTokenizer, BertModel

    folder = Path(shutil.copytree(tiny_bert, tmp_path_factory.mktemp("topical") / "bert"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder)
    with torch.no_grad():
        weight = model.embeddings.word_embeddings.weight
        for c, words in enumerate(COMMUNITY_WORDS):
            for token in tokenizer(list(words), add_special_tokens=False)["input_ids"]:
                weight[token, c] += 0.1
    model.save_pretrained(folder)
    return str(folder)


# This module's own ``trained`` and ``work`` (the topical BERT, 10 epochs) take the place
# of tests/conftest.py's.
@pytest.fixture(scope="module")
def trained(planted, topical_bert: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir with graph/ (10% cold items) and model/ (10 epochs)."""
    workdir = tmp_path_factory.mktemp("add-items") / "work"
    ok(run(workdir, "build-graph", "--interactions", str(planted.interactions), "--items",
           str(planted.items), "--text-model", topical_bert, "--cold-items", "0.1"))
    ok(run(workdir, "train", *TRAIN_ARGS))
    return workdir


@pytest.fixture
def work(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "work"))


def new_items_file(folder: Path, ids: list[str] = NEW) -> Path:
    """An item file like the planted one: NEW[c] titled and described in community c's words."""
    rows = []
    for rid in ids:
        words = COMMUNITY_WORDS[int(rid[1:])]
        rows.append([rid, f"{words[0].title()} new", " ".join(words[1:6])])
    return write_csv(folder / "new_items.csv", ["item_id", "title", "description"], rows)


@pytest.fixture(scope="module")
def added(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained workdir with NEW added through the CLI."""
    workdir = Path(shutil.copytree(trained, tmp_path_factory.mktemp("added") / "work"))
    result = ok(run(workdir, "add-items", "--items", str(new_items_file(workdir.parent))))
    assert result.stdout.startswith(f"added 3 items to {workdir / 'model'}")
    return workdir


# ----------------------------------------------------------------------------- placement


@pytest.mark.parametrize("c", range(len(COMMUNITY_WORDS)))
def test_added_item_is_recommended_to_its_community(added: Path, planted, c: int) -> None:
    rec = Recommender.load(added / "model")
    assert rec.num_items == 33 and rec.item_ids[-3:].tolist() == NEW
    k = 5  # of 33 items; each user already has 6-7 of them
    hits = {True: 0, False: 0}
    for user, community in planted.user_community.items():
        hits[community == c] += NEW[c] in [r.item for r in rec.recommend(user, k)]
    users = len(planted.user_community) // 3
    # Right after the user's own unseen items (4 on average) for its community's users, below
    # most items for everyone else.
    assert hits[True] >= users - 2 and hits[False] <= 2, hits
    # A new user whose history is a whole community: that community's new item comes first.
    for b in range(len(COMMUNITY_WORDS)):
        history = [i for i, community in planted.item_community.items() if community == b]
        top = rec.recommend_new_user(history, 1)[0].item
        assert (top == NEW[c]) == (b == c), (b, top)


@pytest.mark.parametrize("c", range(len(COMMUNITY_WORDS)))
def test_similar_to_added_item_is_its_community(added: Path, planted, c: int) -> None:
    doc = json.loads(ok(run(added, "similar", "--item", NEW[c], "-k", "5", "--json")).stdout)
    assert doc["item"] == NEW[c] and len(doc["items"]) == 5
    assert all(planted.item_community[r["item"]] == c for r in doc["items"]), doc["items"]


def test_added_item_is_placed_like_a_cold_item(work: Path, planted) -> None:
    """Same text as a cold item -> the same text embedding and the same final embedding."""
    before = load_arrays(work / "model")
    graph = load_graph(work / "graph")
    cold = int(np.flatnonzero(graph.cold_items)[0])
    text = io.read_items(planted.items)
    row = text.ids.tolist().index(graph.item_ids[cold])
    result = add_items(work / "model", ["twin"], ["Twin"], [text.texts[row]],
                       cache_dir=work / "cache" / "text")
    assert (result.added, result.num_items) == (1, 31)
    after = load_arrays(work / "model")
    np.testing.assert_allclose(after["text_emb"][-1], before["text_emb"][cold], atol=1e-6)
    np.testing.assert_allclose(after["item_emb"][-1], before["item_emb"][cold], atol=1e-5)
    # Everything that was there stays as it was; the new item has no edges.
    for key in ("user_emb", "text_map"):
        np.testing.assert_array_equal(after[key], before[key])
    for key in ("item_emb", "text_emb", "item_degree", "cold_items"):
        np.testing.assert_array_equal(after[key][:30], before[key])
    assert after["item_degree"][-1] == 0 and after["cold_items"][-1]
    np.testing.assert_array_equal(after["known"].indptr, before["known"].indptr)
    np.testing.assert_array_equal(after["known"].indices, before["known"].indices)
    assert after["item_ids"][-1] == "twin" and after["item_titles"][-1] == "Twin"
    config = json.loads((work / "model" / "config.json").read_text())
    assert config["added_items"] == 1 and config["graph"]["num_items"] == 30
    # Added twice: the count adds up.
    add_items(work / "model", ["twin2"], ["Twin 2"], [text.texts[row]])
    assert json.loads((work / "model" / "config.json").read_text())["added_items"] == 2
    assert temp_leftovers(work) == []


def test_two_sided_model_places_an_added_item_like_a_cold_item(work: Path, planted) -> None:
    """``--cold-start two-sided`` keeps its choice in metrics.json, and an added item with a
    cold item's text lands where that cold item is."""
    ok(run(work, "train", *TRAIN_ARGS, "--cold-start", "two-sided"))
    metrics = json.loads((work / "model" / "metrics.json").read_text())
    assert metrics["cold_start"]["items"] in ("cold", "pseudo-cold", "none")
    before = load_arrays(work / "model")
    graph = load_graph(work / "graph")
    cold = int(np.flatnonzero(graph.cold_items)[0])
    text = io.read_items(planted.items)
    row = text.ids.tolist().index(graph.item_ids[cold])
    add_items(work / "model", ["twin"], ["Twin"], [text.texts[row]],
              cache_dir=work / "cache" / "text")
    after = load_arrays(work / "model")
    np.testing.assert_allclose(after["item_emb"][-1], before["item_emb"][cold], atol=1e-5)


def test_evaluate_after_add_items_scores_the_graph_items(trained: Path, added: Path) -> None:
    """The added items have no interactions in the graph's split; evaluation ranks only the
    graph's items, so the metrics are those of the model as trained."""
    before = json.loads(ok(run(trained, "evaluate", "--json", "--k", "5,20")).stdout)
    after = json.loads(ok(run(added, "evaluate", "--json", "--k", "5,20")).stdout)
    assert after["model"] == before["model"]


def test_recommend_all_and_history_see_added_items(added: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    ok(run(added, "recommend", "--all-users", "-k", "33", "--include-seen", "--output", str(out)))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(set(NEW) <= set(r["items"]) for r in rows)
    doc = json.loads(ok(run(added, "recommend", "--history", "n0,101", "-k", "3",
                            "--json")).stdout)
    assert len(doc["items"]) == 3 and not {"n0", "101"} & {r["item"] for r in doc["items"]}


# ----------------------------------------------------------------------------- CLI


def test_cli_round_trip(work: Path, planted, tmp_path: Path) -> None:
    items = write_csv(tmp_path / "new.tsv", ["sku", "name", "blurb", "ignored"],
                      [["n2", "Kitchen new", "recipe chef bake pasta flavor", "zzz"]],
                      delimiter="\t")
    model_dir = tmp_path / "elsewhere" / "model"
    shutil.copytree(work / "model", model_dir)
    result = ok(run(work, "add-items", "--items", str(items), "--item-id-col", "sku",
                    "--text-cols", "name, blurb", "--model-dir", str(model_dir)))
    assert result.stdout.splitlines() == [f"added 1 items to {model_dir} (31 items now)"]
    assert Recommender.load(work / "model").num_items == 30  # --model-dir was the target
    shutil.rmtree(work / "model")
    shutil.move(model_dir, work / "model")
    user = next(u for u, c in planted.user_community.items() if c == 2)
    doc = json.loads(ok(run(work, "recommend", "--user", user, "-k", "5", "--json")).stdout)
    assert doc["user"] == user and "n2" in [r["item"] for r in doc["items"]]
    assert next(r for r in doc["items"] if r["item"] == "n2")["title"] == "Kitchen new"


# ----------------------------------------------------------------------------- bad input


def test_ids_already_in_the_model(work: Path, tmp_path: Path) -> None:
    before = tree_bytes(work / "model")
    rows = [["101", "Space again", "space rocket"], ["n0", "New", "space rocket"],
            ["102", "Space again", "space rocket"]]
    items = write_csv(tmp_path / "dup.csv", ["item_id", "title", "description"], rows)
    one_line_error(run(work, "add-items", "--items", str(items)), f"--items {items}",
                   "2 item ids already in model directory", "'101', '102'")
    assert tree_bytes(work / "model") == before
    # Added once, refused the second time.
    ok(run(work, "add-items", "--items", str(new_items_file(tmp_path, ["n0"]))))
    one_line_error(run(work, "add-items", "--items", str(new_items_file(tmp_path, ["n0"]))),
                   "already in model directory", "'n0'")


def test_repeated_empty_and_textless_items(work: Path, tmp_path: Path) -> None:
    header = ["item_id", "title", "description"]
    cases = [
        ([["n0", "A", "space"], ["n0", "B", "space"]], "item 'n0' twice"),
        ([["n0", "A", "space"], [" ", "B", "space"]], "item #2 has an empty id"),
        ([["n0", "", ""]], "1 items have no text ('n0')"),
    ]
    before = tree_bytes(work / "model")
    for rows, needle in cases:
        items = write_csv(tmp_path / "bad.csv", header, rows)
        one_line_error(run(work, "add-items", "--items", str(items)), f"--items {items}", needle)
    one_line_error(run(work, "add-items", "--items", str(tmp_path / "nope.csv")),
                   "nope.csv", "not found")
    one_line_error(run(work, "add-items", "--items", str(new_items_file(tmp_path)),
                       "--text-cols", "nope"), "no column 'nope'")
    assert tree_bytes(work / "model") == before
    with pytest.raises(DataError, match="no items"):
        add_items(work / "model", [], [], [])


def test_model_without_text(tmp_path: Path, planted) -> None:
    workdir = tmp_path / "work"
    ok(run(workdir, "build-graph", "--interactions", str(planted.interactions), "--no-text"))
    ok(run(workdir, "train", "--epochs", "1", *TRAIN_ARGS[2:]))
    one_line_error(run(workdir, "add-items", "--items", str(new_items_file(tmp_path))),
                   f"model directory {workdir / 'model'} has no text map", "--no-text",
                   "adding items needs text")


def test_missing_model(tmp_path: Path) -> None:
    one_line_error(run(tmp_path, "add-items", "--items", str(new_items_file(tmp_path))),
                   "model directory", "not found", "train")


# ----------------------------------------------------------------------------- interrupted writes


def test_interrupted_add_keeps_previous(work: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """config.json is written last, after the new arrays and items.jsonl: an interrupt there
    leaves the old directory, byte for byte, and no temporary one."""
    before = tree_bytes(work / "model")
    write_json = additems.write_json

    def interrupted(path, obj):
        if Path(path).name == "config.json":
            raise KeyboardInterrupt
        return write_json(path, obj)

    monkeypatch.setattr(additems, "write_json", interrupted)
    result = run(work, "add-items", "--items", str(new_items_file(tmp_path)))
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert tree_bytes(work / "model") == before
    assert temp_leftovers(work) == []
    assert Recommender.load(work / "model").num_items == 30


def test_failed_write_keeps_previous(work: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    before = tree_bytes(work / "model")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(additems.np, "save", disk_full)  # text_emb.npy, after embeddings.npz
    with pytest.raises(OSError, match="No space"):
        add_items_from_file(work / "model", new_items_file(tmp_path))
    assert tree_bytes(work / "model") == before
    assert temp_leftovers(work) == []
    rec = Recommender.load(work / "model")
    assert rec.num_items == 30 and rec.item_emb.shape[0] == 30


def test_text_model_of_another_width_is_refused(work: Path, tiny_bert: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = json.loads((work / "model" / "config.json").read_text())
    assert config["graph"]["text_dim"] == 32
    from graphrec import text

    def wide(texts, **kwargs):
        return np.ones((len(texts), 8), np.float32), {"encoded": len(texts), "cached": 0}

    monkeypatch.setattr(text, "embed_texts", wide)
    with pytest.raises(ArtifactError, match="8-dim embeddings, the text map expects 32"):
        add_items(work / "model", ["x"], ["X"], ["space"])


@pytest.mark.parametrize("recorded", ["float32", "bfloat16", None])
def test_added_items_are_encoded_in_the_graphs_text_precision(work: Path, planted,
                                                              recorded: str | None) -> None:
    """Whatever this machine's auto picks: the precision the graph was built with (float32
    for graphs that predate the record)."""
    config_path = work / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config["graph"]["text_precision"] = recorded
    config_path.write_text(json.dumps(config))
    text = io.read_items(planted.items).texts[0] + " again"
    add_items(work / "model", ["p"], ["P"], [text])  # no cache: encoded here
    got = load_arrays(work / "model")["text_emb"][-1]
    model = config["graph"]["text_model"]
    want = {p: embed_texts([text], model, device="cpu", precision=p)[0][0]
            for p in ("float32", "bfloat16")}
    used = recorded or "float32"
    other = "bfloat16" if used == "float32" else "float32"
    np.testing.assert_allclose(got, want[used], atol=1e-6)
    assert not np.allclose(got, want[other], atol=1e-6)


def test_a_planted_link_in_the_model_is_refused_not_followed(work: Path, tmp_path: Path) -> None:
    from graphrec.errors import ArtifactError
    from graphrec.fsio import resolve_version

    source, _ = resolve_version(work / "model")
    (source / "planted").symlink_to("/")
    with pytest.raises(ArtifactError, match="planted is a link"):
        add_items(work / "model", ["n9"], ["N"], ["space rocket"], cache_dir=tmp_path, device="cpu")



def test_a_reader_during_publishes_always_loads_one_whole_version(work: Path,
                                                                 tmp_path: Path) -> None:
    import threading

    from graphrec.errors import GraphrecError
    from graphrec.serve.recommender import Recommender

    seen, errors, stop = set(), [], threading.Event()

    def read() -> None:
        while not stop.is_set() and len(seen) < 10_000:
            try:
                seen.add(Recommender.load(work / "model").num_items)
            except GraphrecError as exc:  # a mixed or missing version would land here
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(4):
            add_items(work / "model", [f"r{n}"], [""], ["space rocket"], cache_dir=tmp_path,
                      device="cpu")
    finally:
        stop.set()
        reader.join(timeout=60)
    assert errors == [] and seen <= {30, 31, 32, 33, 34} and 34 in seen | {
        Recommender.load(work / "model").num_items}
