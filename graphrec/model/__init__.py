"""The model: TextLightGCN and its propagation, the training losses, cold-item placement."""

from graphrec.model.coldstart import COLD_STARTS, fit_text_map, place_cold_items, text_map_for
from graphrec.model.lightgcn import (
    ITEM_INITS,
    TextLightGCN,
    lightgcn_batch,
    lightgcn_propagate,
    spmm,
)
from graphrec.model.losses import bpr_loss, bpr_term, text_head_loss

__all__ = [
    "COLD_STARTS", "ITEM_INITS", "TextLightGCN", "bpr_loss", "bpr_term", "fit_text_map",
    "lightgcn_batch", "lightgcn_propagate", "place_cold_items", "spmm", "text_head_loss",
    "text_map_for",
]
