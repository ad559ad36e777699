"""The metric registry: every top-K metric is one function here, its formula in its docstring.

Notation, for one evaluated user u and cut-off K: ``T_u`` the user's held-out (target) items,
``L_u`` their top-K list (masked items never enter it; K is clipped to the number of items),
``hits_u = |L_u ∩ T_u|``, r a 0-based rank. A per-user metric returns one value per user it
applies to, and the reported number is their mean over those users; a catalog metric reads
how often each item was recommended. Adding a metric is one decorated function:

    @metric("my_metric", needs=("tail",))
    def my_metric(lists: RankedLists) -> Tensor:
        '''my_metric@K = mean_u ...'''

``needs`` names the inputs it reads (``tail``, ``information``, ``vectors``): it is reported
only when the evaluation was given them. ``cold=True`` also reports it as ``cold_<name>@K``
on the ranking among cold items only. A metric defined for some users only returns their
values and names, with ``applies``, the mask of the chunk's users it covers (so that per-user
values, which ``graphrec compare`` pairs, stay aligned with their users).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from graphrec.distributed import Group
from graphrec.errors import DataError
from graphrec.eval.ranking import NEG_INF, isin_sorted, topk_rows


@dataclass
class RankedLists:
    """The top-K lists of a chunk of b users at one cut-off, and what metrics read of them.

    ``items`` [b, k'] int64 (k' = min(K, catalog)); ``valid`` [b, k'] bool, False where a
    slot holds a masked filler (a user with fewer unseen items than K); ``hits`` [b, k'] bool;
    ``num_targets`` [b] int64 >= 1; ``discount`` / ``ideal_dcg`` [>= k'] float64: 1/log2(r+2)
    and its running sum. Optional inputs: ``tail`` [I] bool, ``num_tail_targets`` [b] int64,
    ``information`` [I] float64 self-information, ``vectors`` [I, t] unit rows.
    """

    k: int
    items: Tensor
    valid: Tensor
    hits: Tensor
    num_targets: Tensor
    discount: Tensor
    ideal_dcg: Tensor
    tail: Tensor | None = None
    num_tail_targets: Tensor | None = None
    information: Tensor | None = None
    vectors: Tensor | None = None

    @property
    def width(self) -> int:
        """k' = min(K, number of items): the list length that can be filled."""
        return self.hits.shape[1]

    @cached_property
    def num_hits(self) -> Tensor:
        """[b] float64 hits_u."""
        return self.hits.sum(dim=1).to(torch.float64)

    @cached_property
    def list_length(self) -> Tensor:
        """[b] int64 |L_u|, at least 1."""
        return self.valid.sum(dim=1).clamp(min=1)

    @cached_property
    def has_tail_targets(self) -> Tensor:
        """[b] bool: the user has a held-out tail item."""
        return self.num_tail_targets > 0

    @cached_property
    def in_tail(self) -> Tensor:
        """[b, k'] bool: the slot holds a real tail item."""
        return self.tail[self.items] & self.valid


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``fn`` maps RankedLists to per-user values (or, for a catalog
    metric, ``(counts [I] int64, num_items) -> float``); ``applies`` maps RankedLists to the
    [b] bool mask of the users those values are for (None: every user of the chunk)."""

    name: str
    fn: Callable
    needs: tuple[str, ...] = ()
    catalog: bool = False
    cold: bool = False
    applies: Callable[[RankedLists], Tensor] | None = None


METRICS: dict[str, Metric] = {}
"""Every metric by name, in the order results report them."""


def metric(name: str, *, needs: tuple[str, ...] = (), catalog: bool = False,
           cold: bool = False,
           applies: Callable[[RankedLists], Tensor] | None = None,
           ) -> Callable[[Callable], Callable]:
    """Register the decorated function as the metric ``name`` (see the module docstring)."""
    def register(fn: Callable) -> Callable:
        METRICS[name] = Metric(name, fn, tuple(needs), catalog, cold, applies)
        return fn
    return register


@metric("recall", cold=True)
def recall(lists: RankedLists) -> Tensor:
    """recall@K = mean_u hits_u / |T_u|"""
    return lists.num_hits / lists.num_targets


@metric("ndcg", cold=True)
def ndcg(lists: RankedLists) -> Tensor:
    """ndcg@K = mean_u DCG_u / IDCG_u, DCG_u = sum_{r < K, L_u[r] in T_u} 1 / log2(r + 2),
    IDCG_u = sum_{r < min(|T_u|, K)} 1 / log2(r + 2)"""
    dcg = (lists.hits.to(torch.float64) * lists.discount[: lists.width]).sum(dim=1)
    return dcg / lists.ideal_dcg[lists.num_targets.clamp(max=lists.width) - 1]


@metric("precision")
def precision(lists: RankedLists) -> Tensor:
    """precision@K = mean_u hits_u / K"""
    return lists.num_hits / lists.width


@metric("hit")
def hit(lists: RankedLists) -> Tensor:
    """hit@K = mean_u [hits_u > 0]"""
    return lists.num_hits > 0


@metric("coverage", catalog=True)
def coverage(counts: Tensor, num_items: int) -> float:
    """coverage@K = |union_u L_u| / num_items"""
    return float((counts > 0).sum()) / num_items


@metric("gini", catalog=True)
def gini_index(counts: Tensor, num_items: int) -> float:
    """gini@K: Gini index of how many lists each item appears in (0 = every item equally
    often; near 1 = a few items fill every list); see :func:`gini`."""
    return gini(counts)


@metric("novelty", needs=("information",))
def novelty(lists: RankedLists) -> Tensor:
    """novelty@K = mean_u mean_{i in L_u} information[i], the items' self-information
    (``graphrec.popularity.self_information``: -log2 of training popularity)"""
    info = (lists.information[lists.items] * lists.valid).sum(dim=1)
    return info / lists.list_length


@metric("ild", needs=("vectors",))
def ild(lists: RankedLists) -> Tensor:
    """ild@K: intra-list diversity, mean_u of the mean pairwise cosine distance
    1 - cos(v_i, v_j) over pairs i != j in L_u (0 for lists shorter than 2), with ``vectors``
    the items' text embeddings"""
    valid = lists.valid
    v = lists.vectors[lists.items] * valid.unsqueeze(2)  # [b, k, t], unit rows, 0 if invalid
    sim = torch.bmm(v, v.transpose(1, 2))  # [b, k, k]
    n = valid.sum(dim=1).to(sim.dtype)
    pairs = n * (n - 1)
    off_diagonal = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(dim=1)
    return torch.where(pairs > 0, 1.0 - off_diagonal / pairs.clamp(min=1), 0.0)


@metric("tail_recall", needs=("tail",), applies=lambda lists: lists.has_tail_targets)
def tail_recall(lists: RankedLists) -> Tensor:
    """tail_recall@K = mean over users with T_u ∩ tail non-empty of
    |L_u ∩ T_u ∩ tail| / |T_u ∩ tail|   (tail = the items outside the head)"""
    has_tail = lists.has_tail_targets
    tail_hits = (lists.hits & lists.in_tail).sum(dim=1)[has_tail]
    return tail_hits / lists.num_tail_targets[has_tail]


@metric("tail_share", needs=("tail",))
def tail_share(lists: RankedLists) -> Tensor:
    """tail_share@K = mean_u |L_u ∩ tail| / |L_u|"""
    return lists.in_tail.sum(dim=1) / lists.list_length


def gini(counts: Tensor) -> float:
    """Gini index of how often each item is recommended: 0 when every item is recommended
    equally often, -> 1 when a few items take every slot. ``counts``: [I] >= 0.

    G = sum_r (2r - n - 1) x_(r) / (n sum x), with x sorted ascending and r = 1..n."""
    x = counts.to(torch.float64).sort().values
    n, total = x.numel(), float(x.sum())
    if n == 0 or total == 0:
        return 0.0
    rank = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    return float(((2 * rank - n - 1) * x).sum()) / (n * total)


class MetricAccumulator:
    """Per-K running sums of every applicable registered metric over evaluated users;
    :meth:`result` turns them into means.

    ``tail`` [I] bool, ``information`` [I] float64 and ``vectors`` [I, t] (unit rows) are the
    optional inputs that metrics may need; ``num_cold`` > 0 adds the cold-only ranking.
    ``per_user`` > 0 (the number of evaluated users) also keeps every per-user value:
    :attr:`values` maps each key to a [per_user] float64 tensor, NaN where the metric does
    not apply; the updates then pass each chunk's ``positions`` among the evaluated users.
    """

    def __init__(self, ks: list[int], num_items: int, device: torch.device,
                 tail: Tensor | None = None, num_cold: int = 0,
                 information: Tensor | None = None, vectors: Tensor | None = None,
                 per_user: int = 0):
        self.ks = ks
        self.num_items = num_items
        self.num_cold = num_cold
        self.inputs = {"tail": tail, "information": information, "vectors": vectors}
        self.active = [m for m in METRICS.values()
                       if all(self.inputs[n] is not None for n in m.needs)]
        self.kmax = kmax = min(max(ks), num_items)  # K is clipped to the catalog
        positions = torch.arange(kmax, device=device, dtype=torch.float64)
        self.discount = 1.0 / torch.log2(positions + 2.0)  # [kmax]: 1 / log2(rank + 2)
        self.ideal_dcg = torch.cumsum(self.discount, 0)  # [kmax]: IDCG with j + 1 hits
        self.sums: dict[str, Tensor] = {}
        self.users: dict[str, int] = {}  # users each key's mean is over
        # How often each item is recommended, per K: the catalog metrics' input.
        self.counts = {k: torch.zeros(num_items, dtype=torch.int64, device=device) for k in ks}
        self.saw_nan = torch.zeros((), dtype=torch.bool, device=device)
        self.num_users = 0
        self.per_user = per_user
        self.values: dict[str, Tensor] = {}

    def _add(self, key: str, m: Metric, lists: RankedLists,
             positions: Tensor | None) -> None:
        values = m.fn(lists).to(torch.float64)
        total = values.sum()
        self.sums[key] = self.sums[key] + total if key in self.sums else total
        self.users[key] = self.users.get(key, 0) + values.numel()
        if self.per_user:
            if positions is None:
                raise ValueError("per-user values need each chunk's positions")
            if key not in self.values:
                self.values[key] = torch.full((self.per_user,), float("nan"),
                                              dtype=torch.float64, device=values.device)
            rows = positions if m.applies is None else positions[m.applies(lists)]
            self.values[key][rows] = values

    def _hits(self, values: Tensor, items: Tensor, keys: Tensor,
              num_cols: int) -> tuple[Tensor, Tensor]:
        """Which top-K slots hold a real (not masked) item, and which of those are hits."""
        self.saw_nan |= torch.isnan(values).any()
        # A user with fewer than kmax unseen items gets -inf fillers; they are not
        # recommendations, so they neither hit nor count towards coverage or tail share.
        valid = values > NEG_INF
        rows = torch.arange(values.shape[0], device=values.device).unsqueeze(1)
        hits = isin_sorted(keys, rows * num_cols + items) & valid
        return valid, hits

    def _lists(self, k: int, items: Tensor, valid: Tensor, hits: Tensor,
               num_targets: Tensor, num_tail_targets: Tensor | None) -> RankedLists:
        kk = min(k, hits.shape[1])
        return RankedLists(k, items[:, :kk], valid[:, :kk], hits[:, :kk], num_targets,
                           self.discount, self.ideal_dcg, self.inputs["tail"],
                           num_tail_targets, self.inputs["information"],
                           self.inputs["vectors"])

    def update_ranked(self, values: Tensor, items: Tensor, target_keys: Tensor,
                      num_targets: Tensor, num_tail_targets: Tensor | None,
                      positions: Tensor | None = None) -> None:
        """Add one chunk, already ranked: ``values`` [b, kmax] descending scores (-inf for a
        filler slot), ``items`` [b, kmax] int64 in [0, I); ``target_keys`` ascending
        ``local_row * I + item``; ``num_targets`` [b] int64 >= 1; ``num_tail_targets`` [b]
        int64 (or None without a head/tail split); ``positions`` [b] int64, the rows'
        positions among the evaluated users (needed with ``per_user``)."""
        valid, hits = self._hits(values, items, target_keys, self.num_items)
        for k in self.ks:
            lists = self._lists(k, items, valid, hits, num_targets, num_tail_targets)
            ones = torch.ones((), dtype=torch.int64, device=items.device)
            self.counts[k].index_add_(0, lists.items[lists.valid],
                                      ones.expand(int(lists.valid.sum())))
            for m in self.active:
                if not m.catalog:
                    self._add(f"{m.name}@{k}", m, lists, positions)
        self.num_users += values.shape[0]

    def update_cold(self, cold_scores: Tensor, cold_keys: Tensor,
                    num_cold_targets: Tensor, positions: Tensor | None = None) -> None:
        """Add the cold-only ranking of users with a cold target: ``cold_scores`` [bc, C]
        (columns = cold items, seen at -inf), keys ``local_row * C + cold_position``;
        ``positions`` as in :meth:`update_ranked`."""
        kmax = min(max(self.ks), self.num_cold)
        values, items = topk_rows(cold_scores, kmax)
        valid, hits = self._hits(values, items, cold_keys, cold_scores.shape[1])
        for k in self.ks:
            lists = self._lists(k, items, valid, hits, num_cold_targets, None)
            for m in self.active:
                if m.cold:
                    self._add(f"cold_{m.name}@{k}", m, lists, positions)

    def reduce(self, group: Group) -> None:
        """Add up every process's running sums over ``group`` (each accumulated its own
        users): afterwards every process holds the sums of all users."""
        if group.solo:
            return
        keys = [f"{m.name}@{k}" for k in self.ks for m in self.active if not m.catalog]
        if self.num_cold:
            keys += [f"cold_{m.name}@{k}" for k in self.ks for m in self.active if m.cold]
        device = self.discount.device
        zero = torch.zeros((), dtype=torch.float64, device=device)
        flat = torch.stack([self.sums.get(k, zero).to(torch.float64) for k in keys]
                           + [torch.tensor(float(self.users.get(k, 0)), dtype=torch.float64,
                                           device=device) for k in keys]
                           + [torch.tensor(float(self.num_users), dtype=torch.float64,
                                           device=device), self.saw_nan.to(torch.float64)])
        group.all_reduce_(flat, "evaluation sums")
        counts = group.all_reduce_(torch.stack([self.counts[k] for k in self.ks]),
                                   "evaluation item counts")
        n = len(keys)
        self.sums = {k: flat[i] for i, k in enumerate(keys)}
        self.users = {k: int(flat[n + i]) for i, k in enumerate(keys) if int(flat[n + i])}
        self.num_users = int(flat[2 * n])
        self.saw_nan = flat[2 * n + 1] > 0
        self.counts = {k: counts[i] for i, k in enumerate(self.ks)}

    def result(self) -> dict[str, float]:
        """Every applicable metric at every K (then ``num_users``, and ``num_tail_users`` /
        ``num_cold_users`` with a tail split / cold items): means over the users each
        applies to (0 where there are none)."""
        if bool(self.saw_nan):
            raise DataError("the scores contain NaN; the model has probably diverged")
        out: dict[str, float] = {}
        for k in self.ks:
            for m in self.active:
                key = f"{m.name}@{k}"
                if m.catalog:
                    out[key] = m.fn(self.counts[k], self.num_items)
                else:
                    out[key] = self._mean(key)
            # Among C cold items a list of k >= C holds them all: cold_*@k would be 1 by
            # construction, so it is reported only for k < C.
            if self.num_cold > k:
                for m in self.active:
                    if m.cold:
                        out[f"cold_{m.name}@{k}"] = self._mean(f"cold_{m.name}@{k}")
        out["num_users"] = self.num_users
        if self.inputs["tail"] is not None:
            out["num_tail_users"] = self.users.get(f"tail_recall@{self.ks[0]}", 0)
        if self.num_cold > 0:
            out["num_cold_users"] = self.users.get(f"cold_recall@{self.ks[0]}", 0)
            out["num_cold_items"] = self.num_cold
        return out

    def user_values(self, keys) -> dict[str, np.ndarray]:
        """The kept per-user values (``per_user``) of ``keys`` (the reported per-user
        metrics), as [per_user] float64 arrays, NaN where a metric does not apply."""
        return {key: self.values[key].cpu().numpy() for key in keys if key in self.values}

    def _mean(self, key: str) -> float:
        n = self.users.get(key, 0)
        return float(self.sums[key]) / n if n else 0.0
