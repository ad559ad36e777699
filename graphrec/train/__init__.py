"""Training: the configuration, BPR sampling, the trainer (step / epoch / fit), checkpoints.

Never imports ``graphrec.eval``: evaluation reaches the trainer as callbacks. Names load on
first use (``graphrec.lazy``): ``graphrec.train.config`` needs no torch.
"""

from graphrec import lazy

_EXPORTS = lazy.exports({
    "graphrec.train.checkpoint": ("check_resumable", "load_checkpoint", "save_checkpoint"),
    "graphrec.train.config": ("LR_SCHEDULES", "NEGATIVE_SAMPLERS", "PRECISIONS",
                              "TrainConfig", "resolved_batch_size", "resolved_lr"),
    "graphrec.train.sampling": ("BPRSampler", "alias_table", "hardest"),
    "graphrec.train.trainer": ("TrainResult", "Trainer", "cosine_schedule"),
})
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    return lazy.load(__name__, _EXPORTS, name)
