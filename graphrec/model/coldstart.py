"""Cold start: placing items without training interactions from their text.

A text map W [t, d] sends an item's text embedding to where a warm item with that text would
sit after propagation; items without training edges (cold items at training time, items added
later) get ``text_emb @ W``. Three designs (``COLD_STARTS``) make the map; RESULTS.md (cold
start) compares them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from graphrec.errors import ConfigError
from graphrec.model.lightgcn import TextLightGCN
from graphrec.options import COLD_STARTS  # noqa: F401  (the designs; re-exported)


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
                 warm: Tensor, ridge: float = 1.0) -> Tensor:
    """[t, d] linear map that places an item from its text alone (``cold_start`` designs).

    ridge: ridge regression text -> final embedding over warm items (fit_text_map).
    bpr: the model's text head, trained jointly by a BPR term (needs ``model.text_head``).
    layer0: the item's own text projection (an isolated node's LightGCN output is its
    layer 0 / (L + 1)). ridge and layer0 are rescaled so that warm items placed by the map
    have the mean norm of their final embeddings, except a ridge map for a model whose items
    have no text projection (item_init id), which keeps the regression's own scale.
    """
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
    placed = (text_emb[warm] @ w).norm(dim=1).mean()
    return w * (item_emb[warm].norm(dim=1).mean() / placed.clamp(min=1e-12))


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
