"""Several processes on torch.distributed: who this process is, and the few collectives
training and evaluation need.

A run on N processes (``torchrun --nproc-per-node N``, which sets RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT) joins one process group: gloo on CPUs, NCCL on GPUs. Every
collective runs under the group's timeout, so a process whose peer died or hangs stops with
an error instead of waiting forever. :data:`SOLO` is the one-process group: its collectives
return their input, so code written for a :class:`Group` runs unchanged in one process.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import sys
from dataclasses import dataclass

import torch

from graphrec.errors import ConfigError, GraphrecError

DEFAULT_TIMEOUT_S = 600.0
"""Longest wait of any collective (``GRAPHREC_DIST_TIMEOUT`` seconds overrides it): longer than
one epoch's slowest step or one evaluation, short enough that a lost peer ends the run."""


class DistributedError(GraphrecError):
    """A collective failed: a peer process stopped, or did not answer within the timeout."""


@dataclass(frozen=True)
class Group:
    """This process's place among ``world`` processes (rank 0 writes the artefacts)."""

    rank: int = 0
    world: int = 1

    @property
    def solo(self) -> bool:
        return self.world == 1

    @property
    def leader(self) -> bool:
        """Whether this process writes what the run produces (checkpoints, the model)."""
        return self.rank == 0

    def share(self, n: int) -> tuple[int, int]:
        """This rank's contiguous part [lo, hi) of ``n`` rows: shares differ by at most one,
        the first ``n % world`` ranks taking the extra row."""
        base, extra = divmod(n, self.world)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def all_reduce_(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        """Sum ``tensor`` over the processes, in place; ``what`` names it in an error."""
        if not self.solo:
            _collective(what, lambda: torch.distributed.all_reduce(tensor))
        return tensor

    def all_gather_bytes(self, payload: bytes, what: str) -> list[bytes]:
        """Every process's ``payload``, in rank order."""
        if self.solo:
            return [payload]
        out: list = [None] * self.world
        _collective(what, lambda: torch.distributed.all_gather_object(out, payload))
        return out

    def check_same(self, what: str, payload: bytes) -> None:
        """Refuse to go on unless every process holds the same ``payload`` (the graph's
        fingerprint, the training settings): one line naming the first rank that differs."""
        digest = hashlib.sha256(payload).digest()
        digests = self.all_gather_bytes(digest, what)
        for rank, other in enumerate(digests):
            if other != digests[0]:
                raise ConfigError(f"rank {rank} of {self.world} has a different {what} from "
                                  "rank 0; every process must train on the same graph with "
                                  "the same settings", parameter="nproc", value=self.world)

    def barrier(self, what: str) -> None:
        if not self.solo:
            _collective(what, torch.distributed.barrier)


SOLO = Group()


def _collective(what: str, fn) -> None:
    try:
        fn()
    except (RuntimeError, torch.distributed.DistBackendError) as exc:  # peer gone, timeout
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else "?"
        raise DistributedError(
            f"rank {rank}: {what} failed, a peer process stopped or did not answer within "
            f"{timeout_s():g} s ({first[:200]})") from exc


def timeout_s() -> float:
    raw = os.environ.get("GRAPHREC_DIST_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError("not a number of seconds", parameter="GRAPHREC_DIST_TIMEOUT",
                          value=raw) from None
    if not value > 0:
        raise ConfigError(parameter="GRAPHREC_DIST_TIMEOUT", value=raw, expected="seconds > 0")
    return value


def launched_world() -> int:
    """WORLD_SIZE as a launcher such as torchrun set it (1 when none did)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return max(int(raw), 1)
    except ValueError:
        raise ConfigError(parameter="WORLD_SIZE", value=raw, expected="an integer") from None


def launched() -> Group:
    """This process's place as a launcher (torchrun, :func:`launch`) set it in RANK and
    WORLD_SIZE, without joining a process group: :data:`SOLO` when none did."""
    world = launched_world()
    if world == 1:
        return SOLO
    raw = os.environ.get("RANK", "")
    try:
        return Group(int(raw), world)
    except ValueError:
        raise ConfigError(parameter="RANK", value=raw, expected="an integer") from None


def join(device: torch.device) -> Group:
    """The group this process was launched into: :data:`SOLO` without a launcher, else joined
    (once) over gloo for a CPU ``device`` or NCCL for CUDA, with the timeout on every
    collective. On CUDA each process takes the GPU of its LOCAL_RANK."""
    world = launched_world()
    if world == 1:
        return SOLO
    if not torch.distributed.is_available():
        raise ConfigError("this torch build has no torch.distributed", parameter="nproc",
                          value=world)
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        try:
            torch.distributed.init_process_group(
                backend, timeout=datetime.timedelta(seconds=timeout_s()))
        except (RuntimeError, ValueError, torch.distributed.DistBackendError) as exc:
            raise DistributedError(f"could not join the {world} processes over {backend}: "
                                   f"{str(exc).strip().splitlines()[0][:200]}") from exc
    return Group(torch.distributed.get_rank(), torch.distributed.get_world_size())


def launch(nproc: int, args: list[str]) -> None:
    """Run ``python args...`` on ``nproc`` local processes joined into one group (what
    ``torchrun --standalone --nproc-per-node nproc`` does: a rendezvous on a free local
    port, no restarts). A process that fails stops the others; the error names it."""
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(
        uuid.uuid4()), rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
        rdzv_configs={"timeout": int(timeout_s())})
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, entrypoint=sys.executable)(*args)
    except ChildFailedError as exc:
        rank, first = exc.get_first_failure()
        how = first.signal_name() if first.exitcode < 0 else f"exit code {first.exitcode}"
        raise DistributedError(
            f"rank {rank} of {nproc} stopped ({how}) and the others were stopped with it; "
            "the last checkpoint resumes the run") from None


def leave(wait: bool = False) -> None:
    """Leave the process group, when this process joined one; with ``wait`` (a run that
    ended well), once every process got here: gloo can abort a process whose group is torn
    down while a peer still talks to it."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if wait:
            _collective("the end of the run", torch.distributed.barrier)
        torch.distributed.destroy_process_group()


def end_process() -> None:
    """End a process that ran in a group and left it after a run that went well: output
    flushed, then exit status 0 at once, without the interpreter's teardown. There, gloo's
    threads abort about one process in ten on a loaded machine (torch 2.13: "terminate
    called without an active exception", SIGABRT after every artefact was written), which
    would make the launcher report a finished run as failed."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)
