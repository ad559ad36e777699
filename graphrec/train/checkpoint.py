"""Training checkpoints: one plain dict (model, optimizer, schedule, sampler generator, epoch,
history, early-stopping state) saved with ``torch.save`` atomically and loaded with
``weights_only=True``; and the check that a checkpoint belongs to this run."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from graphrec.errors import ArtifactError, ConfigError
from graphrec.fsio import atomic_file
from graphrec.train.config import TrainConfig

RESUMABLE_CHANGES = frozenset({"epochs", "eval_every", "patience", "device", "precision"})
"""TrainConfig fields that may differ between an interrupted run and its resumption."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (a crash leaves the previous checkpoint)."""
    with atomic_file(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, device: torch.device) -> dict:
    """The state dict saved at ``path``, tensors on ``device``."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"no checkpoint at {path}", parameter="resume")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        # Not torch's text: it advises weights_only=False, which would run whatever a
        # planted file holds.
        raise ArtifactError(f"checkpoint {path} is damaged or not a graphrec checkpoint "
                            f"({type(exc).__name__}); delete it and train without {{resume}}",
                            parameter="resume") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing or not isinstance(state.get("config"), dict) or "ks" not in state["config"]:
        raise ArtifactError(f"checkpoint {path} lacks {', '.join(missing) or 'config.ks'}: it "
                            "is not a whole graphrec checkpoint; delete it and train without "
                            "{resume}", parameter="resume")
    return state


CHECKPOINT_KEYS = ("config", "graph", "model", "optimizer", "generator", "epoch", "history",
                   "bad_evals", "best")
"""What a checkpoint holds (``Trainer`` writes them; resuming reads every one)."""


def check_resumable(state: dict, cfg: TrainConfig, fingerprint: str | None) -> None:
    """Raise ConfigError unless ``state`` was trained on the graph with ``fingerprint`` and
    with ``cfg``'s settings (bar :data:`RESUMABLE_CHANGES`)."""
    if state.get("graph") != fingerprint:
        raise ConfigError(
            f"the checkpoint was trained on another graph (fingerprint {state.get('graph')}, "
            f"this graph {fingerprint}); start over without resuming", parameter="resume")
    # Checkpoints older than neg_candidates trained on every drawn negative.
    saved = TrainConfig(**{"neg_candidates": 1, **state["config"],
                           "ks": tuple(state["config"]["ks"])})
    diff = [f.name for f in fields(TrainConfig)
            if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(cfg, f.name)]
    if diff:
        raise ConfigError(
            f"the checkpoint was trained with different {', '.join(diff)} "
            f"({', '.join(f'{d}={getattr(saved, d)!r}' for d in diff)}); "
            "start over without resuming", parameter="resume")
