"""Serving: top-K for known users, new users from their items, similar items.

Works from a model directory alone: no raw data, no text encoder, no pickle. Large catalogs
can be searched approximately (``index="ann"``, :mod:`graphrec.serve.index`): a faiss index
proposes candidates, which are then scored exactly.

Three kinds of model (config.json's ``model`` section): TextLightGCN scores a user by its
embedding; the graph filter (graphrec.model.filter) by the user's interaction row, its
training items plus those folded in live (the filter itself stays as fitted, so folding in
is exact and free); the ensemble blends both (graphrec.model.ensemble). Filter and ensemble
models are always scored exactly: the filter has no factor form for an index.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphrec.artifacts.model_dir import (
    load_arrays,
    load_filter_arrays,
    load_train_edges,
    mapped_tensor,
    model_kind,
    read_model_config,
)
from graphrec.data.csr import Csr, gather_rows
from graphrec.device import resolve_device
from graphrec.errors import ConfigError, UnknownItemError, UnknownUserError
from graphrec.fsio import read_consistently
from graphrec.model.ensemble import blend
from graphrec.model.filter import GraphFilter
from graphrec.options import RETRIEVAL_INDEXES
from graphrec.popularity import boost_tail, check_tail_boost, tail_boost_weights
from graphrec.serve.index import AnnIndex, faiss_available
from graphrec.serve.scoring import check_diversity, check_k, mmr_pool_size, mmr_rerank
from graphrec.serve.update import FoldInState

ANN_MIN_ITEMS = 50_000
"""Catalog size above which ``index="auto"`` searches approximately. Measured on 2 CPU
cores, d=64, top-20, medians: one [1, 64] x [64, I] product and topk takes 0.12 / 0.30 /
1.3-1.7 / 2.3-3.5 ms at 10k / 25k / 50k / 100k items (36 ms at 1M); a whole exact
``recommend`` 0.5 / 0.9 / 2.0 / 3.3 ms, an "ann" one 0.8-1.0 ms at every one of these sizes
(0.10-0.14 ms of it the faiss search, the rest rescoring and masking). From 50k items the
exact path passes 2 ms and "ann" is twice as fast; below, exact lists cost about what
approximate ones do. Building the index takes about 2 s at 50k items, 5 s at 100k."""

ANN_MARGIN = 16
"""Candidates fetched beyond k and the user's known items: spare ones for the exact
rescoring to reorder."""


def score_covariance(item_emb: Tensor) -> Tensor:
    """[d, d] float64 unbiased covariance C of the items [I, d] (I >= 2): a user u's scores
    over all items have standard deviation ``torch.std(u @ item_emb.T) = sqrt(uᵀ C u)``."""
    x = item_emb.double()
    centred = x - x.mean(0)
    return centred.T @ centred / (x.shape[0] - 1)


def score_std(user_vecs: Tensor, cov: Tensor) -> Tensor:
    """[b] float64 standard deviation of each user's scores over all items, ``sqrt(uᵀ C u)``
    from user_vecs [b, d] and the items' :func:`score_covariance` C [d, d]."""
    q = user_vecs.double()
    return torch.einsum("bd,de,be->b", q, cov, q).clamp_min(0.0).sqrt()


_NO_PAIRS = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
"""No known (row, item_idx) pairs: nothing masked."""


