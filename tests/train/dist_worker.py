"""One process of the data-parallel tests, launched by torchrun: joins the group, trains and
(rank 0) saves what it got. Not a test module (pytest collects test_*.py only).

    dist_worker.py GRAPH_DIR OUT CONFIG_JSON steps N   # N optimizer steps, then the weights
    dist_worker.py GRAPH_DIR OUT CONFIG_JSON fit E     # fit, stopped after epoch E, with a
                                                       # checkpoint at OUT.ckpt
    dist_worker.py ... part-steps N | part-fit E       # the same, the model split between the
                                                       # processes (PartitionedTrainer)
"""

from __future__ import annotations

import json
import sys

import torch

from graphrec.artifacts import load_graph
from graphrec.data import TEST, VALID
from graphrec.distributed import end_process, join, leave
from graphrec.eval import EvalContext
from graphrec.train import TrainConfig, Trainer
from graphrec.train.partition import PartitionedTrainer


def fit(trainer: Trainer, checkpoint, stop: int):
    """Trainer.fit with the graph's validation and test callbacks (as train_model wires
    them, over the trainer's group), ended after epoch ``stop``."""
    ctx = EvalContext.from_graph(trainer.graph, trainer.cfg.ks, trainer.device)
    validate = ctx.validator(VALID, trainer.group) if ctx.has_targets(VALID) else None
    return trainer.fit(validate, ctx.validator(TEST, trainer.group), checkpoint=checkpoint,
                       on_epoch=lambda row: trainer.epoch >= stop)


def main() -> None:
    graph_dir, out, cfg_json, mode = sys.argv[1:5]
    torch.set_num_threads(1)
    group = join(torch.device("cpu"))
    split = mode.startswith("part-")
    mode = mode.removeprefix("part-")
    trainer = (PartitionedTrainer if split else Trainer)(
        load_graph(graph_dir), TrainConfig(**json.loads(cfg_json)), group=group)
    if mode == "steps":
        steps = int(sys.argv[5])
        while trainer.steps_done < steps:
            for batch in trainer.batches():
                trainer.train_step(*batch)
                if trainer.steps_done == steps:
                    break
        model = trainer.full_model() if split else trainer.model  # None off the leader
        saved = {"model": model.state_dict() if model is not None else None}
    else:
        stop = int(sys.argv[5])
        result = fit(trainer, out + ".ckpt", stop)
        model = result.model if split else trainer.model
        saved = {"model": model.state_dict() if model is not None else None,
                 "history": result.history,
                 "test": result.test, "user_emb": result.user_emb}
    if group.leader:
        torch.save(saved, out)
    leave(wait=True)
    if group is not None and not group.solo:
        end_process()


if __name__ == "__main__":
    main()
