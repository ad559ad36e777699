"""Serving: recommendations from a model directory alone (no raw data, no training stack),
items added from their text, the work-directory layout. Never imports ``graphrec.train`` or
``graphrec.eval``. Names load on first use (``graphrec.lazy``)."""

from graphrec import lazy

_EXPORTS = lazy.exports({
    "graphrec.serve.additems": ("AddedItems", "add_items", "add_items_from_file"),
    "graphrec.serve.recommender": ("Recommendation", "Recommender"),
    "graphrec.serve.scoring": ("check_diversity", "check_k", "mask_known", "mmr_rerank"),
    "graphrec.serve.workdir": ("DEFAULT_WORKDIR", "Workdir", "write_recommendations"),
})
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    return lazy.load(__name__, _EXPORTS, name)
