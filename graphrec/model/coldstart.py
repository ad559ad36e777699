"""Cold start: placing items without training interactions from their text.

A text map W [t, d] sends an item's text embedding to where a warm item with that text would
sit after propagation; items without training edges (cold items at training time, items added
later) get ``text_emb @ W``. Four designs (``COLD_STARTS``) make the map; RESULTS.md (cold
start) compares them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from graphrec.errors import ConfigError
from graphrec.model.lightgcn import TextLightGCN
from graphrec.options import COLD_STARTS  # noqa: F401  (the designs; re-exported)

TWO_SIDED_WEIGHTS = (0.0, 0.2, 0.4, 0.6, 0.8)
"""The user side's weights the two-sided design chooses from (0: the ridge map alone)."""
PSEUDO_COLD_SHARE = 0.1
"""Without cold items in the validation split, this share of the warm items stands in for
them while the two-sided weight is chosen."""
MAX_CHOICE_ITEMS = 20_000
MAX_CHOICE_USERS = 20_000
CHOICE_K = 20


@dataclass(frozen=True)
class PlacementData:
    """What the two-sided design reads besides the item embeddings: the final user
    embeddings and the training and validation (user, item) pairs, item indices as in
    ``text_emb``."""

    user_emb: Tensor
    train: tuple[Tensor, Tensor]
    valid: tuple[Tensor, Tensor] | None
    seed: int = 0


@dataclass
class ColdChoice:
    """How the two-sided weight was chosen: on ``items`` (``"cold"``: the validation
    split's items without training edges; ``"pseudo-cold"``: a seeded share of the warm
    items, their maps refit without them; ``"none"``: no validation pairs, ridge alone),
    ``count`` of them, the validation ndcg@20 of each weight among them."""

    weight: float
    items: str
    count: int = 0
    grid: list[dict] = field(default_factory=list)


def fit_text_map(text_emb: Tensor, item_emb: Tensor, warm: Tensor, ridge: float) -> Tensor:
    """Ridge regression W = argmin |T_w W - E_w|^2 + ridge |W|^2 over warm items.

    text_emb: [I, t]; item_emb: [I, d]; warm: [I] bool. Returns W [t, d]. Cold and newly
    added items get T W: placed where warm items with similar text sit after propagation.
    """
    t = text_emb[warm].double()
    e = item_emb[warm].double()
    gram = t.T @ t + ridge * torch.eye(t.shape[1], dtype=t.dtype, device=t.device)
    return torch.linalg.solve(gram, t.T @ e).float()


def text_map_for(design: str, model: TextLightGCN, text_emb: Tensor, item_emb: Tensor,
                 warm: Tensor, ridge: float = 1.0, data: PlacementData | None = None) -> Tensor:
    """[t, d] linear map that places an item from its text alone (``cold_start`` designs).

    ridge: ridge regression text -> final embedding over warm items (fit_text_map).
    two-sided: the ridge map blended with the user side's map (:func:`two_sided_map`; reads
    ``data``).
    bpr: the model's text head, trained jointly by a BPR term (needs ``model.text_head``).
    layer0: the item's own text projection (an isolated node's LightGCN output is its
    layer 0 / (L + 1)). ridge and layer0 are rescaled so that warm items placed by the map
    have the mean norm of their final embeddings, except a ridge map for a model whose items
    have no text projection (item_init id), which keeps the regression's own scale.
    """
    if design == "two-sided":
        if data is None:
            raise ValueError("text_map_for: the two-sided design needs PlacementData")
        return two_sided_map(model, text_emb, item_emb, warm, data, ridge)[0]
    if design == "bpr":
        if model.text_head is None:
            raise ConfigError("the model was trained without a text head",
                              parameter="cold_start", value=design)
        return model.text_head.weight.T.detach()
    if design == "layer0":
        if model.text_proj is None:
            raise ConfigError("the model has no text projection",
                              parameter="cold_start", value=design)
        w = model.text_proj.weight.T.detach()
    else:
        w = fit_text_map(text_emb, item_emb, warm, ridge)
        if model.text_proj is None:
            # Free ID embeddings owe nothing to the text, so the map places items weakly;
            # lifting those placements to warm norms puts noise into every list (MovieLens,
            # id items, 1,154 items without training edges: test recall@20 0.1819 rescaled
            # against 0.2106 not, and early stopping at epoch 45 instead of 110).
            return w
    # Both maps shrink: a regression towards the mean (ridge) or an isolated node's layer 0
    # (layer0) gives text-placed items smaller norms, hence smaller scores, than warm items
    # with the same direction, and they would hardly ever enter an all-item list. Rescale so
    # that warm items placed by the map have the mean norm of their final embeddings; the
    # ranking among text-placed items is unchanged.
    return _to_warm_norms(w, text_emb, item_emb, warm)


