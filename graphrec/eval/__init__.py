"""Evaluation: EvalContext, ranking kernels, the metric registry, the full-ranking protocol and
the reference baselines. Never imported by ``graphrec.serve``."""

from graphrec.eval.baselines import ItemKNN, MostPopular
from graphrec.eval.context import SPLITS, EvalContext, evaluate_model
from graphrec.eval.metrics import METRICS, MetricAccumulator, RankedLists, gini, metric
from graphrec.eval.protocol import evaluate_ranking, evaluate_scores
from graphrec.eval.ranking import default_batch_users, topk_rows

__all__ = [
    "METRICS", "SPLITS", "EvalContext", "ItemKNN", "MetricAccumulator", "MostPopular",
    "RankedLists", "default_batch_users", "evaluate_model", "evaluate_ranking",
    "evaluate_scores", "gini", "metric", "topk_rows",
]
