"""The evaluation report (``graphrec report``): one self-contained HTML file for a model on its
graph's split, its plots embedded as PNG, nothing fetched from the network.

It holds the metrics table against the baselines, the training curve, recall@K over K, where
the recommendations fall in the popularity distribution compared with the training
interactions (the long-tail picture), tail share and coverage, the cold items' results when
the graph holds items out, and, given a second model, the paired comparison of
:mod:`graphrec.eval.compare`. Plots need matplotlib (``pip install "graphrec[plots]"``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graphrec.artifacts.graph_dir import GraphData
from graphrec.artifacts.model_dir import read_model_config
from graphrec.data.split import SPLITS
from graphrec.errors import ConfigError
from graphrec.fsio import read_consistently

REPORT_KS = (1, 2, 5, 10, 20, 50, 100)
"""The cut-offs of the recall@K curve."""
POPULARITY_BINS = 10
"""Items are cut into this many equal-size popularity bins for the long-tail plot."""
TABLE_METRICS = ("recall", "ndcg", "precision", "tail_recall", "tail_share", "coverage",
                 "novelty", "gini")
"""The metrics table's columns (those the evaluation reports), at the report's K."""


@dataclass
class ReportData:
    """What the report shows, computed once (:func:`report_data`); plots read only this.

    ``rankings``: name -> RankingResult at :data:`REPORT_KS` (+ K) for the model (first)
    and the baselines; ``history``: the training history rows; ``item_degree`` [I]: training
    interactions per item; ``comparison``: the compare result with a second model, or None.
    """

    model_path: str
    split: str
    k: int
    graph: dict
    train: dict
    metrics_file: dict
    rankings: dict
    item_degree: np.ndarray
    cold_items: int
    comparison: object | None = None
    compare_path: str | None = None
    made_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M UTC",
                                                               time.gmtime()))


def report_data(graph: GraphData, model_path: str | Path, *, split: str = "test",
                k: int = 20, compare_with: str | Path | None = None,
                device: str | None = None, resamples: int = 2000) -> ReportData:
    """Evaluate the model in ``model_path`` (and most-popular and item-kNN) on ``graph``'s
    ``split`` at :data:`REPORT_KS` and ``k``, with every user's values and the items' list
    counts; with ``compare_with``, also :func:`compare_models` of the two at ``k``."""
    from graphrec.eval.baselines import ItemKNN, MostPopular
    from graphrec.eval.compare import DEFAULT_METRICS, compare_rankings, metric_keys
    from graphrec.eval.context import EvalContext, model_scoring

    if split not in SPLITS:
        raise ConfigError(parameter="split", value=split, expected="valid or test")
    ks = tuple(sorted({*REPORT_KS, k}))
    ctx = EvalContext.from_graph(graph, ks, device)
    fold = ctx.fold(split)
    if not ctx.has_targets(fold):
        raise ConfigError(parameter="split", value=split,
                          expected=f"a split with held-out interactions (the graph has no "
                                   f"{split} interactions)")
    cfg = read_model_config(model_path)
    scoring = model_scoring(graph, model_path, ctx.device, cfg)
    seen = ctx.folds[fold][0]
    rankings = {"graphrec": ctx.evaluate(fold, **scoring, per_user=True)}
    rankings["most-popular"] = ctx.evaluate(
        fold, score_fn=MostPopular(seen, graph.num_items).score, per_user=True)
    rankings["item-knn"] = ctx.evaluate(
        fold, score_fn=ItemKNN(seen, graph.num_items, device=ctx.device).score, per_user=True)
    comparison = None
    if compare_with is not None:
        other = ctx.evaluate(fold, **model_scoring(graph, compare_with, ctx.device),
                             per_user=True)
        comparison = compare_rankings(rankings["graphrec"], other,
                                      metric_keys(DEFAULT_METRICS, (k,)), split,
                                      {"a": str(model_path), "b": str(compare_with)},
                                      resamples=resamples)
    metrics_file = read_consistently(model_path, _read_metrics)
    return ReportData(
        model_path=str(model_path), split=split, k=k,
        graph={"users": graph.num_users, "items": graph.num_items,
               "train": int(ctx.folds[SPLITS["valid"]][0].nnz),
               "held_out": int(ctx.folds[fold][1].nnz)},
        train=cfg.get("train", {}), metrics_file=metrics_file, rankings=rankings,
        item_degree=np.asarray(ctx.item_degree), cold_items=int(
            ctx.cold_items.sum()) if ctx.cold_items is not None else 0,
        comparison=comparison, compare_path=None if compare_with is None else str(compare_with),
    )


def _read_metrics(folder: Path) -> dict:
    path = folder / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


# ------------------------------------------------------------------------------------ plots


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError("graphrec report draws its plots with matplotlib: "
                          'pip install "graphrec[plots]"') from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    """The figure as a data: URI (PNG, base64), and the figure closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


