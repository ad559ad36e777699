"""graphrec.train.config: the automatic batch size and learning rate, the automatic schedule
and negatives, and settings refused for the graph."""

from __future__ import annotations

import pytest

from graphrec.errors import ConfigError
from graphrec.train import TrainConfig, Trainer, resolved_batch_size, resolved_lr


def test_batch_rule_keeps_steps_per_epoch_constant() -> None:
    # About 25 steps per epoch at every size (no cap below 2^21), so an epoch's work grows
    # linearly with the interactions; the learning rate stops growing at 32768.
    for n in (810_128, 2_000_000, 10_000_000, 40_000_000):
        steps = -(-n // resolved_batch_size(n))
        assert 17 <= steps <= 36, (n, steps)
    assert resolved_batch_size(10) == 1024 and resolved_batch_size(10**10) == 2**21
    assert resolved_lr(2048) == 0.005 and resolved_lr(32768) == 0.02
    assert resolved_lr(524288) == resolved_lr(32768)


def test_layer0_cold_start_needs_text_items(planted_graph_text) -> None:
    with pytest.raises(ConfigError, match="cold_start 'layer0': needs item_init text"):
        Trainer(planted_graph_text, TrainConfig(item_init="text+id", cold_start="layer0"))
    with pytest.raises(ConfigError, match="cold_start 'x'"):
        Trainer(planted_graph_text, TrainConfig(cold_start="x"))


def test_auto_schedule_follows_the_run_length(planted_graph, planted_graph_text) -> None:
    # No validation split (or --eval-every 0): a fixed-length run, decayed to its end.
    assert TrainConfig().resolve(planted_graph).lr_schedule == "cosine"
    assert TrainConfig(eval_every=0).resolve(planted_graph_text).lr_schedule == "cosine"
    # Early stopping decides the length: constant.
    assert TrainConfig().resolve(planted_graph_text).lr_schedule == "constant"
    assert TrainConfig(lr_schedule="constant").resolve(planted_graph).lr_schedule == "constant"
    assert TrainConfig(lr_schedule="cosine").resolve(planted_graph_text).lr_schedule == "cosine"


def test_auto_negatives_follow_the_item_representation(planted_graph, planted_graph_text) -> None:
    assert TrainConfig().resolve(planted_graph).negatives == "uniform"  # no text: id items
    assert TrainConfig().resolve(planted_graph_text).negatives == "popularity"
    assert TrainConfig(item_init="id").resolve(planted_graph_text).negatives == "uniform"
    assert TrainConfig(negatives="popularity").resolve(planted_graph).negatives == "popularity"


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("temperature", 0.0, "temperature 0: expected a number > 0"),
    ("neg_share", 1.5, "neg_share 1.5"), ("loss", "hinge", "loss 'hinge'"),
    ("neg_top", 9, "neg_top 9: expected an integer in \\[1, neg_candidates = 8\\]")])
def test_loss_and_share_settings_are_checked(field: str, value, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        TrainConfig(**{field: value}).validate(has_text=False)
