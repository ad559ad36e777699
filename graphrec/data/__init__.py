"""Data: readers, id maps, splits, CSR helpers, and build-graph (interactions + text -> graph).

``BuildConfig`` and ``build_graph`` load on first use: building a graph needs the text
encoder and the graph directory, which the rest of this package does not.
"""

from graphrec.data.csr import Csr, gather_rows, indptr_from_rows, unique_pairs
from graphrec.data.interactions import IdMap, Interactions, deduplicate, k_core
from graphrec.data.split import (
    SPLIT_STRATEGIES,
    TEST,
    TRAIN,
    VALID,
    assign_folds,
    choose_cold_items,
    cold_item_folds,
)

__all__ = [
    "SPLIT_STRATEGIES", "TEST", "TRAIN", "VALID", "BuildConfig", "Csr", "IdMap",
    "Interactions", "assign_folds", "build_graph", "choose_cold_items", "cold_item_folds",
    "deduplicate", "gather_rows",
    "indptr_from_rows", "k_core", "unique_pairs",
]


def __getattr__(name: str):
    if name in ("BuildConfig", "build_graph", "BUNDLED_DATASET"):
        from graphrec.data import build

        return getattr(build, name)
    raise AttributeError(f"module 'graphrec.data' has no attribute {name!r}")