def _read_version(folder: Path) -> tuple[Path, dict, dict]:
    """(folder, config, arrays) of one model directory version; a filter or ensemble model's
    arrays also hold its filter ("filter") and training rows ("train_rows")."""
    config, arrays = read_model_config(folder), load_arrays(folder)
    if model_kind(config) != "lightgcn":
        arrays["filter"] = load_filter_arrays(folder)
        arrays["train_rows"] = load_train_edges(folder)[0]
    return folder, config, arrays


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: raw id, title and score."""

    item: str
    title: str
    score: float

    def as_dict(self) -> dict:
        return {"item": self.item, "title": self.title, "score": round(self.score, 6)}


class Recommender:
    """Top-K recommendations from a trained model directory.

    >>> rec = Recommender.load("graphrec-run/model")
    >>> rec.recommend("1", k=10)
    """

    def __init__(self, arrays: dict, config: dict, path: Path, tail_boost: float = 0.0,
                 tail_shape: str = "degree", index: str = "exact", device: str = "cpu"):
        check_tail_boost(tail_boost)
        if index not in RETRIEVAL_INDEXES:
            raise ConfigError(parameter="index", value=index,
                              expected=f"one of {', '.join(RETRIEVAL_INDEXES)}")
        self.device = resolve_device(device)
        """Where scores are computed: on CUDA every product is exact (a 1M-item product
        takes well under a millisecond there), so "auto" means exact and "ann" is refused."""
        if self.device.type == "cuda" and index == "ann":
            raise ConfigError("the ANN index searches on the CPU; on CUDA, exact scoring is "
                              "the fast path", parameter="index", value=index,
                              expected="exact or auto with a CUDA device")
        self.kind = model_kind(config)
        """lightgcn, filter or ensemble (:data:`graphrec.options.MODEL_KINDS`)."""
        if self.kind != "lightgcn" and index == "ann":
            raise ConfigError(f"a {self.kind} model is scored exactly (the filter has no "
                              "factor form to index)", parameter="index", value=index,
                              expected="exact or auto")
        self.filter: GraphFilter | None = None
        """The graph filter of a filter or ensemble model (None for TextLightGCN)."""
        self.weight = 1.0
        """The filter's weight in the blend (ensemble; 1 for a filter model)."""
        if self.kind != "lightgcn":
            self.filter = GraphFilter.from_arrays(arrays["filter"], config["model"].get(
                "filter", config["model"]), self.device)
            self.weight = float(config["model"].get("weight", 1.0))
        self.path = path
        self.source = path
        """The version folder the arrays came from (what a live fold-in reads)."""
        self.tail_boost = tail_boost
        """Serving-time tail boost (see :func:`boost_tail`); 0 ranks by the model alone."""
        self.config = config
        self.user_ids: np.ndarray = arrays["user_ids"]
        self.item_ids: np.ndarray = arrays["item_ids"]
        self.item_titles: list[str] = arrays["item_titles"]
        self.user_emb: Tensor | None = None
        """[U, d] TextLightGCN user embeddings (None for a filter model; so item_emb)."""
        self.item_emb: Tensor | None = None
        if arrays["user_emb"] is not None:
            self.user_emb = mapped_tensor(arrays["user_emb"]).to(self.device)
            self.item_emb = mapped_tensor(arrays["item_emb"]).to(self.device)
        self._owns_users = self.device.type != "cpu"  # a copy on the device is ours
        self._train: Csr | None = arrays.get("train_rows")
        self.known: Csr = arrays["known"]
        self.text_emb = (None if arrays["text_emb"] is None
                         else mapped_tensor(arrays["text_emb"]).to(self.device))
        self.text_map = torch.as_tensor(arrays["text_map"]) if "text_map" in arrays else None
        self.item_degree = arrays["item_degree"]
        # Each item's share of the boost: 0 on the 20% most-interacted items; on the others
        # "degree" grows with their interactions (added items have none), "flat" is 1.
        self.tail = torch.as_tensor(tail_boost_weights(self.item_degree, tail_shape)).to(
            self.device)
        self._user_index = {u: k for k, u in enumerate(self.user_ids)}
        self._foldin_arrays = {k: arrays[k] for k in
                               ("user_ids", "item_ids", "user_emb", "user_self_map",
                                "item_self_map", "item_text_proj") if k in arrays}
        self._foldin: FoldInState | None = None
        self._live: dict[int, np.ndarray] = {}
        """Items folded in live per user index (:meth:`fold_in_user`), beyond the stored
        training edges; masked like known items."""
        self._item_index = {i: k for k, i in enumerate(self.item_ids)}
        if index == "auto":
            index = ("ann" if self.num_items > ANN_MIN_ITEMS and self.device.type == "cpu"
                     and self.kind == "lightgcn" and faiss_available() else "exact")
        self.index = index
        """How top items are found: "exact" (every item scored) or "ann"."""
        self.ann: AnnIndex | None = None
        """With "ann": the faiss index over [item_emb, tail] (see :meth:`_ann_top`)."""
        self.score_cov: Tensor | None = None
        """With "ann": [d, d] :func:`score_covariance` of the items, for the boost's spread."""
        if index == "ann":
            self.build_index()

    def build_index(self, nlist: int | None = None, nprobe: int | None = None,
                    seed: int = 0) -> AnnIndex:
        """(Re)build the faiss index (:meth:`AnnIndex.build`'s settings) and search with it
        from now on."""
        if self.item_emb is None or self.kind != "lightgcn":
            raise ConfigError(f"a {self.kind} model is scored exactly (the filter has no "
                              "factor form to index)", parameter="index", value="ann",
                              expected="exact")
        ann = AnnIndex.build(torch.cat([self.item_emb, self.tail[:, None]], 1).numpy(),
                             nlist, nprobe, seed)
        self.score_cov = score_covariance(self.item_emb)
        self.ann, self.index = ann, "ann"
        return ann

    @classmethod
    def load(cls, path: str | Path, tail_boost: float = 0.0, tail_shape: str = "degree",
             index: str = "exact", device: str = "cpu") -> Recommender:
        """The recommender of the model directory ``path``. ``index``: one of
        :data:`RETRIEVAL_INDEXES`; "ann" builds the faiss index here (a few seconds per
        100k items), "auto" is "ann" above :data:`ANN_MIN_ITEMS` items when faiss is
        installed, else "exact"."""
        path = Path(path)
        folder, config, arrays = read_consistently(path, _read_version)
        rec = cls(arrays, config, path, tail_boost, tail_shape, index, device)
        rec.source = folder
        return rec

    def scores(self, user_vecs: Tensor | None, tail_boost: float | None = None,
               rows: Tensor | None = None) -> Tensor:
        """[b, I] scores against every item of user embeddings [b, d] (TextLightGCN,
        ensemble) and interaction rows [b, I'] (:meth:`user_rows`; filter, ensemble), with
        the tail boost ``tail_boost`` (None: the recommender's own, :attr:`tail_boost`)."""
        boost = self.tail_boost if tail_boost is None else tail_boost
        if self.filter is None:
            return boost_tail(user_vecs @ self.item_emb.T, self.tail, boost)
        filtered = self.filter.score_rows(rows).to(self.device)
        if self.kind == "filter":  # items past the filter's (none yet) score 0
            scores = torch.nn.functional.pad(filtered, (0, self.num_items - filtered.shape[1]))
        else:
            scores = blend(user_vecs @ self.item_emb.T, filtered, self.weight)
        return boost_tail(scores, self.tail, boost)

    def user_scores(self, users: Tensor, tail_boost: float | None = None) -> Tensor:
        """[b, I] :meth:`scores` of the user indices ``users`` [b], whatever the kind."""
        vecs = self.user_emb[users.to(self.device)] if self.user_emb is not None else None
        rows = self.user_rows(users) if self.filter is not None else None
        return self.scores(vecs, tail_boost, rows)

    def user_rows(self, users: Tensor) -> Tensor:
        """[b, I'] float32 interaction rows of user indices [b] over the filter's items:
        1 at each training item (the version's train.npz) and each item folded in live."""
        train = self.train_rows()
        users = users.cpu()
        stored = users < train.num_rows
        at = torch.nonzero(stored)[:, 0]
        rows, cols = gather_rows(torch.as_tensor(train.indptr), torch.as_tensor(train.indices),
                                 users[at])
        rows = at[rows]
        extra = [(r, self._live[u]) for r, u in enumerate(users.tolist()) if u in self._live]
        if extra:
            rows = torch.cat([rows, *(torch.full((len(c),), r, dtype=torch.int64)
                                      for r, c in extra)])
            cols = torch.cat([cols, *(torch.as_tensor(c) for _, c in extra)])
        return self._rows_of(rows, cols, len(users))

    def _rows_of(self, rows: Tensor, cols: Tensor, b: int) -> Tensor:
        """[b, I'] float32 with 1 at the pairs (rows, cols) whose item the filter knows."""
        width = self.filter.num_items
        out = torch.zeros(b, width)
        keep = cols < width  # items added after fitting: the filter has nothing on them
        out[rows[keep], cols[keep]] = 1.0
        return out.to(self.device)

    def train_rows(self) -> Csr:
        """Every user's training items (the version's train.npz, loaded on first use)."""
        if self._train is None:
            self._train = load_train_edges(self.source)[0]
        return self._train

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user: str) -> int:
        k = self._user_index.get(str(user).strip())
        if k is None:
            raise UnknownUserError(
                f"not in the model ({self.num_users} known users); for a new user, pass the "
                "items they liked as {history}", parameter="user", value=user)
        return k

    def item_index(self, item: str, parameter: str = "item") -> int:
        """Index of a raw item id; ``parameter`` names the argument it came from in errors."""
        k = self._item_index.get(str(item).strip())
        if k is None:
            raise UnknownItemError(f"not in the model ({self.num_items} known items)",
                                   parameter=parameter, value=item)
        return k

    @property
    def diversity_vectors(self) -> Tensor:
        """[I, d] item vectors whose cosine MMR penalises: the text embeddings, or when the
        model has no text the final item embeddings (a filter model: its singular vectors,
        the items' coordinates in the low-pass spectrum)."""
        if self.text_emb is not None:
            return self.text_emb
        if self.item_emb is not None:
            return self.item_emb
        if self.filter.basis is None:
            raise ConfigError("this filter model has neither text nor singular vectors to "
                              "measure diversity by", parameter="diversity",
                              expected="0 for this model")
        return self.filter.basis

    def rank(self, scores: Tensor, k: int, diversity: float = 0.0) -> tuple[Tensor, Tensor]:
        """(scores, item_idx) of the top-``k`` finite entries of scores [I], re-ranked by MMR
        over the ``mmr_pool_size(k)`` most relevant when ``diversity`` > 0."""
        finite = int(torch.isfinite(scores).sum())
        if diversity == 0.0:
            values, idx = torch.topk(scores, min(k, finite))
            return values, idx
        candidates = torch.topk(scores, min(mmr_pool_size(k), finite)).indices
        idx = mmr_rerank(scores, candidates, self.diversity_vectors, k, diversity)
        return scores[idx], idx

    def _top(self, scores: Tensor, k: int, diversity: float = 0.0) -> list[Recommendation]:
        return self._listing(*self.rank(scores, k, diversity))

    def _listing(self, values: Tensor, idx: Tensor) -> list[Recommendation]:
        """Recommendations of scores [n] and item_idx [n]."""
        return [Recommendation(str(self.item_ids[i]), self.item_titles[i], float(v))
                for v, i in zip(values.tolist(), idx.tolist(), strict=True)]

    def _known_pairs(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """(local row, item_idx) [n] int64 of the known items of users [b] int64 (the stored
        ones and those folded in live)."""
        stored = users < self.known.num_rows
        if bool(stored.all()):
            rows, cols = gather_rows(torch.as_tensor(self.known.indptr),
                                     torch.as_tensor(self.known.indices), users)
        else:  # users folded in live have no stored row
            at = torch.nonzero(stored)[:, 0]
            rows, cols = gather_rows(torch.as_tensor(self.known.indptr),
                                     torch.as_tensor(self.known.indices), users[at])
            rows = at[rows]
        if self._live:
            extra = [(r, self._live[u]) for r, u in enumerate(users.tolist()) if u in self._live]
            if extra:
                rows = torch.cat([rows, *(torch.full((len(c),), r, dtype=torch.int64)
                                          for r, c in extra)])
                cols = torch.cat([cols, *(torch.as_tensor(c) for _, c in extra)])
        return rows, cols

    def fold_in_user(self, user: str, items: Sequence[str]) -> tuple[int, bool]:
        """Take new interactions of ``user`` (raw id; a new user is added) with ``items``
        (raw ids of items the model has) into this recommender at once: the user is
        re-embedded over its training items plus these, the items frozen
        (:class:`graphrec.serve.update.FoldInState`), and the items are masked from its
        lists from now on. In memory only: ``graphrec update`` makes it lasting. Returns
        (interactions the user did not have yet, whether the user is new). Not safe to call
        from two threads at once (the service holds a lock)."""
        user = str(user).strip()
        if not user:
            raise ConfigError(parameter="user", expected="a non-empty id")
        if not items:
            raise ConfigError(parameter="items", expected="at least one item id")
        idx = np.asarray([self.item_index(i, "items") for i in items], dtype=np.int64)
        u = self._user_index.get(user)
        have = self.training_items(u) if u is not None else np.zeros(0, dtype=np.int64)
        fresh = np.setdiff1d(idx, have)
        if len(fresh) == 0:
            return 0, False
        vector = None
        if self.user_emb is not None:  # the filter needs only the row, kept in _live
            state = self.foldin_state()
            stored = u if u is not None and u < state.by_user.num_rows else None
            vector = state.user_vector(stored, np.concatenate([have, fresh])).to(self.user_emb)
            if not self._owns_users:
                self.user_emb = self.user_emb.clone()  # a memory map is read-only
                self._owns_users = True
        new = u is None
        if new:
            u = self.num_users
            if vector is not None:
                self.user_emb = torch.cat([self.user_emb, vector[None]])
            self.user_ids = np.append(self.user_ids, user)
            self._user_index[user] = u
        elif vector is not None:
            self.user_emb[u] = vector
        self._live[u] = np.union1d(self._live.get(u, np.zeros(0, dtype=np.int64)), fresh)
        return len(fresh), new

    def training_items(self, u: int) -> np.ndarray:
        """[n] int64 sorted training items of the user index ``u``: its stored training
        edges and the items folded in live (:meth:`fold_in_user`)."""
        train = self.train_rows()
        stored = train.row(u) if u < train.num_rows else np.zeros(0, np.int64)
        return np.union1d(stored, self._live.get(u, np.zeros(0, dtype=np.int64)))

    def check_fold_in(self) -> None:
        """Raise ArtifactError now when :meth:`fold_in_user` could not fold a user in (a
        model directory without its fold-in arrays or training rows)."""
        if self.user_emb is not None:
            self.foldin_state()
        else:
            self.train_rows()

    def foldin_state(self) -> FoldInState:
        """The model version's fold-in arrays (loaded on first use; ArtifactError for a
        model trained before they existed)."""
        if self._foldin is None:
            if self.user_emb is None:
                raise ConfigError(f"model directory {self.source}: a filter model has no "
                                  "TextLightGCN layers; its users are their interaction rows")
            self._foldin = FoldInState(self.source, self._foldin_arrays)
            self._train = self._foldin.by_user
        return self._foldin

    def _exact_top(self, user_vecs: Tensor | None, rows: Tensor, cols: Tensor, n: int,
                   boost: float, filter_rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(scores, item_idx), both [b, min(n, I)], of each user's best items by scoring
        them all; user_vecs [b, d] and filter_rows [b, I'] as :meth:`scores` takes them; the
        pairs (rows, cols) [m] are masked (-inf)."""
        scores = self.scores(user_vecs, boost, filter_rows)
        scores[rows.to(scores.device), cols.to(scores.device)] = float("-inf")
        return torch.topk(scores, min(n, self.num_items), dim=1)

    def _ann_top(self, user_vecs: Tensor, rows: Tensor, cols: Tensor, n: int,
                 boost: float) -> tuple[Tensor, Tensor]:
        """:meth:`_exact_top` from the faiss index's candidates, rescored exactly.

        The index holds [x_i, w_i] (w: the tail weights) and is asked with [u, boost · σ_u],
        whose inner product is exactly the boosted score of :func:`boost_tail`: the boost
        steers which candidates are found, not only their order. σ_u, the spread of u's
        scores over all items, comes from the items' covariance (:func:`score_covariance`)
        without scoring them. Each user gets n + (its known items) + :data:`ANN_MARGIN`
        candidates, scored exactly in float32 (boost included), known ones dropped; the
        scores are exact, which items are candidates is approximate. A user whose candidates
        leave fewer than ``min(n, I - known)`` items (too few in the lists scanned) is
        scored exactly instead, so a list is never shorter than the exact one.

        Over-fetching plain candidates instead (x4) and boosting only those misses the
        tail items a large boost lifts from far down: top-20 overlap with exact boosted
        lists on a trained Gowalla model (degree shape, nprobe 32), boost 3 / 10: 0.94 / 0.20,
        against 0.997 / 0.98 asking with the boost.
        """
        b, num_items = len(user_vecs), self.num_items
        known = rows * num_items + cols
        num_known = torch.bincount(rows, minlength=b)
        fetch = min(n + int(num_known.max()) + ANN_MARGIN, num_items)
        lift = torch.zeros(b, 1)  # boost · σ_u, the query's weight on the tail coordinate
        if boost != 0.0:
            lift = (boost * score_std(user_vecs, self.score_cov))[:, None].float()
        cand = torch.from_numpy(self.ann.search(torch.cat([user_vecs, lift], 1).numpy(), fetch))
        safe = cand.clamp_min(0)
        scores = (self.item_emb[safe] @ user_vecs[:, :, None])[:, :, 0] + lift * self.tail[safe]
        seen = torch.isin(torch.arange(b)[:, None] * num_items + safe, known)
        scores = scores.masked_fill((cand < 0) | seen, float("-inf"))
        values, pos = torch.topk(scores, min(n, fetch), dim=1)
        idx = cand.gather(1, pos)
        short = torch.isfinite(values).sum(1) < (num_items - num_known).clamp(max=n)
        if short.any():
            rows_short = torch.nonzero(short)[:, 0]
            local = torch.full((b,), -1, dtype=torch.int64)
            local[rows_short] = torch.arange(len(rows_short))
            keep = short[rows]
            values[rows_short], idx[rows_short] = self._exact_top(
                user_vecs[rows_short], local[rows[keep]], cols[keep], n, boost)
        return values, idx

    def _lists(self, user_vecs: Tensor | None, rows: Tensor, cols: Tensor, k: int,
               diversity: float, boost: float,
               filter_rows: Tensor | None = None) -> list[list[Recommendation]]:
        """Top-``k`` lists of users (user_vecs [b, d], filter_rows [b, I'], as
        :meth:`scores` takes them) with their known pairs (rows, cols) masked, MMR re-ranked
        over the ``mmr_pool_size(k)`` best when ``diversity`` > 0; exact or from the index
        (:attr:`index`)."""
        pool = mmr_pool_size(k) if diversity > 0.0 else k
        out = []
        if self.ann is None:
            values_all, idx_all = self._exact_top(user_vecs, rows, cols, pool, boost,
                                                  filter_rows)
        else:
            values_all, idx_all = self._ann_top(user_vecs, rows, cols, pool, boost)
        for values, idx in zip(values_all.cpu(), idx_all.cpu(), strict=True):
            finite = torch.isfinite(values)
            values, idx = values[finite], idx[finite]
            if diversity > 0.0:  # re-rank the pool; positions in it stand for its items
                picked = mmr_rerank(values, torch.arange(len(idx)),
                                    self.diversity_vectors[idx.to(self.device)].cpu(), k,
                                    diversity)
                values, idx = values[picked], idx[picked]
            out.append(self._listing(values, idx))
        return out

    def recommend(self, user: str, k: int = 10, include_seen: bool = False,
                  diversity: float = 0.0,
                  tail_boost: float | None = None) -> list[Recommendation]:
        """Top-``k`` items for a known user (raw id); items they already have are excluded
        unless ``include_seen``. ``diversity`` > 0 re-ranks by MMR (see ``mmr_rerank``);
        ``tail_boost`` overrides the recommender's own for this call."""
        check_k(k)
        check_diversity(diversity)
        if tail_boost is not None:
            check_tail_boost(tail_boost)
        u = self.user_index(user)
        if self.ann is not None:
            rows, cols = self._known_pairs(torch.tensor([u])) if not include_seen else _NO_PAIRS
            return self._lists(self.user_emb[u].unsqueeze(0), rows, cols, k, diversity,
                               self.tail_boost if tail_boost is None else tail_boost)[0]
        scores = self.user_scores(torch.tensor([u]), tail_boost)
        if not include_seen:
            rows, cols = self._known_pairs(torch.tensor([u]))
            scores[rows.to(scores.device), cols.to(scores.device)] = float("-inf")
        return self._top(scores[0], k, diversity)

    def recommend_new_user(self, history: Sequence[str], k: int = 10,
                           include_seen: bool = False, diversity: float = 0.0,
                           tail_boost: float | None = None) -> list[Recommendation]:
        """Top-``k`` for a user not seen in training, from the raw ids of items they liked.

        The user's embedding is the mean of the history items' final embeddings: one
        LightGCN aggregation step from the new user's edges, without retraining.
        ``diversity`` > 0 re-ranks by MMR (see ``mmr_rerank``); ``tail_boost`` overrides the
        recommender's own for this call.
        """
        check_k(k)
        check_diversity(diversity)
        if tail_boost is not None:
            check_tail_boost(tail_boost)
        if not history:
            raise ConfigError(parameter="history", expected="at least one item id")
        idx = torch.tensor([self.item_index(h, "history") for h in history])
        if self.ann is not None:
            cols = idx if not include_seen else _NO_PAIRS[1]
            return self._lists(self.item_emb[idx].mean(0, keepdim=True), torch.zeros_like(cols),
                               cols, k, diversity,
                               self.tail_boost if tail_boost is None else tail_boost)[0]
        vec = self.item_emb[idx.to(self.device)].mean(0, keepdim=True) \
            if self.item_emb is not None else None
        rows = (self._rows_of(torch.zeros_like(idx), idx, 1) if self.filter is not None
                else None)
        idx = idx.to(self.device)
        scores = self.scores(vec, tail_boost, rows)[0]
        if not include_seen:
            scores[idx] = float("-inf")
        return self._top(scores, k, diversity)

    def recommend_batch(self, users: Sequence[str], k: int, include_seen: bool = False,
                        tail_boost: float | None = None) -> list[list[Recommendation]]:
        """``recommend(u, k, include_seen, tail_boost=tail_boost)`` for each of ``users``
        (raw ids), from one [b, d] x [d, I] product (exact) or one batched index search
        (ann). Raises UnknownUserError for the first unknown user."""
        check_k(k)
        if tail_boost is not None:
            check_tail_boost(tail_boost)
        idx = torch.tensor([self.user_index(u) for u in users], dtype=torch.int64)
        if len(idx) == 0:
            return []
        rows, cols = self._known_pairs(idx) if not include_seen else _NO_PAIRS
        return self._lists(self.user_emb[idx] if self.user_emb is not None else None, rows,
                           cols, k, 0.0, self.tail_boost if tail_boost is None else tail_boost,
                           self.user_rows(idx) if self.filter is not None else None)

    def similar_items(self, item: str, k: int = 10) -> list[Recommendation]:
        """The ``k`` items closest to ``item`` by cosine of final embeddings (cold items
        included: their embeddings come from their text). Always exact, also with "ann":
        cosine ranks differently from the inner-product index, and a second index over
        normalised vectors would double its memory for one O(I · d) product per call.

        A filter model ranks by the filter's scores for a user who has only ``item`` (its
        row of the item-item filter); an item the filter knows nothing of (no training
        interactions) by cosine of text embeddings, when the model has text (else no list).
        An ensemble blends the cosine and the filter's row, standardised, with its weight."""
        check_k(k)
        i = self.item_index(item)
        cosine = None
        if self.item_emb is not None:
            emb = torch.nn.functional.normalize(self.item_emb, dim=1)
            cosine = emb @ emb[i]
        if self.filter is not None:
            one = torch.tensor([i])
            filtered = self.filter.score_rows(self._rows_of(torch.zeros_like(one), one, 1))
            if cosine is not None:
                cosine = blend(cosine[None], filtered.to(self.device), self.weight)[0]
            elif bool((filtered != 0).any()):
                cosine = torch.nn.functional.pad(filtered[0].to(self.device),
                                                 (0, self.num_items - filtered.shape[1]))
            elif self.text_emb is not None:
                emb = torch.nn.functional.normalize(self.text_emb.float(), dim=1)
                cosine = emb @ emb[i]
            else:
                return []
        scores = cosine.clone()
        scores[i] = float("-inf")
        return self._top(scores, k)

    def embedding_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """[U, d] user and [I, d] item embeddings as float32 numpy arrays (a TextLightGCN
        model's scores are their dot products, before any tail boost)."""
        if self.kind != "lightgcn":
            raise ConfigError(f"a {self.kind} model's scores are not a dot product of two "
                              "embeddings", parameter="model", value=self.kind)
        return (self.user_emb.float().cpu().numpy(), self.item_emb.float().cpu().numpy())

    def recommend_all(self, k: int = 10, batch_users: int = 2048, include_seen: bool = False,
                      diversity: float = 0.0, users: range | None = None,
                      ) -> Iterator[tuple[str, list[str], list[float]]]:
        """(user id, top-k item ids, scores) for every user (or the user indices ``users``, a
        range: one shard of them), computed in user chunks; ``diversity`` > 0 re-ranks each
        list by MMR (see ``mmr_rerank``)."""
        check_k(k)
        check_diversity(diversity)
        k = min(k, self.num_items)
        span = range(self.num_users) if users is None else users
        if span.step != 1 or span.start < 0 or span.stop > self.num_users:
            raise ConfigError(parameter="users", value=span,
                              expected=f"a range within [0, {self.num_users})")
        for start in range(span.start, span.stop, batch_users):
            users = torch.arange(start, min(start + batch_users, span.stop))
            scores = self.user_scores(users)
            if not include_seen:
                rows, cols = self._known_pairs(users)
                scores[rows.to(scores.device), cols.to(scores.device)] = float("-inf")
            if diversity == 0.0:
                ranked = zip(*torch.topk(scores, k, dim=1), strict=True)
            else:  # MMR's greedy steps are per list; the scoring above stays batched
                ranked = (self.rank(row, k, diversity) for row in scores)
            for u, (values, idx) in zip(users.tolist(), ranked, strict=True):
                finite = torch.isfinite(values)
                yield (str(self.user_ids[u]),
                       [str(self.item_ids[i]) for i in idx[finite].tolist()],
                       [round(v, 6) for v in values[finite].tolist()])
