"""`graphrec train --model filter|ensemble` and everything done with those models: the saved
directory scores as the fitted run did (save/load/recommend round trip), evaluate, recommend
(a user, a history, everyone), similar, explain (terms that add up to the served score),
add-items, update, the service; and clear refusals where a filter model cannot follow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from graphrec.artifacts.graph_dir import load_graph
from graphrec.artifacts.model_dir import read_model_config
from graphrec.eval.context import EvalContext, evaluate_model
from graphrec.model.ensemble import EnsembleScorer
from graphrec.pipeline import save_run, train_ensemble
from graphrec.serve import Recommender
from graphrec.train.config import TrainConfig
from tests.helpers import TRAIN_ARGS, ok, one_line_error, run, write_csv


@pytest.fixture(scope="module")
def kinds(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained workdir with filter/ and ensemble/ model directories beside model/."""
    work = Path(shutil.copytree(trained, tmp_path_factory.mktemp("kinds") / "work"))
    ok(run(work, "train", "--model", "filter", "--output", str(work / "filter")))
    ok(run(work, "train", "--model", "ensemble", "--output", str(work / "ensemble"),
           *TRAIN_ARGS))
    return work


def _as_model(work: Path, kind: str, tmp_path: Path) -> Path:
    """A private workdir whose model/ is the ``kind`` model."""
    mine = tmp_path / kind
    mine.mkdir()
    shutil.copytree(work / "graph", mine / "graph")
    shutil.copytree(work / kind, mine / "model")
    return mine


def test_the_saved_ensemble_scores_and_recommends_as_fitted(trained: Path, tmp_path: Path):
    graph = load_graph(trained / "graph")
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, dim=8, eval_every=1, device="cpu")
    fitted = train_ensemble(graph, cfg)
    save_run(fitted, graph, tmp_path / "ens")
    rec = Recommender.load(tmp_path / "ens", device="cpu")
    assert rec.kind == "ensemble" and rec.weight == fitted.model["weight"]
    users = torch.arange(graph.num_users)
    want = EnsembleScorer(fitted.result.user_emb, fitted.result.item_emb, fitted.filter,
                          fitted.model["weight"]).score(users)
    got = rec.user_scores(users, tail_boost=0.0)
    assert torch.allclose(got, want, atol=1e-5)
    user = str(rec.user_ids[3])
    seen = torch.as_tensor(rec.known.row(3))  # every interaction the graph has is masked
    masked = want[3].clone()
    masked[seen] = float("-inf")
    top = [str(rec.item_ids[i]) for i in masked.topk(5).indices.tolist()]
    assert [r.item for r in rec.recommend(user, 5)] == top
    again = evaluate_model(graph, tmp_path / "ens", device="cpu")["model"]
    assert again["recall@20"] == pytest.approx(fitted.test["recall@20"], abs=1e-6)
    assert again["ndcg@20"] == pytest.approx(fitted.test["ndcg@20"], abs=1e-6)
    # the parts reported beside the blend: the filter alone as `train --model filter` scores
    alone = EvalContext.from_graph(graph, cfg.ks, "cpu").evaluate(
        "test", score_fn=fitted.filter.score)
    metrics = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert metrics["filter_test"]["recall@20"] == pytest.approx(alone["recall@20"], abs=1e-6)
    assert metrics["lightgcn_test"]["recall@20"] == pytest.approx(
        fitted.result.test["recall@20"], abs=1e-6)
    assert metrics["filter_seconds"] > 0


@pytest.mark.parametrize("kind", ["filter", "ensemble"])
def test_every_reading_command_works(kinds: Path, kind: str, tmp_path: Path):
    work = _as_model(kinds, kind, tmp_path)
    config = read_model_config(work / "model" / "current")
    assert config["model"]["kind"] == kind
    saved = json.loads((work / "model" / "metrics.json").read_text())["test"]
    out = json.loads(ok(run(work, "evaluate", "--json", "--device", "cpu")).stdout)
    assert out["model"]["recall@20"] == pytest.approx(saved["recall@20"], abs=1e-6)
    assert out["model"]["ndcg@20"] == pytest.approx(saved["ndcg@20"], abs=1e-6)
    rec = Recommender.load(work / "model")
    user = str(rec.user_ids[0])
    listed = json.loads(ok(run(work, "recommend", "--user", user, "--k", "5",
                               "--json")).stdout)["items"]
    assert [r["item"] for r in listed] == [r.item for r in rec.recommend(user, 5)]
    history = ",".join(str(i) for i in rec.item_ids[:3])
    assert len(json.loads(ok(run(work, "recommend", "--history", history, "--json"))
                          .stdout)["items"]) == 10
    ok(run(work, "recommend", "--all-users", "-o", str(tmp_path / "all.jsonl")))
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    assert len(lines) == rec.num_users
    ok(run(work, "recommend", "--user", user, "--diversity", "0.5", "--tail-boost", "1"))
    warm = str(rec.item_ids[int(torch.argmax(torch.as_tensor(rec.train_rows().indices)
                                             .bincount()))])
    similar = json.loads(ok(run(work, "similar", "--item", warm, "--k", "3", "--json")).stdout)
    assert len(similar["items"]) == 3 and warm not in [r["item"] for r in similar["items"]]
    item = listed[0]["item"]
    exp = json.loads(ok(run(work, "explain", "--user", user, "--item", item, "--json")).stdout)
    total = exp["self"] + sum(c["contribution"] for c in exp["contributions"])
    assert total == pytest.approx(exp["score"], abs=1e-4)
    assert exp["score"] == pytest.approx(listed[0]["score"], abs=1e-4)
    if kind == "filter":
        assert abs(exp["self"]) < 1e-4  # the filter's score is its history terms alone
    assert exp["paths"]


