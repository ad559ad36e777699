"""The work directory: where the commands keep the graph, the model, the text cache and the
training checkpoint, so that ``build-graph``, ``train`` and ``recommend`` with no paths form a
complete run; and the record written per user by the batch recommendations."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from graphrec.fsio import write_jsonl

DEFAULT_WORKDIR = "graphrec-run"
"""The work directory when none is given (relative to the current directory)."""
WORKDIR_ENV = "GRAPHREC_WORKDIR"
"""Environment variable naming the work directory."""


@dataclass(frozen=True)
class Workdir:
    """The layout under one work directory ``root``."""

    root: Path

    @property
    def graph_dir(self) -> Path:
        """The graph directory build-graph writes."""
        return self.root / "graph"

    @property
    def model_dir(self) -> Path:
        """The model directory train writes and recommend, add-items and evaluate read."""
        return self.root / "model"

    @property
    def text_cache(self) -> Path:
        """The text-embedding cache shared by build-graph and add-items."""
        return self.root / "cache" / "text"

    @property
    def checkpoint(self) -> Path:
        """The training checkpoint (written every epoch, removed when the model is saved)."""
        return self.root / "model.ckpt"

    def export_path(self, fmt: str) -> Path:
        """Where export-graph writes the training graph in format ``fmt``."""
        return self.root / f"graph.{fmt}"


def recommendation_record(user: str, items: list[str], scores: list[float]) -> dict:
    """One line of the batch recommendations: ``{"user", "items", "scores"}``."""
    return {"user": user, "items": items, "scores": scores}


def write_recommendations(f: IO, rows: Iterable[tuple[str, list[str], list[float]]]) -> int:
    """Write ``(user, items, scores)`` rows (``Recommender.recommend_all``) as JSON lines to the
    open text file ``f``; returns the number of users written."""
    return write_jsonl(f, (recommendation_record(*row) for row in rows), ensure_ascii=True)