def _to_warm_norms(w: Tensor, text_emb: Tensor, item_emb: Tensor, warm: Tensor) -> Tensor:
    placed = (text_emb[warm] @ w).norm(dim=1).mean()
    return w * (item_emb[warm].norm(dim=1).mean() / placed.clamp(min=1e-12))


def text_profiles(text_emb: Tensor, users: Tensor, items: Tensor, num_users: int) -> Tensor:
    """[U, t] each user's text profile: the unit mean of the unit text embeddings of the
    user's ``items`` (pairs ``users``, ``items``); zero for a user without text."""
    text = torch.nn.functional.normalize(text_emb.float(), dim=1)
    profile = torch.zeros(num_users, text.shape[1], device=text.device)
    profile.index_add_(0, users.to(text.device), text[items.to(text.device)])
    return torch.nn.functional.normalize(profile, dim=1)


def fit_user_map(user_emb: Tensor, profiles: Tensor, ridge: float) -> Tensor:
    """The user side's map [t, d]: R^T for the ridge regression ``profiles ≈ user_emb @ R``
    over all users. An item with unit text t placed at ``t @ R^T`` scores
    ``e_u · (t R^T) = (e_u R) · t``: the cosine between its text and the text profile the
    user's embedding predicts."""
    x = user_emb.double()
    gram = x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(gram, x.T @ profiles.double()).T.float()


def _score_spread(user_emb: Tensor, placed: Tensor, gen: torch.Generator) -> float:
    """Standard deviation of ``user_emb @ placed.T`` over at most 2,000 x 5,000 pairs."""
    u = user_emb[torch.randperm(len(user_emb), generator=gen)[:2000].to(user_emb.device)]
    p = placed[torch.randperm(len(placed), generator=gen)[:5000].to(placed.device)]
    return float((u @ p.T).float().std())


def two_sided_map(model: TextLightGCN, text_emb: Tensor, item_emb: Tensor, warm: Tensor,
                  data: PlacementData, ridge: float = 1.0) -> tuple[Tensor, ColdChoice]:
    """The ridge map (item side: text -> where warm items with that text sit) blended with
    the user side's map (:func:`fit_user_map`: where users whose history reads like the
    text sit), ``(1 - w) W + w b U``, ``b`` matching the two maps' score spreads over warm
    items, then rescaled to warm norms like the ridge map. The weight ``w`` is chosen from
    ``TWO_SIDED_WEIGHTS`` by ndcg@20 on validation pairs of items without training edges,
    ranked among those items (:class:`ColdChoice`); w = 0 is the ridge map, so on the
    items it is chosen on the blend is never below it. Returns (map [t, d], choice)."""
    device = item_emb.device
    text_emb = text_emb.to(device)
    warm = warm.to(device)
    gen = torch.Generator().manual_seed(data.seed)
    tu, ti = (x.to(device) for x in data.train)
    candidates, items = _choice_items(warm, data, gen)
    choice = ColdChoice(weight=0.0, items=items, count=len(candidates))
    if items != "none":
        fit_on = warm.clone()
        keep = torch.ones(len(tu), dtype=torch.bool, device=device)
        if items == "pseudo-cold":  # refit both maps without the items that stand for cold
            fit_on[candidates] = False
            keep = fit_on[ti]
        maps = _two_maps(model, text_emb, item_emb, fit_on, data.user_emb, tu[keep], ti[keep],
                         ridge, gen)
        vu, vi = (x.to(device) for x in data.valid)
        for w in TWO_SIDED_WEIGHTS:
            placed = text_emb[candidates] @ _blend(maps, w)
            score = _subset_ndcg(data.user_emb, placed, candidates, (vu, vi), (tu, ti))
            choice.grid.append({"weight": w, f"ndcg@{CHOICE_K}": round(score, 6)})
        best = max(choice.grid, key=lambda g: g[f"ndcg@{CHOICE_K}"])  # first of equals
        choice.weight = best["weight"]
    maps = _two_maps(model, text_emb, item_emb, warm, data.user_emb, tu, ti, ridge, gen)
    w = _blend(maps, choice.weight)
    if model.text_proj is not None:
        w = _to_warm_norms(w, text_emb, item_emb, warm)
    return w, choice


