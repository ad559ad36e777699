"""graphrec.serve.explain and `graphrec explain`: the split is LightGCN's own, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from graphrec.serve import Recommender
from graphrec.serve.explain import explain, explanation_graph
from tests.helpers import ok, one_line_error, run


def test_terms_are_lightgcns_and_add_up_to_the_score(trained: Path) -> None:
    rec = Recommender.load(trained / "model")
    state = rec.foldin_state()
    k = state.num_layers
    worst_sum = worst_self = 0.0
    for u in range(rec.num_users):
        user = str(rec.user_ids[u])
        for i in range(0, rec.num_items, 7):
            exp = explain(rec, user, str(rec.item_ids[i]))
            total = exp.self + sum(c.contribution for c in exp.contributions)
            worst_sum = max(worst_sum, abs(total - exp.score))
            # The self term is the user's own layer 0 against the item: not a remainder.
            own = float(np.asarray(state.user_layers[0, u]) @ np.asarray(rec.item_emb[i])) / (k + 1)
            worst_self = max(worst_self, abs(exp.self - own))
            assert len(exp.contributions) == len(state.by_user.row(u))
            values = [c.contribution for c in exp.contributions]
            assert values == sorted(values, reverse=True)
    assert worst_sum < 1e-5 and worst_self < 1e-5


def test_the_planted_community_item_explains_most(trained: Path, planted) -> None:
    # A user's top item from its own community: the history items of that community carry
    # more of the score than the others.
    rec = Recommender.load(trained / "model")
    wins = 0
    users = [str(u) for u in rec.user_ids]
    for user in users:
        top = rec.recommend(user, 1)[0].item
        exp = explain(rec, user, top)
        community = planted.item_community[top]
        first = exp.contributions[0].item
        wins += planted.item_community.get(first) == community
    assert wins >= 0.8 * len(users)


def test_cli_json_export_and_bad_input(work: Path, tmp_path: Path) -> None:
    rec = Recommender.load(work / "model")
    user, item = str(rec.user_ids[0]), rec.recommend(str(rec.user_ids[0]), 1)[0].item
    out = json.loads(ok(run(work, "explain", "--user", user, "--item", item, "--json")).stdout)
    assert set(out) >= {"user", "item", "score", "self", "contributions"}
    assert abs(out["self"] + sum(c["contribution"] for c in out["contributions"])
               - out["score"]) < 1e-4
    path = tmp_path / "why.graphml"
    ok(run(work, "explain", "--user", user, "--item", item, "--export", str(path)))
    g = nx.read_graphml(path)
    assert f"user:{user}" in g and f"item:{item}" in g
    one_line_error(run(work, "explain", "--user", "nobody", "--item", item), "--user")
    one_line_error(run(work, "explain", "--user", user, "--item", "nothing"), "--item")
    one_line_error(run(work, "explain", "--user", user, "--item", item, "-k", "0"), "-k")
    one_line_error(run(work, "explain", "--user", user, "--item", item, "--export",
                       str(tmp_path / "x.png")), "--export")


def test_a_live_fold_in_still_adds_up(trained: Path) -> None:
    rec = Recommender.load(trained / "model")
    user = str(rec.user_ids[1])
    top = [r.item for r in rec.recommend(user, 3)]
    rec.fold_in_user(user, top[:2])
    exp = explain(rec, user, top[2])
    assert {c.item for c in exp.contributions} >= set(top[:2])
    assert exp.self + sum(c.contribution for c in exp.contributions) == pytest.approx(
        exp.score, abs=1e-5)
    g = explanation_graph(exp)
    assert g.nodes[f"item:{top[2]}"]["kind"] == "recommended"


def test_a_user_added_live_is_explained(trained: Path) -> None:
    rec = Recommender.load(trained / "model")
    items = [str(i) for i in rec.item_ids[:4]]
    assert rec.fold_in_user("walk-in", items) == (4, True)
    target = rec.recommend("walk-in", 1)[0].item
    exp = explain(rec, "walk-in", target)
    assert sorted(c.item for c in exp.contributions) == sorted(items)
    assert exp.self + sum(c.contribution for c in exp.contributions) == pytest.approx(
        exp.score, abs=1e-5)
    # A second batch for the same live user: not new any more.
    assert rec.fold_in_user("walk-in", [target]) == (1, False)
