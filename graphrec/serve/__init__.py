"""Serving: recommendations from a model directory alone (no raw data, no training stack),
items added from their text, the work-directory layout. Never imports ``graphrec.train`` or
``graphrec.eval``."""

from graphrec.serve.additems import AddedItems, add_items, add_items_from_file
from graphrec.serve.recommender import Recommendation, Recommender
from graphrec.serve.scoring import check_diversity, check_k, mask_known, mmr_rerank
from graphrec.serve.workdir import Workdir, write_recommendations

__all__ = [
    "AddedItems", "Recommendation", "Recommender", "Workdir", "add_items",
    "add_items_from_file", "check_diversity", "check_k", "mask_known", "mmr_rerank",
    "write_recommendations",
]
