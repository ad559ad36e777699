"""Plain helpers shared by the test modules; the fixtures are in ``tests/conftest.py``.

Imported as a normal module (``from tests.helpers import ...``): random graphs, the
hand-worked ranking example of the evaluation tests, CSV files, and running the command line
through click's CliRunner.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner, Result
from graphrec_cli.main import main

from graphrec.data import Csr

# ----------------------------------------------------------------------------- random graphs


def random_graph(seed: int, num_users: int = 15, num_items: int = 11, n: int = 50,
                 isolated_last: bool = False):
    """Distinct random (user, item) pairs as int64 arrays, and the node counts; some nodes
    may be isolated. ``isolated_last``: pairs only among the first ``num_users - 1`` users
    and ``num_items - 1`` items, so the last user and the last item have no edges."""
    rng = np.random.default_rng(seed)
    users, items = (num_users - 1, num_items - 1) if isolated_last else (num_users, num_items)
    keys = rng.choice(users * items, size=n, replace=False)
    return keys // items, keys % items, num_users, num_items


def sampler_graph(seed: int, num_users: int = 40, num_items: int = 60):
    """Users with 1..30 of the first 50 items; items 50..59 never interacted with (cold)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(num_users):
        n = int(rng.integers(1, 31))
        users.append(np.full(n, u))
        items.append(rng.choice(50, size=n, replace=False))
    return (torch.as_tensor(np.concatenate(users)), torch.as_tensor(np.concatenate(items)),
            num_items)


# ----------------------------------------------------------------------------- evaluation data


L3 = math.log2(3)  # 1 / log2(rank + 2) at rank 1 is 1 / L3 ~= 0.6309


def csr(rows: list[list[int]]) -> Csr:
    users = [u for u, items in enumerate(rows) for _ in items]
    items = [i for r in rows for i in r]
    return Csr.from_pairs(np.array(users, dtype=np.int64), np.array(items, dtype=np.int64),
                          len(rows))


# Three users, six items. Rankings before masking:
#   u0: 0 1 2 3 4 5    u1: 5 4 3 2 1 0    u2: 2 4 0 3 5 1
SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        [0.5, 0.1, 0.9, 0.3, 0.7, 0.2],
    ]
)


SEEN = csr([[0], [5], []])


TARGET = csr([[1, 3], [], [4, 1]])  # u1 has no target: skipped


def random_split(seed: int, num_users: int = 60, num_items: int = 40):
    rng = np.random.default_rng(seed)
    pairs = rng.random((num_users, num_items))
    seen = np.argwhere(pairs < 0.15)
    target = np.argwhere((pairs >= 0.15) & (pairs < 0.25))
    return (
        Csr.from_pairs(seen[:, 0], seen[:, 1], num_users),
        Csr.from_pairs(target[:, 0], target[:, 1], num_users),
        torch.from_numpy(rng.standard_normal((num_users, num_items)).astype(np.float32)),
        rng,
    )


# ----------------------------------------------------------------------------- files


COMMUNITY_WORDS = (
    ("space", "rocket", "astronaut", "galaxy", "orbit", "planet", "star", "mission"),
    ("love", "romance", "paris", "wedding", "kiss", "heart", "letter", "dance"),
    ("kitchen", "recipe", "chef", "bake", "pasta", "flavor", "garden", "harvest"),
)


def write_csv(path: Path, header: list[str], rows: list[list[object]],
              delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ----------------------------------------------------------------------------- command line


TRAIN_ARGS = ["--epochs", "3", "--batch-size", "64", "--lr", "0.05", "--dim", "8",
              "--eval-every", "1", "--device", "cpu"]


def run(workdir: Path, *args: str, **kwargs) -> Result:
    runner = CliRunner(env={"GRAPHREC_DEVICE": None, "GRAPHREC_WORKDIR": None})
    return runner.invoke(main, ["--workdir", str(workdir), *args], **kwargs)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def one_line_error(result: Result, *needles: str, code: int = 1, banner: bool = False) -> str:
    """The run failed with exactly one line on stderr, no traceback, naming ``needles``.

    ``banner``: train's status line ("training on cpu: ...") may come first.
    """
    assert result.exit_code == code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if banner and len(lines) == 2 and lines[0].startswith("training on "):
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def temp_leftovers(folder: Path) -> list[str]:
    """Temporaries anywhere under ``folder`` (versions/.tmp-*, link temporaries, ...)."""
    return [str(p.relative_to(folder)) for p in folder.rglob("*")
            if ".tmp-" in p.name or ".old-" in p.name or ".link-" in p.name] \
        if folder.exists() else []


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every entry under ``folder`` by relative path: a file's bytes, a link's target (a
    versioned model directory is links into versions/)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root, name)
            if p.is_symlink():
                out[str(p.relative_to(folder))] = os.readlink(p).encode()
            elif p.is_file():
                out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def dense_adjacency(users, items, num_users, num_items) -> np.ndarray:
    """D^-1/2 A D^-1/2 of the bipartite graph, [N, N] float64, users first; 0 rows for
    isolated nodes: the dense reference that the sparse products are checked against."""
    n = num_users + num_items
    a = np.zeros((n, n))
    a[users, num_users + items] = 1.0
    a[num_users + items, users] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    return inv[:, None] * a * inv[None, :]
