"""graphrec.train.checkpoint: what a resumed run accepts (the command line's --resume runs
are in tests/cli/test_cli.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from graphrec.errors import ConfigError
from graphrec.train import TrainConfig, Trainer


def test_checkpoint_without_neg_candidates_resumes_as_single_negatives(planted_graph) -> None:
    cfg = TrainConfig(epochs=2, batch_size=64, dim=8, layers=1, device="cpu", eval_every=0,
                      neg_candidates=1)
    state = Trainer(planted_graph, cfg).state()
    del state["config"]["neg_candidates"]  # a checkpoint written before the setting existed
    Trainer(planted_graph, cfg).load_state(state)
    with pytest.raises(ConfigError, match="neg_candidates=1"):
        Trainer(planted_graph, replace(cfg, neg_candidates=4)).load_state(state)
