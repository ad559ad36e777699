"""A training-free graph-filter scorer (the GF-CF family): scores are the user's training row
passed through a low-pass filter of the normalised item-item graph.

With ``R`` the [U, I] training matrix (1 per interaction), ``D_U`` / ``D_I`` its user and
item degrees and ``R~ = D_U^-b R D_I^-b`` (``b`` = ``degree_exponent``, 0.5 in GF-CF), a
user's scores are

    s_u = r_u R~^T R~  +  alpha * r_u D_I^-b V_k V_k^T D_I^b

the linear filter (``R~^T R~``: the normalised item-item co-occurrence, never built as an
[I, I] matrix: two sparse products per chunk of users) plus ``alpha`` times the ideal
low-pass filter on the ``rank`` leading right singular vectors ``V_k`` [I, k] of ``R~``,
computed once by a randomised truncated SVD (``torch.svd_lowrank``). Nothing is trained;
fitting is the SVD. An item without training interactions gets 0 from both terms.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

from graphrec.artifacts.model_dir import FilterArrays, mapped_tensor
from graphrec.data.csr import Csr, gather_rows
from graphrec.errors import ConfigError
from graphrec.graph import csr_tensor


@dataclass(frozen=True)
class FilterConfig:
    """``rank``: singular vectors of the low-pass term (0: linear filter only); ``alpha``:
    its weight; ``degree_exponent``: ``b`` above; ``niter`` / ``oversample``: the randomised
    SVD's power iterations and extra columns; ``seed``: its random start."""

    rank: int = 256
    alpha: float = 0.3
    degree_exponent: float = 0.5
    niter: int = 6
    oversample: int = 16
    seed: int = 0

    def __post_init__(self):
        if self.rank < 0:
            raise ConfigError(parameter="rank", value=self.rank, expected="an integer >= 0")
        if not np.isfinite(self.alpha) or self.alpha < 0:
            raise ConfigError(parameter="alpha", value=self.alpha, expected="a number >= 0")
        if not 0.0 <= self.degree_exponent <= 1.0:
            raise ConfigError(parameter="degree_exponent", value=self.degree_exponent,
                              expected="in [0, 1]")
        for name in ("niter", "oversample"):
            if getattr(self, name) < 0:
                raise ConfigError(parameter=name, value=getattr(self, name),
                                  expected="an integer >= 0")


