"""Data: readers, id maps, splits and CSR helpers (build-graph, which also needs the text
encoder and the graph directory, is ``graphrec.build``, a layer above).

Names load on first use (``graphrec.lazy``): the split and the readers need only numpy.
"""

from graphrec import lazy

_EXPORTS = lazy.exports({
    "graphrec.data.config": ("BUNDLED_DATASET", "BuildConfig"),
    "graphrec.data.csr": ("Csr", "gather_rows", "indptr_from_rows", "unique_pairs"),
    "graphrec.data.interactions": ("IdMap", "Interactions", "deduplicate", "k_core"),
    "graphrec.data.split": ("SPLITS", "SPLIT_STRATEGIES", "TEST", "TRAIN", "VALID",
                            "assign_folds", "choose_cold_items", "cold_item_folds"),
})
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    return lazy.load(__name__, _EXPORTS, name)
