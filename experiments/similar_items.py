"""Item-to-item neighbours (`graphrec similar`) of trained models on the bundled MovieLens.

For every item with at least --min-degree training interactions, takes its k nearest items by
cosine of the final embeddings (what `graphrec similar` returns) and reports, averaged over
the query items:

- genre Jaccard: overlap of the neighbour's MovieLens genres with the query's;
- test co-occurrence: users who have the query item in training and the neighbour in the
  test split (neighbours that predict held-out behaviour score higher);
- the neighbours' median training degree.

    graphrec --workdir A build-graph && graphrec --workdir A train
    mkdir B && cp -r A/graph B/ && graphrec --workdir B train --neg-candidates 1 --reg 1e-4
    python experiments/similar_items.py --graph A/graph B/model A/model
    python experiments/similar_items.py --graph A/graph A/model --scorings all

--scorings all also ranks neighbours other ways than `graphrec similar` does: dot product
of the final embeddings, cosine of the text embeddings, cosine of the items' training-user
vectors (co-occurrence), and blends of the final cosine with those.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from graphrec.artifacts import load_graph
from graphrec.data import TEST, TRAIN
from graphrec.eval import ItemKNN
from graphrec.serve import Recommender

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("models", type=Path, nargs="+", help="model folders trained on --graph")
    p.add_argument("--graph", type=Path, required=True)
    p.add_argument("--movies", type=Path, default=ROOT / "datasets/ml-latest-small/movies.csv")
    p.add_argument("--min-degree", type=int, default=20)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--scorings", choices=("similar", "all"), default="similar",
                   help="similar: what graphrec similar ranks by; all: alternatives too")
    args = p.parse_args()
    with open(args.movies, newline="", encoding="utf-8") as f:
        genres = {r["movieId"]: set(r["genres"].split("|")) for r in csv.DictReader(f)}
    graph = load_graph(args.graph)
    u_train, i_train = graph.fold_pairs(TRAIN)
    u_test, i_test = graph.fold_pairs(TEST)
    train_users = [set() for _ in range(graph.num_items)]
    test_users = [set() for _ in range(graph.num_items)]
    for u, i in zip(u_train.tolist(), i_train.tolist(), strict=True):
        train_users[i].add(u)
    for u, i in zip(u_test.tolist(), i_test.tolist(), strict=True):
        test_users[i].add(u)
    degree = np.bincount(i_train, minlength=graph.num_items)
    queries = np.flatnonzero(degree >= args.min_degree)
    ids = graph.item_ids
    print(f"{len(queries)} query items (>= {args.min_degree} training interactions), "
          f"top-{args.k} neighbours by cosine")
    print("| model | scoring | genre Jaccard | test co-occurrence (users) "
          "| neighbours' median degree |")
    print("|---|---|---|---|---|")
    q = torch.as_tensor(queries)
    cooc = None if args.scorings == "similar" else cooccurrence_cosine(graph, q)
    for folder in args.models:
        rec = Recommender.load(folder)
        final = torch.nn.functional.normalize(rec.item_emb, dim=1)
        cosine = final[q] @ final.T
        scorings = {"final cosine (graphrec similar)": cosine}
        if args.scorings == "all":
            scorings["final dot"] = rec.item_emb[q] @ rec.item_emb.T
            if rec.text_emb is not None:
                text = torch.nn.functional.normalize(torch.as_tensor(rec.text_emb), dim=1)
                scorings["text cosine"] = text[q] @ text.T
                scorings["final + 0.5 text cosine"] = cosine + 0.5 * scorings["text cosine"]
            scorings["co-occurrence cosine"] = cooc
            scorings["final + 0.5 co-occurrence"] = cosine + 0.5 * cooc
        for name, sims in scorings.items():
            sims = sims.clone()
            sims[torch.arange(len(queries)), q] = float("-inf")
            top = torch.topk(sims, args.k, dim=1).indices.numpy()
            jaccard = np.mean([[len(genres[ids[a]] & genres[ids[b]]) /
                                len(genres[ids[a]] | genres[ids[b]]) for b in row]
                               for a, row in zip(queries, top, strict=True)])
            together = np.mean([[len(train_users[a] & test_users[b]) for b in row]
                                for a, row in zip(queries, top, strict=True)])
            print(f"| {folder} | {name} | {jaccard:.3f} | {together:.2f} | "
                  f"{np.median(degree[top]):.0f} |", flush=True)


def cooccurrence_cosine(graph, queries: torch.Tensor) -> torch.Tensor:
    """[Q, I] cosine between the query items' and every item's training-user sets: the
    item-kNN baseline's similarity with every neighbour kept."""
    knn = ItemKNN(graph.csr(TRAIN), graph.num_items, neighbors=graph.num_items)
    return knn.similarity.to_sparse_coo().index_select(0, queries).to_dense()


if __name__ == "__main__":
    main()
