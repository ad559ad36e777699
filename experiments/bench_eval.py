"""Time full-ranking evaluation (and optionally the baselines) on Gowalla-sized data.

Reads the LightGCN Gowalla split (``user item item ...`` lines) when present, else generates
synthetic data of the same size; scores are ``user_emb[u] @ item_emb.T`` with random dim-64
embeddings, so only the speed means anything, not the metric values.

    python experiments/bench_eval.py                       # score_fn vs factors, default batch
    python experiments/bench_eval.py --batch-users auto 1024 4096 --repeat 3
    python experiments/bench_eval.py --item-tile 1024 2048 4096   # factor-path GEMM tile widths
    python experiments/bench_eval.py --compare-pyg          # + PyG LinkPred* on the same top-K
    python experiments/bench_eval.py --baselines            # + MostPopular and ItemKNN
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from graphrec.data import Csr, gather_rows
from graphrec.eval import ItemKNN, MostPopular, default_batch_users, evaluate_ranking, topk_rows
from graphrec.popularity import head_item_mask

GOWALLA = Path("/work/shared/datasets/gowalla")


def read_lightgcn_txt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    users, items = [], []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        row = np.array(fields, dtype=np.int64)
        users.append(np.full(row.size - 1, row[0]))
        items.append(row[1:])
    return np.concatenate(users), np.concatenate(items)


def load(seed: int) -> tuple[Csr, Csr, int, int, str]:
    if (GOWALLA / "train.txt").exists() and (GOWALLA / "test.txt").exists():
        tr_u, tr_i = read_lightgcn_txt(GOWALLA / "train.txt")
        te_u, te_i = read_lightgcn_txt(GOWALLA / "test.txt")
        num_users = int(max(tr_u.max(), te_u.max())) + 1
        num_items = int(max(tr_i.max(), te_i.max())) + 1
        source = str(GOWALLA)
    else:
        rng = np.random.default_rng(seed)
        num_users, num_items = 29_858, 40_981
        popularity = rng.zipf(1.5, num_items).astype(float)
        popularity /= popularity.sum()
        tr_u = rng.integers(0, num_users, 810_128)
        tr_i = rng.choice(num_items, 810_128, p=popularity)
        te_u = rng.integers(0, num_users, 217_242)
        te_i = rng.choice(num_items, 217_242, p=popularity)
        source = "synthetic"
    return (
        Csr.from_pairs(tr_u, tr_i, num_users),
        Csr.from_pairs(te_u, te_i, num_users),
        num_users,
        num_items,
        source,
    )


def compare_pyg(user_emb: torch.Tensor, item_emb: torch.Tensor, train: Csr, test: Csr, k: int):
    """Time the metric step alone: ours (searchsorted, shared hits) vs PyG LinkPred* metrics,
    on the same masked top-K of the first 4096 users."""
    from torch_geometric.metrics import (
        LinkPredHitRatio,
        LinkPredMetricCollection,
        LinkPredNDCG,
        LinkPredPrecision,
        LinkPredRecall,
    )

    users = torch.arange(4096)
    scores = user_emb[users] @ item_emb.T
    tr_ptr, tr_idx = torch.from_numpy(train.indptr), torch.from_numpy(train.indices)
    te_ptr, te_idx = torch.from_numpy(test.indptr), torch.from_numpy(test.indices)
    lr, cols = gather_rows(tr_ptr, tr_idx, users)
    scores[lr, cols] = float("-inf")
    _, top = scores.topk(k, dim=1)
    label = torch.stack(gather_rows(te_ptr, te_idx, users))
    coll = LinkPredMetricCollection(
        [LinkPredRecall(k), LinkPredNDCG(k), LinkPredPrecision(k), LinkPredHitRatio(k)]
    )

    def pyg_step() -> None:
        coll.reset()
        coll.update(top, label)
        coll.compute()

    def our_step() -> None:
        keys = (label[0] * scores.shape[1] + label[1]).sort().values
        flat = torch.arange(users.numel()).unsqueeze(1) * scores.shape[1] + top
        pos = torch.searchsorted(keys, flat).clamp_(max=keys.numel() - 1)
        hits = keys[pos] == flat
        hits.sum(1)

    for name, step in [("pyg LinkPred*", pyg_step), ("hand-written hits", our_step)]:
        step()  # warm-up
        t = time.perf_counter()
        for _ in range(10):
            step()
        print(f"metric step, 4096 users, K={k}: {name} {(time.perf_counter() - t) / 10:.4f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch-users", nargs="+", default=[None], type=lambda v: None if v == "auto" else int(v)
    )
    parser.add_argument(
        "--item-tile", nargs="+", default=[None], type=lambda v: None if v == "auto" else int(v)
    )
    parser.add_argument("--k", type=int, nargs="+", default=[20])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-pyg", action="store_true")
    parser.add_argument("--compare-topk", action="store_true")
    parser.add_argument("--baselines", action="store_true")
    args = parser.parse_args()

    train, test, num_users, num_items, source = load(args.seed)
    print(
        f"data={source} users={num_users} items={num_items} seen={train.nnz} targets={test.nnz} "
        f"threads={torch.get_num_threads()}"
    )
    gen = torch.Generator().manual_seed(args.seed)
    user_emb = torch.randn(num_users, 64, generator=gen)
    item_emb = torch.randn(num_items, 64, generator=gen)
    degree = np.bincount(train.indices, minlength=num_items)
    head = head_item_mask(degree)

    score_time = [0.0]

    def score_fn(u: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        scores = user_emb[u] @ item_emb.T
        score_time[0] += time.perf_counter() - t
        return scores

    # The same ranking two ways, alternated so that load drifts hit both: score_fn (a fresh
    # [b, I] matrix per chunk) and factors= (tiled GEMMs into one reused buffer).
    for batch in args.batch_users:
        for _ in range(args.repeat):
            score_time[0] = 0.0
            t = time.perf_counter()
            out = evaluate_ranking(
                score_fn, train, test, num_items, ks=args.k, head_items=head,
                batch_users=batch or default_batch_users(num_items),
            )
            dt = time.perf_counter() - t
            print(f"score_fn path batch_users={batch or 'auto'}: {dt:.2f}s (score_fn "
                  f"{score_time[0]:.2f}s, the rest {dt - score_time[0]:.2f}s)  recall@{args.k[0]}="
                  f"{out[f'recall@{args.k[0]}']:.5f} num_users={out['num_users']}")
            for tile in args.item_tile:
                t = time.perf_counter()
                fac = evaluate_ranking(
                    None, train, test, num_items, ks=args.k, head_items=head, batch_users=batch,
                    factors=(user_emb, item_emb), item_tile=tile,
                )
                df = time.perf_counter() - t
                same = all(abs(fac[key] - out[key]) <= 1e-6 for key in out)
                print(f"factors path  batch_users={batch or 'auto'} item_tile={tile or 'auto'}: "
                      f"{df:.2f}s  score_fn/factors = {dt / df:.2f}x  "
                      f"metrics {'agree' if same else 'DIFFER'} (1e-6)")

    if args.compare_topk:
        with torch.inference_mode():
            t_mm = t_top = t_blk = 0.0
            for s in range(0, num_users, 1024):
                t = time.perf_counter()
                sc = score_fn(torch.arange(s, min(s + 1024, num_users)))
                t_mm += time.perf_counter() - t
                t = time.perf_counter()
                sc.topk(max(args.k), dim=1)
                t_top += time.perf_counter() - t
                t = time.perf_counter()
                topk_rows(sc, max(args.k))
                t_blk += time.perf_counter() - t
        print(f"all users: score_fn {t_mm:.2f}s  torch.topk {t_top:.2f}s  topk_rows {t_blk:.2f}s")

    if args.compare_pyg:
        with torch.inference_mode():
            compare_pyg(user_emb, item_emb, train, test, max(args.k))

    if args.baselines:
        t = time.perf_counter()
        pop = MostPopular(train, num_items)
        out = evaluate_ranking(pop.score, train, test, num_items, ks=args.k, head_items=head)
        print(f"MostPopular fit+evaluate: {time.perf_counter() - t:.2f}s  "
              f"recall@{args.k[0]}={out[f'recall@{args.k[0]}']:.5f} "
              f"ndcg@{args.k[0]}={out[f'ndcg@{args.k[0]}']:.5f}")
        t = time.perf_counter()
        knn = ItemKNN(train, num_items, neighbors=100)
        t_fit = time.perf_counter() - t
        t = time.perf_counter()
        out = evaluate_ranking(knn.score, train, test, num_items, ks=args.k, head_items=head)
        t_eval = time.perf_counter() - t
        print(f"ItemKNN(neighbors=100) fit: {t_fit:.2f}s  evaluate: {t_eval:.2f}s  "
              f"sim nnz={knn.similarity.values().numel()}  "
              f"recall@{args.k[0]}={out[f'recall@{args.k[0]}']:.5f} "
              f"ndcg@{args.k[0]}={out[f'ndcg@{args.k[0]}']:.5f}")


if __name__ == "__main__":
    main()