def test_a_filter_model_refuses_what_it_cannot_do_in_one_line(kinds: Path, tmp_path: Path):
    work = _as_model(kinds, "filter", tmp_path)
    items = write_csv(tmp_path / "new.csv", ["item_id", "title", "description"],
                      [["n1", "New", "a brand new item"]])
    one_line_error(run(work, "add-items", "--items", str(items)), "filter model", "ensemble")
    rec = Recommender.load(work / "model")
    batch = write_csv(tmp_path / "batch.csv", ["user", "item", "rating", "timestamp"],
                      [[str(rec.user_ids[0]), str(rec.item_ids[1]), "5", "1"]])
    graph_before = sorted(p.name for p in (work / "graph").iterdir())
    one_line_error(run(work, "update", "--interactions", str(batch)), "filter model")
    assert sorted(p.name for p in (work / "graph").iterdir()) == graph_before
    one_line_error(run(work, "serve", "--index", "ann"), "filter")


def test_an_ensemble_takes_items_and_updates_and_stays_an_ensemble(kinds: Path,
                                                                   tmp_path: Path):
    work = _as_model(kinds, "ensemble", tmp_path)
    rec = Recommender.load(work / "model")
    items = write_csv(tmp_path / "new.csv", ["item_id", "title", "description"],
                      [["n1", "New", "a brand new item"]])
    fresh = sorted(set(range(rec.num_items)) - set(rec.known.row(0).tolist()))
    user, item = str(rec.user_ids[0]), str(rec.item_ids[fresh[0]])  # pairs it has are skipped
    batch = write_csv(tmp_path / "batch.csv", ["user", "item", "rating", "timestamp"],
                      [[user, "n1", "5", "1"], [user, item, "5", "2"], ["walk-in", item, "5", "3"]])
    ok(run(work, "update", "--interactions", str(batch), "--items", str(items),
           "--fine-tune", "1"))
    after = Recommender.load(work / "model")
    assert after.kind == "ensemble" and after.filter is not None
    assert "n1" in set(after.item_ids.tolist()) and "walk-in" in set(after.user_ids.tolist())
    assert {item, "n1"} <= set(after.item_ids[after.training_items(0)].tolist())
    assert len(after.recommend("walk-in", 5)) == 5
    ok(run(work, "evaluate"))
    more = write_csv(tmp_path / "more.csv", ["item_id", "title", "description"],
                     [["n2", "Newer", "another new item"]])
    ok(run(work, "add-items", "--items", str(more)))
    assert len(json.loads(ok(run(work, "similar", "--item", "n2", "--k", "3", "--json"))
                          .stdout)["items"]) == 3


def test_the_service_serves_an_ensemble_and_folds_posted_interactions_in(kinds: Path,
                                                                         tmp_path: Path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from graphrec.serve.http import create_app

    work = _as_model(kinds, "ensemble", tmp_path)
    rec = Recommender.load(work / "model")
    user = str(rec.user_ids[1])
    with TestClient(create_app(work / "model", api_key="k", device="cpu", watch_s=0,
                               cache_dir=tmp_path / "cache")) as c:
        r = c.get(f"/v1/users/{user}/recommendations", params={"k": 5})
        assert r.status_code == 200, r.text
        assert [i["item"] for i in r.json()["items"]] == [x.item for x in rec.recommend(user, 5)]
        top = r.json()["items"][0]["item"]
        posted = c.post("/v1/interactions", json={"user": user, "items": [top]},
                        headers={"X-API-Key": "k"})
        assert posted.status_code == 200, posted.text
        again = c.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()["items"]
        assert top not in [i["item"] for i in again]
