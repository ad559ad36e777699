"""Approximate maximum-inner-product retrieval for large catalogs (faiss, the ``serve`` extra).

LightGCN ranks by the raw inner product u·x. Graph indexes on raw inner product lose most
of their recall (hnswlib#74, faiss#1496), so the items are lifted to one more coordinate
that turns the problem into plain L2 search (Bachrach et al., RecSys 2014):

    x_i -> [x_i, sqrt(M² - ||x_i||²)],  M = max_i ||x_i||;   q -> [q, 0]
    ||q' - x_i'||² = ||q||² + M² - 2 q·x_i

so for each query the L2 nearest items are the ones of largest inner product. The
candidates are an IVF-Flat index's; the caller rescores them exactly.

faiss is imported inside functions: it is optional, and importing this module needs none.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from graphrec.errors import ConfigError, check_positive_int

if TYPE_CHECKING:
    import faiss

MIN_POINTS_PER_CENTROID = 39
"""Fewest items per list by default: below faiss's own k-means minimum (39 training points
per centroid) the centroids are poorly placed."""

TRAIN_POINTS_PER_CENTROID = 64
"""k-means trains on at most this many sampled items per list (a quarter of faiss's default
256): at 200k items it halves the build for recall@20 0.987 instead of 0.993, and keeps a
1M-item build (4,000 lists, 256k training points) well under a minute on 2 cores."""

DEFAULT_NPROBE = 64
"""Lists scanned per query by default: the smallest power of two with recall@20 >= 0.95
against exact search (the candidates rescored) on every catalog measured, nlist 4·sqrt(I):

- 20k items, d=32, 128 overlapping Gaussians (``tests/serve/test_index.py``): nprobe
  16 / 32 / 64 / 128 -> 0.925 / 0.972 / 0.994 / 0.999; ranks 101-110 (a user with 100
  known items) 0.58 / 0.80 / 0.94 / 0.99; new users (a mean of 3 items) 0.60 / 0.81 /
  0.95 / 0.99;
- 100k and 200k items, d=64, wider Gaussians: 16 / 32 / 64 -> 0.96 / 0.98 / 0.99;
- a trained Gowalla model (41k items, d=64): 8 / 16 / 32 -> 0.989 / 0.997 / 0.9996.

