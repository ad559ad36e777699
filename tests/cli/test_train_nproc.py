"""`graphrec train --nproc 2`: the command launches itself on two gloo processes, rank 0
writes one model the other commands use, a run of two processes resumes in one, and a
process that dies ends the run with its rank named instead of a hang."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ok, run

ARGS = ["--device", "cpu", "--dim", "8", "--layers", "2", "--batch-size", "50",
        "--lr", "0.01", "--seed", "0"]


def graphrec(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphrec_cli", *args], capture_output=True,
                          text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_train_on_two_processes_writes_one_model(planted, tmp_path: Path) -> None:
    work = tmp_path / "w"
    ok(run(work, "build-graph", "--interactions", str(planted.interactions), "--no-text",
           "--seed", "0"))
    done = graphrec("--workdir", str(work), "train", "--nproc", "2", "--epochs", "3", *ARGS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x 2 processes" in done.stderr and done.stdout.count("wrote ") == 1
    assert not (work / "model.ckpt").exists()
    # A model like any other: evaluate reads it.
    evaluated = ok(run(work, "evaluate", "--json"))
    assert '"recall@20"' in evaluated.stdout
    # The run's validation chose the epoch as one process does.
    solo = graphrec("--workdir", str(work), "train", "--epochs", "3", "--output",
                    str(tmp_path / "solo"), *ARGS)
    assert solo.returncode == 0, solo.stderr[-3000:]
    last = [line for line in done.stdout.splitlines() if line.startswith("test:")]
    assert last == [line for line in solo.stdout.splitlines() if line.startswith("test:")]


def test_a_model_split_between_two_processes_trains_as_one_process(planted,
                                                                   tmp_path: Path) -> None:
    work = tmp_path / "w"
    ok(run(work, "build-graph", "--interactions", str(planted.interactions), "--no-text",
           "--seed", "0"))
    done = graphrec("--workdir", str(work), "train", "--nproc", "2", "--partition",
                    "--epochs", "3", *ARGS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "model split between them" in done.stderr and done.stdout.count("wrote ") == 1
    recommended = ok(run(work, "recommend", "--user", "1", "--k", "5", "--json"))
    assert '"items"' in recommended.stdout
    solo = graphrec("--workdir", str(work), "train", "--epochs", "3", "--output",
                    str(tmp_path / "solo"), *ARGS)
    assert solo.returncode == 0, solo.stderr[-3000:]
    test_lines = [[line for line in out.stdout.splitlines() if line.startswith("test:")]
                  for out in (done, solo)]
    assert test_lines[0] == test_lines[1] and test_lines[0]
    # Its model folds new interactions in like a one-process model (the leader wrote the
    # fold-in arrays from the gathered model).
    batch = tmp_path / "batch.csv"
    batch.write_text("user,item,rating,timestamp\nwalk-in,101,5,1\nwalk-in,102,4,2\n")
    ok(run(work, "update", "--interactions", str(batch)))
    after = ok(run(work, "recommend", "--user", "walk-in", "--k", "5", "--json"))
    assert '"items"' in after.stdout


def rank_process(marker: str, rank: int) -> int | None:
    """The pid of the training process of ``rank`` whose environment holds ``marker``."""
    for entry in Path("/proc").iterdir():
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if marker.encode() in env and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


@pytest.mark.parametrize("mode", [[], ["--partition"]], ids=["copied", "split"])
def test_a_process_that_dies_ends_the_run_and_resume_continues(planted, tmp_path: Path,
                                                               mode: list) -> None:
    work = tmp_path / "w"
    ok(run(work, "build-graph", "--interactions", str(planted.interactions), "--no-text",
           "--seed", "0"))
    marker = f"GRAPHREC_TEST_MARK={tmp_path}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRAPHREC_DIST_TIMEOUT": "30",
           marker.split("=")[0]: str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "graphrec_cli", "--workdir", str(work),
                             "train", "--nproc", "2", *mode, "--epochs", "300",
                             "--eval-every", "0", *ARGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    checkpoint = work / "model.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    pid = rank_process(marker, 1)
    assert checkpoint.exists() and pid is not None, proc.communicate(timeout=60)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 90  # no hang
    assert "rank: 1" in stderr or "rank 1" in stderr, stderr[-3000:]
    assert stderr.rstrip().splitlines()[-1].startswith("error: rank 1 of 2 stopped (SIGKILL)")
    assert not (work / "model").exists()
    # The last checkpoint survives; one process resumes from it.
    resumed = ok(run(work, "train", "--resume", "--epochs", "300", "--eval-every", "0",
                     *ARGS))
    assert "wrote " in resumed.stdout and (work / "model").exists()