def _two_maps(model, text_emb, item_emb, fit_on, user_emb, tu, ti, ridge, gen):
    """(ridge map, user side's map scaled to the ridge map's score spread) fit on the
    items ``fit_on`` [I] bool and the training pairs (tu, ti)."""
    item_side = text_map_for("ridge", model, text_emb, item_emb, fit_on, ridge)
    profiles = text_profiles(text_emb, tu, ti, len(user_emb))
    user_side = fit_user_map(user_emb.float(), profiles, ridge)
    on = text_emb[fit_on]
    b = _score_spread(user_emb, on @ item_side, gen) / max(
        _score_spread(user_emb, on @ user_side, gen), 1e-12)
    return item_side, b * user_side


def _blend(maps: tuple[Tensor, Tensor], w: float) -> Tensor:
    return (1.0 - w) * maps[0] + w * maps[1]


def _choice_items(warm: Tensor, data: PlacementData,
                  gen: torch.Generator) -> tuple[Tensor, str]:
    """(candidate items, kind): the items without training edges that the validation pairs
    touch, else a seeded ``PSEUDO_COLD_SHARE`` of the warm items, at most
    ``MAX_CHOICE_ITEMS``."""
    empty = torch.zeros(0, dtype=torch.long, device=warm.device)
    if data.valid is None or len(data.valid[1]) == 0:
        return empty, "none"
    vi = data.valid[1].to(warm.device)
    cold = ~warm
    if cold[vi].sum() >= CHOICE_K:  # validation pairs on items nobody trained on
        cold_idx = torch.nonzero(cold).flatten()
        return cold_idx[torch.randperm(len(cold_idx), generator=gen)[:MAX_CHOICE_ITEMS]
                        .to(warm.device)].sort().values, "cold"
    warm_idx = torch.nonzero(warm).flatten()
    n = min(MAX_CHOICE_ITEMS, max(CHOICE_K, int(PSEUDO_COLD_SHARE * len(warm_idx))))
    if len(warm_idx) < 2 * n:
        return empty, "none"
    pick = warm_idx[torch.randperm(len(warm_idx), generator=gen)[:n].to(warm.device)]
    return pick.sort().values, "pseudo-cold"


def _subset_ndcg(user_emb: Tensor, placed: Tensor, candidates: Tensor,
                 valid: tuple[Tensor, Tensor], seen: tuple[Tensor, Tensor]) -> float:
    """Mean ndcg@CHOICE_K of each user's validation items among ``candidates`` (placed at
    ``placed`` [C, d]), ranked among the candidates with the user's training items masked;
    over at most MAX_CHOICE_USERS users with a validation item there."""
    num_items = int(max(candidates.max(), valid[1].max(), seen[1].max())) + 1
    pos = torch.full((num_items,), -1, dtype=torch.long, device=candidates.device)
    pos[candidates] = torch.arange(len(candidates), device=candidates.device)
    vu, vc = valid[0], pos[valid[1]]
    vu, vc = vu[vc >= 0], vc[vc >= 0]
    if len(vu) == 0:
        return 0.0
    su, sc = seen[0], pos[seen[1]]
    su, sc = su[sc >= 0], sc[sc >= 0]
    users = torch.unique(vu)[:MAX_CHOICE_USERS]
    k = min(CHOICE_K, len(candidates))
    discount = 1.0 / torch.log2(torch.arange(k, device=placed.device, dtype=torch.float32) + 2)
    total = 0.0
    for start in range(0, len(users), 1024):
        batch = users[start:start + 1024]
        row = torch.full((len(user_emb),), -1, dtype=torch.long, device=placed.device)
        row[batch] = torch.arange(len(batch), device=placed.device)
        scores = user_emb[batch].float() @ placed.float().T
        m = row[su] >= 0
        scores[row[su[m]], sc[m]] = float("-inf")
        target = torch.zeros_like(scores, dtype=torch.bool)
        m = row[vu] >= 0
        target[row[vu[m]], vc[m]] = True
        top = torch.topk(scores, k, dim=1).indices
        dcg = (target.gather(1, top).float() * discount).sum(1)
        n = target.sum(1).clamp(max=k)
        idcg = torch.cumsum(discount, 0)[n - 1]
        total += float((dcg / idcg).sum())
    return total / len(users)


def place_cold_items(item_emb: Tensor, warm: Tensor, text_emb: Tensor | None,
                     text_map: Tensor | None) -> Tensor:
    """``item_emb`` [I, d] with every row where ``warm`` [I] bool is False replaced by its
    text placement ``text_emb @ text_map``, or by zeros without text (an item without edges
    and without text has nothing to say; it scores 0). Returns a new tensor."""
    out = item_emb.clone()
    cold = ~warm
    if text_emb is not None and text_map is not None:
        if cold.any():
            out[cold] = text_emb[cold] @ text_map
    else:
        out[cold] = 0.0
    return out