One search costs 0.10-0.16 ms at 64 against 0.08-0.12 ms at 32 (20k-100k items, 1 thread).
"""


SEARCH_THREADS = 1
"""OpenMP threads of one search. faiss's wheel and torch's each bring their own OpenMP
runtime, whose idle threads spin-wait against each other's on the same cores: on 2 cores a
search and its exact rescoring took 8 ms with 2 faiss threads and 1.1 ms with 1 (100k
items, d=64), and a batch of 64 users 71 ms against 15 ms. Concurrency comes from callers
(the server's threads; faiss releases the GIL while it searches)."""


def faiss_module() -> faiss:
    """The faiss module, or ConfigError naming ``index`` when it is not installed."""
    try:
        import faiss
    except ImportError:
        raise ConfigError("approximate search needs faiss, which is not installed (pip "
                          "install 'graphrec[serve]' or faiss-cpu)", parameter="index",
                          value="ann", expected='"exact", or faiss installed') from None
    return faiss


def faiss_available() -> bool:
    """Whether faiss imports."""
    try:
        faiss_module()
    except ConfigError:
        return False
    return True


def default_nlist(num_items: int) -> int:
    """IVF lists for a catalog of ``num_items``: 4·sqrt(I), at most I / 39, at least 1.

    The low end of faiss's guideline (4-16·sqrt(I)): fewer, larger lists let each probe
    cover more of a query's neighbourhood. A query costs nlist centroid distances plus
    nprobe · I / nlist item distances: at 1M items and nprobe 64, 4,000 + 16,000, 2% of an
    exact pass. The cap keeps k-means at faiss's minimum of 39 points a list.
    """
    return max(1, min(round(4 * math.sqrt(num_items)), num_items // MIN_POINTS_PER_CENTROID))


def augment_items(item_emb: np.ndarray) -> np.ndarray:
    """[I, d] float32 items -> [I, d + 1] float32 with the coordinate sqrt(M² - ||x_i||²)
    (computed in float64, clamped at 0) that makes L2 distance rank by inner product."""
    x = np.asarray(item_emb, dtype=np.float64)
    sq = np.einsum("id,id->i", x, x)
    extra = np.sqrt(np.maximum(sq.max(initial=0.0) - sq, 0.0))
    return np.ascontiguousarray(np.hstack([x, extra[:, None]]), dtype=np.float32)


def augment_queries(queries: np.ndarray) -> np.ndarray:
    """[b, d] queries -> [b, d + 1] float32, the extra coordinate 0."""
    q = np.asarray(queries, dtype=np.float32)
    return np.ascontiguousarray(np.hstack([q, np.zeros((len(q), 1), dtype=np.float32)]))


class AnnIndex:
    """Candidates of largest inner product from an IVF-Flat L2 index over augmented items.

    Build once with :meth:`build`; :meth:`search` only reads the index, so several threads
    may search at once (faiss's CPU search is const; ``nprobe`` goes in per call, the index
    is never mutated after building).
    """

    def __init__(self, index: faiss.IndexIVFFlat, nprobe: int, build_seconds: float):
        self.index = index
        self.nprobe = nprobe
        """Lists scanned per query (at most ``nlist``; ``nlist`` scans everything: exact)."""
        self.build_seconds = build_seconds
        """Wall-clock seconds :meth:`build` took (augmenting, k-means, adding)."""

    @classmethod
    def build(cls, item_emb: np.ndarray, nlist: int | None = None, nprobe: int | None = None,
              seed: int = 0) -> AnnIndex:
        """Index item_emb [I, d] float32 (I >= 1).

        ``nlist``: IVF lists, default :func:`default_nlist`; ``nprobe``: lists scanned per
        query, default :data:`DEFAULT_NPROBE` (capped at ``nlist``); ``seed``: k-means'
        sampling and initialisation. k-means trains on at most
        :data:`TRAIN_POINTS_PER_CENTROID` sampled items per list.
        """
        faiss = faiss_module()
        start = time.perf_counter()
        items = augment_items(item_emb)
        num_items = items.shape[0]
        if num_items == 0:
            raise ConfigError("no items to index", parameter="item_emb",
                              expected="at least one item")
        nlist = default_nlist(num_items) if nlist is None else check_positive_int("nlist", nlist)
        if nlist > num_items:
            raise ConfigError(parameter="nlist", value=nlist,
                              expected=f"at most the number of items ({num_items})")
        nprobe = DEFAULT_NPROBE if nprobe is None else check_positive_int("nprobe", nprobe)
        faiss.omp_set_num_threads(torch.get_num_threads())  # k-means: as many as torch uses
        quantizer = faiss.IndexFlatL2(items.shape[1])
        index = faiss.IndexIVFFlat(quantizer, items.shape[1], nlist, faiss.METRIC_L2)
        index.cp.seed = seed
        index.cp.max_points_per_centroid = TRAIN_POINTS_PER_CENTROID
        index.cp.min_points_per_centroid = 1  # tiny catalogs: nlist may exceed I / 39
        index.train(items)
        index.add(items)
        return cls(index, min(nprobe, nlist), time.perf_counter() - start)

    @property
    def nlist(self) -> int:
        return self.index.nlist

    @property
    def num_items(self) -> int:
        return self.index.ntotal

    @property
    def memory_bytes(self) -> int:
        """Bytes the index holds: each item's augmented vector and id, and the centroids."""
        return self.index.ntotal * (self.index.code_size + 8) + self.nlist * self.index.d * 4

    def search(self, queries: np.ndarray, fetch: int, nprobe: int | None = None) -> np.ndarray:
        """[b, fetch] int64 item_idx of the (approximately) largest inner products with
        queries [b, d] float32, best first, -1 where the scanned lists held fewer items.

        ``nprobe``: lists to scan for this call (default: the index's own).
        """
        faiss = faiss_module()
        fetch = check_positive_int("fetch", fetch)
        nprobe = self.nprobe if nprobe is None else min(check_positive_int("nprobe", nprobe),
                                                       self.nlist)
        q = augment_queries(queries)
        faiss.omp_set_num_threads(SEARCH_THREADS)  # OpenMP's thread count is per caller
        _, idx = self.index.search(q, fetch, params=faiss.SearchParametersIVF(nprobe=nprobe))
        return idx.astype(np.int64, copy=False)