class GraphFilter:
    """The fitted filter of one training matrix; :meth:`score` is an evaluation ``score_fn``.

    ``train``: per-user item lists (the training interactions, one row per user);
    ``num_items``: the catalog size. Tensors live on ``device``. ``basis``: the singular
    vectors V_k [I, k] of an earlier fit of the same matrix (a saved model), which skips the
    SVD.
    """

    def __init__(self, train: Csr, num_items: int, cfg: FilterConfig | None = None,
                 device: torch.device | str = "cpu", basis: Tensor | None = None):
        self.cfg = cfg = cfg or FilterConfig()
        self.device = torch.device(device)
        self.num_users, self.num_items = train.num_rows, num_items
        rows = train.row_index()
        cols = np.asarray(train.indices, dtype=np.int64)
        user_degree = np.bincount(rows, minlength=self.num_users).astype(np.float64)
        item_degree = np.bincount(cols, minlength=num_items).astype(np.float64)
        b = cfg.degree_exponent
        item_scale = np.maximum(item_degree, 1) ** -b
        values = (np.maximum(user_degree, 1) ** -b)[rows] * item_scale[cols]
        self.norm = csr_tensor(rows, cols, values, self.num_users, num_items) \
            .to(self.device)  # R~ [U, I]
        self.norm_t = csr_tensor(cols, rows, values, num_items, self.num_users) \
            .to(self.device)  # R~^T [I, U]
        self.item_scale = torch.from_numpy(item_scale).float().to(self.device)  # D_I^-b
        self.item_unscale = torch.from_numpy(np.where(item_degree > 0, item_degree ** b, 0.0)) \
            .float().to(self.device)  # D_I^b, 0 for an item without training interactions
        self.indptr = torch.from_numpy(np.asarray(train.indptr, dtype=np.int64)).to(self.device)
        self.indices = torch.from_numpy(cols).to(self.device)
        self.train = train
        self.basis = None
        if basis is not None:
            if tuple(basis.shape) != (num_items, min(cfg.rank, self.num_users, num_items)):
                raise ConfigError(parameter="basis", value=tuple(basis.shape),
                                  expected=f"[{num_items}, {cfg.rank}] singular vectors")
            self.basis = basis.float().to(self.device)
        elif cfg.rank > 0 and cfg.alpha > 0:
            self.basis = self._singular_vectors()

    @classmethod
    def from_arrays(cls, arrays: FilterArrays, settings: dict,
                    device: torch.device | str = "cpu") -> GraphFilter:
        """The filter a model directory saved (``graphrec.artifacts.model_dir``): its
        fitted rows and singular vectors (memory-mapped on the CPU), ``settings`` the
        FilterConfig fields of config.json's ``model`` section."""
        cfg = FilterConfig(**{f.name: settings[f.name] for f in fields(FilterConfig)
                              if f.name in settings})
        basis = None if arrays.basis is None else mapped_tensor(arrays.basis)
        return cls(Csr(arrays.indptr, arrays.indices), arrays.num_items, cfg, device, basis)

    def arrays(self) -> FilterArrays:
        """What a model directory keeps of this filter."""
        return FilterArrays(np.asarray(self.train.indptr), np.asarray(self.train.indices),
                            self.num_items,
                            None if self.basis is None else self.basis.cpu().numpy())

    def _singular_vectors(self) -> Tensor:
        """V_k [I, k]: the leading right singular vectors of R~ (randomised, seeded)."""
        k = min(self.cfg.rank, self.num_users, self.num_items)
        q = min(k + self.cfg.oversample, self.num_users, self.num_items)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            _, _, v = torch.svd_lowrank(self.norm.cpu().to_sparse_coo(), q=q,
                                        niter=self.cfg.niter)
        return v[:, :k].contiguous().to(self.device)

    def with_settings(self, rank: int, alpha: float) -> GraphFilter:
        """This filter with its low-pass term cut to the first ``rank`` singular vectors (at
        most the fitted rank) and weighted ``alpha``, sharing every tensor: a validation grid
        fits the SVD once, at its largest rank."""
        fitted = 0 if self.basis is None else self.basis.shape[1]
        if rank > fitted:
            raise ConfigError(parameter="rank", value=rank,
                              expected=f"at most the fitted rank {fitted}")
        out = copy.copy(self)
        out.cfg = replace(self.cfg, rank=rank, alpha=alpha)
        out.basis = self.basis[:, :rank] if rank > 0 and alpha > 0 else None
        return out

    @torch.no_grad()
    def score(self, users: Tensor) -> Tensor:
        """[b, I] float32 scores of ``users`` [b] (int64 indices, rows of the fitted
        matrix), a fresh tensor that the caller may change in place."""
        return self.score_rows(self._dense_rows(users.to(self.device)))

    @torch.no_grad()
    def score_rows(self, rows: Tensor) -> Tensor:
        """[b, I] float32 scores of interaction rows [b, I] (1 at each item a user has, any
        user: a fitted one, one with items added since, or a new one; the filter itself
        stays as fitted)."""
        r = rows.float().to(self.device)
        scores = self._linear(r)
        if self.basis is not None:
            low = (r * self.item_scale) @ self.basis  # [b, k]
            scores += self.cfg.alpha * ((low @ self.basis.T) * self.item_unscale)
        return scores

    @torch.no_grad()
    def weights_into(self, item: int, items: Tensor) -> Tensor:
        """[n] float32: the weight F[j, item] of each item j of ``items`` [n] toward
        ``item``, so that a user's score of ``item`` is the sum over the user's row,
        s_u,item = sum_j r_uj F[j, item] (the filter is linear in the row): an exact split
        of the score over the user's items."""
        items = items.to(self.device)
        if not 0 <= item < self.num_items:
            return torch.zeros(items.numel(), device=self.device)
        unit = torch.zeros(self.num_items, 1, device=self.device)
        unit[item] = 1.0
        column = torch.sparse.mm(self.norm_t, torch.sparse.mm(self.norm, unit))[:, 0]
        out = column[items]  # R~^T R~ is symmetric: its column is its row
        if self.basis is not None:
            out = out + self.cfg.alpha * self.item_scale[items] * (
                self.basis[items] @ self.basis[item]) * self.item_unscale[item]
        return out

    def _linear(self, r: Tensor) -> Tensor:
        """The linear filter r R~^T R~ of rows r [b, I], as two sparse products:
        R~^T (R~ r^T), transposed."""
        through_users = torch.sparse.mm(self.norm, r.T.contiguous())  # [U, b]
        return torch.sparse.mm(self.norm_t, through_users).T.contiguous()  # [b, I]

    @torch.no_grad()
    def score_grid(self, users: Tensor, ranks: tuple[int, ...],
                   alphas: tuple[float, ...]) -> list[Tensor]:
        """Scores [b, I] of ``users`` [b] under every (rank, alpha) of ``ranks`` x
        ``alphas`` (rank-major), each rank at most the fitted one: the linear term once and
        the low-pass products as running sums over blocks of singular vectors, so the whole
        grid costs about one score at the largest rank. ``ranks`` ascending. For validation
        grids."""
        fitted = 0 if self.basis is None else self.basis.shape[1]
        if list(ranks) != sorted(ranks):
            raise ConfigError(parameter="ranks", value=ranks, expected="ascending")
        if max(ranks) > fitted:
            raise ConfigError(parameter="rank", value=max(ranks),
                              expected=f"at most the fitted rank {fitted}")
        r = self._dense_rows(users.to(self.device))
        linear = self._linear(r)
        scaled = r * self.item_scale
        low = torch.zeros_like(linear)
        out, done = [], 0
        for rank in ranks:
            if rank > done:
                block = self.basis[:, done:rank]
                low += (scaled @ block) @ block.T
                done = rank
            part = low * self.item_unscale
            out.extend(linear + alpha * part for alpha in alphas)
        return out

    def _dense_rows(self, users: Tensor) -> Tensor:
        """[b, I] float32: 1 at each of the users' training items."""
        local_row, cols = gather_rows(self.indptr, self.indices, users)
        out = torch.zeros(users.numel(), self.num_items, device=self.device)
        out[local_row, cols] = 1.0
        return out
