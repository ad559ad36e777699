"""Training: the configuration, BPR sampling, the trainer (step / epoch / fit), checkpoints.

Never imports ``graphrec.eval``: evaluation reaches the trainer as callbacks.
"""

from graphrec.train.checkpoint import check_resumable, load_checkpoint, save_checkpoint
from graphrec.train.config import (
    LR_SCHEDULES,
    PRECISIONS,
    TrainConfig,
    resolved_batch_size,
    resolved_lr,
)
from graphrec.train.sampling import NEGATIVE_SAMPLERS, BPRSampler, alias_table, hardest
from graphrec.train.trainer import Trainer, TrainResult, cosine_schedule

__all__ = [
    "LR_SCHEDULES", "NEGATIVE_SAMPLERS", "PRECISIONS", "BPRSampler", "TrainConfig",
    "TrainResult", "Trainer", "alias_table", "check_resumable", "cosine_schedule", "hardest",
    "load_checkpoint", "resolved_batch_size", "resolved_lr", "save_checkpoint",
]
