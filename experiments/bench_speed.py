"""Training-epoch and evaluation speed: graphrec against PyG's LightGCN, side by side.

The peer is `torch_geometric.nn.models.LightGCN` driven the way PyG's own example
(examples/lightgcn.py) drives it: `model(edge_index, edge_label_index)` for the ranks,
`recommendation_loss` with `node_id = edge_label_index.unique()`, Adam, uniform negatives,
batches over a shuffled list of training edges; evaluation as in the example's `test()`
(dense per-chunk masks). Once with a COO `edge_index`, once with a `torch.sparse` CSR
adjacency. graphrec runs its own trainer (`graphrec.train.Trainer`) and evaluator at the same
settings, and once more with bfloat16 products (`graphrec-bf16`, CPU only). Every variant
runs in its own subprocess so its peak memory is its own.

    python experiments/bench_speed.py                       # Gowalla, every variant, 1 epoch
    python experiments/bench_speed.py --steps 20            # time 20 steps, extrapolate
    python experiments/bench_speed.py --variants graphrec --device cuda
    python experiments/bench_speed.py --peer-retain-memory  # peer with graphrec's allocator

Prints one table, with the ratio peer / graphrec for each number.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("GRAPHREC_GOWALLA", ROOT.parent / "shared/datasets/gowalla"))
VARIANTS = ("peer-edge_index", "peer-csr", "graphrec", "graphrec-bf16")
"""graphrec-bf16: graphrec with ``--precision bfloat16`` (CPU only)."""


def load_gowalla(folder: Path):
    from graphrec.build import BuildConfig, build_graph

    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"graphrec-bench-{os.getpid()}"
    return build_graph(BuildConfig(train=str(folder / "train.txt"), test=str(folder / "test.txt"),
                                   no_text=True), work / "graph")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_peer(graph, args, use_csr: bool, device: torch.device) -> dict:
    from torch_geometric.nn.models import LightGCN
    from torch_geometric.utils import degree, to_torch_csr_tensor

    from graphrec.data import TEST, TRAIN
    from graphrec.graph import edge_index as make_edge_index

    nu, ni = graph.num_users, graph.num_items
    u, i = graph.fold_pairs(TRAIN)
    edge_index = make_edge_index(u, i, nu).to(device)
    adj = to_torch_csr_tensor(edge_index, size=(nu + ni, nu + ni)) if use_csr else edge_index
    train_pairs = torch.stack([torch.as_tensor(u), torch.as_tensor(i) + nu]).to(device)
    tu, ti = graph.fold_pairs(TEST)
    test_pairs = torch.stack([torch.as_tensor(tu), torch.as_tensor(ti) + nu]).to(device)
    torch.manual_seed(args.seed)
    model = LightGCN(nu + ni, args.dim, args.layers).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = torch.utils.data.DataLoader(range(train_pairs.size(1)), shuffle=True,
                                         batch_size=args.batch_size)
    steps_per_epoch = len(loader)
    n_steps = args.steps or steps_per_epoch
    sync(device)
    t0 = time.perf_counter()
    done = 0
    for index in loader:
        pos = train_pairs[:, index.to(device)]
        neg = torch.stack([pos[0], torch.randint(nu, nu + ni, (index.numel(),), device=device)])
        label_index = torch.cat([pos, neg], dim=1)
        opt.zero_grad()
        pos_rank, neg_rank = model(adj, label_index).chunk(2)
        loss = model.recommendation_loss(pos_rank, neg_rank, node_id=label_index.unique())
        loss.backward()
        opt.step()
        done += 1
        if done >= n_steps:
            break
    sync(device)
    train_s = time.perf_counter() - t0

    # Evaluation as in the example's test(): dense boolean ground truth per user chunk.
    t0 = time.perf_counter()
    k, recall, users = 20, 0.0, 0
    with torch.no_grad():
        emb = model.get_embedding(adj)
        ue, ie = emb[:nu], emb[nu:]
        for start in range(0, nu, args.batch_size):
            end = start + args.batch_size
            logits = ue[start:end] @ ie.t()
            m = (train_pairs[0] >= start) & (train_pairs[0] < end)
            logits[train_pairs[0, m] - start, train_pairs[1, m] - nu] = float("-inf")
            truth = torch.zeros_like(logits, dtype=torch.bool)
            m = (test_pairs[0] >= start) & (test_pairs[0] < end)
            truth[test_pairs[0, m] - start, test_pairs[1, m] - nu] = True
            count = degree(test_pairs[0, m] - start, num_nodes=logits.size(0))
            hits = truth.gather(1, logits.topk(k, dim=-1).indices)
            recall += float((hits.sum(-1) / count.clamp(1e-6)).sum())
            users += int((count > 0).sum())
    sync(device)
    eval_s = time.perf_counter() - t0
    return {"steps": done, "steps_per_epoch": steps_per_epoch, "train_seconds": train_s,
            "eval_seconds": eval_s, "recall@20": recall / users}


def run_graphrec(graph, args, device: torch.device, precision: str = "float32") -> dict:
    from graphrec.data import TEST
    from graphrec.eval import EvalContext
    from graphrec.train import TrainConfig, Trainer

    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=args.lr, lr_schedule="constant",
                      dim=args.dim, layers=args.layers, negatives="uniform", item_init="id",
                      device=str(device), seed=args.seed, eval_every=0, precision=precision,
                      neg_candidates=args.neg_candidates)
    t = Trainer(graph, cfg)
    ctx = EvalContext.from_graph(graph, t.cfg.ks, t.device)

    def evaluate() -> dict:  # the embeddings of the current weights, then the metrics
        return ctx.evaluate(TEST, factors=t.embeddings()[:2])

    steps_per_epoch = t.sampler.num_batches(args.batch_size)
    n_steps = args.steps or steps_per_epoch
    sync(device)
    t0 = time.perf_counter()
    if n_steps == steps_per_epoch:
        t.train_epoch()
        done = steps_per_epoch
    else:  # the trainer's step, for a fixed number of batches
        done = 0
        t.model.train()
        for users, pos, neg in t.batches():
            t.train_step(users, pos, neg)
            done += 1
            if done >= n_steps:
                break
    sync(device)
    train_s = time.perf_counter() - t0
    evaluate()  # warm-up: first call pays one-off allocations
    sync(device)
    t0 = time.perf_counter()
    metrics = evaluate()
    sync(device)
    eval_s = time.perf_counter() - t0
    return {"steps": done, "steps_per_epoch": steps_per_epoch, "train_seconds": train_s,
            "eval_seconds": eval_s, "recall@20": metrics["recall@20"]}


def child(args) -> None:
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    from graphrec.device import resolve_device, retain_freed_memory

    device = resolve_device(args.device)
    if args.peer_retain_memory and not args.child.startswith("graphrec"):
        retain_freed_memory()  # the allocator setting graphrec's Trainer makes, for the peer
    graph = load_gowalla(args.data)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if args.child.startswith("graphrec"):
        out = run_graphrec(graph, args, device,
                           "bfloat16" if args.child == "graphrec-bf16" else "float32")
    else:
        out = run_peer(graph, args, args.child == "peer-csr", device)
    out["epoch_seconds"] = out["train_seconds"] * out["steps_per_epoch"] / out["steps"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["rss_after_load_mb"] = rss0 / 1024
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--variants", nargs="+", choices=VARIANTS,
                   help="default: all (without graphrec-bf16 on CUDA)")
    p.add_argument("--steps", type=int, default=0, help="time this many steps (0 = one epoch)")
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--neg-candidates", type=int, default=1,
                   help="graphrec's negatives per triple (1: the peer's work per step; "
                        "graphrec's default is 8, the hardest trained on)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the variants this many times, alternating, and report each "
                        "variant's median (a shared machine drifts in speed over minutes)")
    p.add_argument("--peer-retain-memory", action="store_true",
                   help="give the peer graphrec's allocator setting too "
                        "(graphrec.device.retain_freed_memory); off = the peer as PyG ships it")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rounds < 1 or args.neg_candidates < 1:
        p.error(f"--rounds {args.rounds} / --neg-candidates {args.neg_candidates}: expected "
                "integers >= 1")
    if args.child:
        child(args)
        return
    if args.variants is None:
        args.variants = [v for v in VARIANTS
                         if not (v == "graphrec-bf16" and args.device.startswith("cuda"))]
    if not (args.data / "train.txt").exists():
        sys.exit(f"--data {args.data}: no train.txt (Gowalla LightGCN split); nothing to run")
    runs: dict[str, list[dict]] = {}
    for rnd in range(args.rounds):
        for variant in args.variants:
            cmd = [sys.executable, __file__, "--child", variant] + [
                a for a in sys.argv[1:] if a != "--variants" and a not in VARIANTS]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{variant}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            r = json.loads(line[-1][7:])
            runs.setdefault(variant, []).append(r)
            print(f"round {rnd + 1} {variant}: epoch {r['epoch_seconds']:.2f} s ({r['steps']} of "
                  f"{r['steps_per_epoch']} steps timed), eval {r['eval_seconds']:.2f} s, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    results = {}
    for variant, rs in runs.items():  # the median run by epoch time, per variant
        results[variant] = sorted(rs, key=lambda r: r["epoch_seconds"])[(len(rs) - 1) // 2]
        results[variant]["rounds"] = len(rs)
    if not results:
        sys.exit(1)
    any_r = next(iter(results.values()))
    print(f"\nGowalla, dim {args.dim}, {args.layers} layers, batch {args.batch_size}, "
          f"lr {args.lr}, device {any_r['device']}, torch threads {any_r['threads']}, "
          f"median of {args.rounds} round(s); peer allocator: "
          f"{'retain freed memory' if args.peer_retain_memory else 'as shipped'}")
    print("| variant | s / epoch | eval s | peak RSS MB | recall@20 after the timed steps |")
    print("|---|---|---|---|---|")
    for v, r in results.items():
        print(f"| {v} | {r['epoch_seconds']:.2f} | {r['eval_seconds']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['recall@20']:.4f} |")
    for ours in ("graphrec", "graphrec-bf16"):
        if ours not in results:
            continue
        g = results[ours]
        for v, r in results.items():
            if not v.startswith("graphrec"):
                print(f"{v} / {ours}: epoch {r['epoch_seconds'] / g['epoch_seconds']:.2f}x, "
                      f"eval {r['eval_seconds'] / g['eval_seconds']:.2f}x, "
                      f"peak RSS {r['peak_rss_mb'] / g['peak_rss_mb']:.2f}x")



if __name__ == "__main__":
    main()