COLOURS = {"graphrec": "#1f77b4", "most-popular": "#7f7f7f", "item-knn": "#ff7f0e",
           "training": "#2ca02c"}


def plot_training_curve(data: ReportData) -> str | None:
    """Loss per epoch and, where the run validated, validation recall@K."""
    history = data.metrics_file.get("history") or []
    if not history:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row["loss"] for row in history], color="#444444", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    valid = [(row["epoch"], row["valid"]) for row in history if "valid" in row]
    key = next((f"recall@{k}" for k in (data.k, 20) if valid and f"recall@{k}" in valid[0][1]),
               None)
    if key:
        right = ax.twinx()
        right.plot([e for e, _ in valid], [v[key] for _, v in valid], "o-", ms=3,
                   color=COLOURS["graphrec"], label=f"validation {key}")
        right.set_ylabel(f"validation {key}")
        best = data.metrics_file.get("best_epoch")
        if best:
            right.axvline(best, color=COLOURS["graphrec"], ls=":", lw=1, label="_best")
        lines = [ln for ln in ax.get_lines() + right.get_lines()
                 if not ln.get_label().startswith("_")]
        ax.legend(lines, [ln.get_label() for ln in lines], loc="center right", fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("training curve")
    return _png(fig)


def plot_recall_at_k(data: ReportData) -> str:
    """recall@K over K for the model and the baselines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for name, result in data.rankings.items():
        ks = [k for k in REPORT_KS if f"recall@{k}" in result.metrics]
        ax.plot(ks, [result.metrics[f"recall@{k}"] for k in ks], "o-", ms=3, label=name,
                color=COLOURS.get(name))
    return _over_k(fig, ax, REPORT_KS, "recall@K", f"recall@K on {data.split}")


def _over_k(fig, ax, ks: Sequence[int], ylabel: str, title: str) -> str:
    """A metric-over-K plot's axes (log K, one tick per K), finished as a PNG."""
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def popularity_shares(item_degree: np.ndarray, counts: np.ndarray,
                      bins: int = POPULARITY_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Items sorted by training popularity (most popular first) and cut into ``bins``
    equal-size groups: each group's share of the training interactions and of the
    recommendation slots ``counts`` [I]."""
    order = np.argsort(-item_degree, kind="stable")
    groups = np.array_split(order, bins)
    degree_total = max(float(item_degree.sum()), 1.0)
    count_total = max(float(counts.sum()), 1.0)
    train = np.array([item_degree[g].sum() / degree_total for g in groups])
    recommended = np.array([counts[g].sum() / count_total for g in groups])
    return train, recommended


def plot_long_tail(data: ReportData) -> str:
    """Share of training interactions and of top-K slots per popularity decile."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    train, _ = popularity_shares(data.item_degree, np.zeros_like(data.item_degree))
    x = np.arange(1, POPULARITY_BINS + 1)
    width = 0.2
    ax.bar(x - 1.5 * width, train, width, label="training interactions",
           color=COLOURS["training"])
    for offset, (name, result) in zip((-0.5, 0.5, 1.5), data.rankings.items(), strict=False):
        _, shares = popularity_shares(data.item_degree, result.item_counts[data.k])
        ax.bar(x + offset * width, shares, width, label=f"{name} top-{data.k}",
               color=COLOURS.get(name))
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{10 * (i - 1)}-{10 * i}%" for i in x], rotation=45, fontsize=7)
    ax.set_xlabel("items by training popularity (most popular first)")
    ax.set_ylabel("share (log scale)")
    ax.set_title("where the recommendations fall: the long tail")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_tail_and_coverage(data: ReportData) -> str:
    """tail_share@K and coverage@K per model, as bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    names = list(data.rankings)
    keys = [f"tail_share@{data.k}", f"coverage@{data.k}"]
    x = np.arange(len(keys))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        values = [data.rankings[name].metrics.get(key, 0.0) for key in keys]
        ax.bar(x + (j - (len(names) - 1) / 2) * width, values, width, label=name,
               color=COLOURS.get(name))
    ax.set_xticks(x, keys)
    ax.set_ylim(0, 1)
    ax.set_title("tail share and catalog coverage")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_cold(data: ReportData) -> str | None:
    """cold_recall@K over K (cold items ranked among themselves) against a random order."""
    result = data.rankings["graphrec"]
    ks = [k for k in REPORT_KS if f"cold_recall@{k}" in result.metrics]
    if not ks:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.plot(ks, [result.metrics[f"cold_recall@{k}"] for k in ks], "o-", ms=3,
            label="graphrec (text placement)", color=COLOURS["graphrec"])
    ax.plot(ks, [k / data.cold_items for k in ks], "--", label="random order (K / cold items)",
            color=COLOURS["most-popular"])
    return _over_k(fig, ax, ks, "cold_recall@K",
                   f"{data.cold_items} cold items, ranked among themselves")


# ------------------------------------------------------------------------------------- HTML

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 68em; margin: 2em auto; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.5em 0; }
th, td { padding: 0.25em 0.45em; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; white-space: nowrap; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "–" if np.isnan(value) else f"{value:.4f}"
    return str(value)


def _figure(uri: str | None, alt: str) -> str:
    if uri is None:
        return f'<p class="note">No data for: {html.escape(alt)}.</p>'
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def render_report(data: ReportData) -> str:
    """The report as one HTML document (plots embedded)."""
    k = data.k
    model = data.rankings["graphrec"].metrics
    columns = [f"{m}@{k}" for m in TABLE_METRICS if f"{m}@{k}" in model]
    if f"cold_recall@{k}" in model:
        columns.append(f"cold_recall@{k}")
    metric_rows = [[name] + [r.metrics.get(c, float("nan")) for c in columns]
                   for name, r in data.rankings.items()]
    t = data.train
    settings = ", ".join(f"{key} {t[key]}" for key in ("epochs", "dim", "layers", "lr",
                                                       "negatives", "item_init", "seed")
                         if key in t)
    timings = data.metrics_file.get("timings", {})
    fit = (f", trained in {timings['total_seconds']:.1f} s" if "total_seconds" in timings
           else "")
    best = data.metrics_file.get("best_epoch")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>graphrec report: {html.escape(data.model_path)}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>graphrec evaluation report</h1>",
        f'<p class="note">Model <code>{html.escape(data.model_path)}</code>, made '
        f"{html.escape(data.made_at)}. Graph: {data.graph['users']:,} users, "
        f"{data.graph['items']:,} items, {data.graph['train']:,} training interactions; "
        f"{data.graph['held_out']:,} {data.split} interactions of "
        f"{model['num_users']:,} users, full ranking (seen items masked).</p>",
        f'<p class="note">Training: {html.escape(settings)}'
        + (f", best epoch {best}" if best else "") + f"{fit}.</p>",
        f"<h2>Metrics at K = {k} ({data.split})</h2>",
        _table(["model", *columns], metric_rows),
        '<p class="note">Baselines scored by the same code on the same split: most-popular '
        "(training popularity) and item-kNN (cosine item-item on the training interactions). "
        "The tail is every item outside the 20% most-interacted ones.</p>",
        "<h2>Training curve</h2>",
        _figure(plot_training_curve(data), "training curve"),
        "<h2>recall@K over K</h2>",
        _figure(plot_recall_at_k(data), "recall at K"),
        "<h2>Popularity: the long tail</h2>",
        _figure(plot_long_tail(data), "popularity distribution of recommended items"),
        '<p class="note">Items sorted by training interactions and cut into ten equal groups; '
        "each bar is a group's share of the training interactions or of the top-K slots. "
        "A recommender that only echoes popularity puts almost every slot in the first "
        "group; items without training interactions (cold items among them) fill the last "
        "groups, where only text placement (or, at test time, validation interactions) can "
        "put them.</p>",
        "<h2>Tail share and coverage</h2>",
        _figure(plot_tail_and_coverage(data), "tail share and coverage"),
    ]
    if data.cold_items:
        cold_rows = [[f"cold_{m}@{kk}", model[f"cold_{m}@{kk}"],
                      kk / data.cold_items if m == "recall" else float("nan")]
                     for kk in REPORT_KS for m in ("recall", "ndcg")
                     if f"cold_{m}@{kk}" in model]
        parts += ["<h2>Cold items</h2>",
                  f'<p class="note">{data.cold_items} items never seen in training, placed '
                  f"from their text; {model.get('num_cold_users', 0):,} users have one "
                  "held out. Ranked among the cold items only.</p>",
                  _table(["metric", "graphrec", "random order"], cold_rows) if cold_rows
                  else "",
                  _figure(plot_cold(data), "cold items")]
    if data.comparison is not None:
        from graphrec.eval.compare import format_interval, format_p

        c = data.comparison
        rows = [[key, m.a, m.b, f"{m.diff:+.4f}", format_interval(m.ci), format_p(m.p_value),
                 format_p(m.p_holm), m.wins_a, m.wins_b, m.ties]
                for key, m in c.metrics.items()]
        parts += ["<h2>Comparison</h2>",
                  f'<p class="note">A = <code>{html.escape(data.model_path)}</code>, B = '
                  f"<code>{html.escape(str(data.compare_path))}</code>, {c.users:,} users "
                  f"paired. B - A with its BCa {c.confidence:.0%} interval ({c.resamples} "
                  "resamples), sign-flip permutation p-values, Holm-corrected across the "
                  "metrics.</p>",
                  _table(["metric", "A", "B", "B - A", "interval", "p", "p Holm", "A wins",
                          "B wins", "ties"], rows)]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(graph: GraphData, model_path: str | Path, output: str | Path,
                 **options) -> ReportData:
    """:func:`report_data` rendered to ``output``, written atomically; returns the data."""
    from graphrec.fsio import atomic_file

    data = report_data(graph, model_path, **options)
    page = render_report(data)
    with atomic_file(output, "w") as f:
        f.write(page)
    return data
