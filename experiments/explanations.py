"""Explanation fidelity and speed: does the history item an explanation names first matter
most to the score, and how long does one explanation take?

For sampled (user, item) pairs, item = one of the user's top-20 recommendations: remove the
history item with the largest contribution, fold the user in again without it (the items
frozen, as `graphrec update` would), and see how far the item's rank drops among the items
the user had not seen; do the same with a random history item. Fidelity = the share of pairs
where removing the top contributor drops the rank more (ties count half). Then time
`explain` over the pairs.

    python experiments/explanations.py --model graphrec-run/model [--pairs 500]
    python experiments/explanations.py --model GOWALLA_RUN/model --pairs 500
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphrec.serve import Recommender  # noqa: E402
from graphrec.serve.explain import explain  # noqa: E402


def rank_of(rec: Recommender, vector: torch.Tensor, item: int, seen: np.ndarray) -> int:
    scores = rec.item_emb @ vector
    scores[torch.as_tensor(seen)] = float("-inf")
    return int((scores > scores[item]).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--pairs", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rec = Recommender.load(args.model)
    state = rec.foldin_state()
    rng = np.random.default_rng(args.seed)
    users = rng.choice(rec.num_users, size=min(args.pairs, rec.num_users), replace=False)
    wins, kept, drops = 0.0, 0, []
    explain_s = []
    for u in users.tolist():
        history = state.by_user.row(u)
        if len(history) < 2:
            continue
        user = str(rec.user_ids[u])
        recs = rec.recommend(user, 20)
        item = recs[int(rng.integers(len(recs)))].item
        i = rec.item_index(item)
        t0 = time.perf_counter()
        exp = explain(rec, user, item)
        explain_s.append(time.perf_counter() - t0)
        seen = rec.known.row(u)
        before = rank_of(rec, rec.user_emb[u], i, seen)
        top = rec.item_index(exp.contributions[0].item)
        rand = int(rng.choice(history[history != top]))
        after = {}
        for name, drop in (("top", top), ("random", rand)):
            vec = state.user_vector(u, history[history != drop])
            after[name] = rank_of(rec, vec, i, seen) - before
        gap = after["top"] - after["random"]
        wins += 1.0 if gap > 0 else 0.5 if gap == 0 else 0.0
        kept += 1
        drops.append((after["top"], after["random"]))
    d = np.asarray(drops)
    ms = 1000 * np.asarray(explain_s)
    out = {"model": args.model, "users": rec.num_users, "items": rec.num_items,
           "pairs": kept, "fidelity": wins / kept,
           "median_rank_drop_top": float(np.median(d[:, 0])),
           "median_rank_drop_random": float(np.median(d[:, 1])),
           "explain_ms_median": float(np.median(ms)),
           "explain_ms_p95": float(np.percentile(ms, 95))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
