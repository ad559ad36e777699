"""Evaluation: EvalContext, ranking kernels, the metric registry, the full-ranking protocol,
the reference baselines, the paired comparison of two models and the HTML report. Never
imported by ``graphrec.serve``."""

from graphrec.eval.baselines import ItemKNN, MostPopular
from graphrec.eval.compare import Comparison, compare_models, compare_values
from graphrec.eval.context import SPLITS, EvalContext, evaluate_model
from graphrec.eval.metrics import METRICS, MetricAccumulator, RankedLists, gini, metric
from graphrec.eval.protocol import RankingResult, evaluate_ranking, evaluate_scores
from graphrec.eval.ranking import default_batch_users, topk_rows
from graphrec.eval.report import write_report

__all__ = [
    "METRICS", "SPLITS", "Comparison", "EvalContext", "ItemKNN", "MetricAccumulator",
    "MostPopular", "RankedLists", "RankingResult", "compare_models", "compare_values",
    "default_batch_users", "evaluate_model", "evaluate_ranking", "evaluate_scores", "gini",
    "metric", "topk_rows", "write_report",
]
