"""BuildConfig: how build-graph turns input files into a graph directory (inputs, columns,
filters, split, text encoder). A frozen dataclass that needs neither torch nor the encoder,
so the command line reads its defaults and help at start-up; ``graphrec.build`` runs it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from graphrec.errors import ConfigError
from graphrec.options import SPLIT_STRATEGIES, TEXT_PRECISIONS

BUNDLED_DATASET = Path(__file__).resolve().parents[2] / "datasets" / "ml-latest-small"
"""The MovieLens ml-latest-small folder shipped with the project: the default input."""


@dataclass(frozen=True)
class BuildConfig:
    """How to turn input files into a graph directory."""

    interactions: str | None = None
    """CSV/TSV interaction log with a header, or Parquet (.parquet, .pq) with the same columns
    (without it, and without ``train``: the bundled MovieLens)."""
    items: str | None = None
    """Item file: id column plus text columns."""
    train: str | None = None
    """LightGCN-format training file (``user item item ...``)."""
    test: str | None = None
    """LightGCN-format test file; fixes the test split."""
    movielens: str | None = None
    """A MovieLens folder (ratings.csv, movies.csv, tags.csv)."""
    user_col: str | None = None
    """User column name (default: user, user_id, userId, ...)."""
    item_col: str | None = None
    """Item column name (default: item, item_id, movieId, ...)."""
    rating_col: str | None = None
    """Rating column name (optional)."""
    time_col: str | None = None
    """Timestamp column name (optional, numeric)."""
    item_id_col: str | None = None
    """Id column of the item file."""
    text_cols: tuple[str, ...] = ()
    """Text columns of the item file (default: every column but the id)."""
    min_rating: float | None = None
    """Keep interactions with rating >= this (implicit feedback from explicit ratings)."""
    min_user_interactions: int = 1
    """k-core: drop users with fewer interactions (iterated with the item bound)."""
    min_item_interactions: int = 1
    """k-core: drop items with fewer interactions."""
    split: str = "random"
    """Split strategy: random, temporal or leave-one-out (per user)."""
    test_ratio: float = 0.2
    """Share of each user's interactions for test (random/temporal)."""
    valid_ratio: float | None = None
    """Share for validation (unset: 0.1, or 0 when the input files fix the split)."""
    cold_items: float = 0.0
    """Fraction of items held out of training entirely (cold-start protocol)."""
    seed: int = 0
    """Seed of every random choice in the build."""
    text_model: str | None = None
    """Text encoder: a Hugging Face model name or local path (unset: the packaged MiniLM)."""
    no_text: bool = False
    """Skip text embeddings."""
    text_batch_size: int = 64
    """Texts per encoder batch."""
    text_precision: str = "auto"
    """Encoder arithmetic: auto, float32 or bfloat16 (graphrec.text.TEXT_PRECISIONS)."""
    cache_dir: str | None = None
    """Text-embedding cache directory."""
    device: str | None = None
    """Device for the text encoder: auto, cpu or cuda."""
    progress: bool = False
    """Show a progress bar while encoding."""

    def validate(self) -> None:
        """Raise ConfigError naming the first setting out of range or inconsistent."""
        if self.split not in SPLIT_STRATEGIES:
            raise ConfigError(parameter="split", value=self.split,
                              expected=f"one of {', '.join(SPLIT_STRATEGIES)}")
        for name, v in (("test_ratio", self.test_ratio), ("valid_ratio", self.valid_ratio),
                        ("cold_items", self.cold_items)):
            if v is not None and not 0.0 <= v < 1.0:
                raise ConfigError(parameter=name, value=v, expected="a fraction in [0, 1)")
        if (self.test_ratio + (self.valid_ratio or 0.0)) >= 1.0:
            raise ConfigError(
                f"{{test_ratio}} {self.test_ratio} + {{valid_ratio}} {self.valid_ratio}: "
                "expected a sum below 1, or nothing is left to train on"
            )
        if self.test is not None and self.train is None:
            raise ConfigError("{test} given without {train}: the LightGCN format needs both")
        if self.interactions and self.train:
            raise ConfigError("{interactions} and {train} both given: choose one input format")
        for name, v in (("min_user_interactions", self.min_user_interactions),
                        ("min_item_interactions", self.min_item_interactions)):
            if v < 1:
                raise ConfigError(parameter=name, value=v, expected="an integer >= 1")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(parameter="seed", value=self.seed, expected="an integer in [0, 2^32)")
        if self.text_precision not in TEXT_PRECISIONS:
            raise ConfigError(parameter="text_precision", value=self.text_precision,
                              expected=f"one of {', '.join(TEXT_PRECISIONS)}")
