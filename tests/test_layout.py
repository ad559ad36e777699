"""The package's structure as a contract: imports run one way, serving loads no training or
evaluation code, the library speaks no command-line flags, metrics and errors extend in one
place."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch

import graphrec
from graphrec.errors import ConfigError, DataError, GraphrecError, mention

PACKAGE = Path(graphrec.__file__).parent

# Each module group may import only groups of a lower rank (and itself). Groups of equal
# rank are independent: train, eval and serve never import one another.
RANKS = {
    "errors": 0, "options": 0, "lazy": 0,
    "device": 1, "fsio": 1, "distributed": 1,
    "data.csr": 2, "data.interactions": 2, "data.io": 2,
    "data.split": 3,
    "data": 4, "text": 4, "graph": 4, "popularity": 4,
    "artifacts": 5,
    "build": 6, "model": 6,
    "train": 7, "eval": 7, "serve": 7,
    "pipeline": 8,
    # Old import paths kept for one release: re-exports only.
    "artifact": 9, "recommend": 9,
}

def _group(module: str) -> str:
    """The RANKS key of a dotted module name inside graphrec (most specific first)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in RANKS:
            return key
    raise AssertionError(f"graphrec.{module} belongs to no layer; add it to RANKS")


def _library_modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join(parts) or "__init__"] = path
    return out


def _graphrec_imports(path: Path, module: str) -> list[str]:
    """Every graphrec module that ``path`` imports (top level, inside functions, lazily)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("graphrec.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package[: len(package) - node.level + 1]
                name = ".".join(["graphrec", *base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            if name == "graphrec":
                found += [f"graphrec.{a.name}" for a in node.names]
            elif name.startswith("graphrec."):
                found.append(name)
    return [f[len("graphrec."):] for f in found]


def test_every_library_module_has_a_layer() -> None:
    for module in _library_modules():
        if module != "__init__":
            _group(module)


def test_imports_run_one_way() -> None:
    bad = []
    for module, path in _library_modules().items():
        if module == "__init__":
            continue
        mine = _group(module)
        for target in _graphrec_imports(path, module):
            theirs = _group(target)
            if path.name == "__init__.py" and target.startswith(module + "."):
                continue  # a package's __init__ re-exports its own submodules
            if theirs != mine and not RANKS[theirs] < RANKS[mine]:
                bad.append(f"graphrec.{module} imports graphrec.{target} "
                           f"({mine} rank {RANKS[mine]} -> {theirs} rank {RANKS[theirs]})")
    assert not bad, "\n".join(bad)


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    # The checker itself can fail: a serve module importing train is reported.
    fake = tmp_path / "x.py"
    fake.write_text("from graphrec.train.trainer import Trainer\nimport graphrec.eval\n")
    targets = _graphrec_imports(fake, "serve.x")
    assert targets == ["train.trainer", "eval"]
    assert all(not RANKS[_group(t)] < RANKS["serve"] for t in targets)


def test_serving_loads_neither_training_nor_evaluation() -> None:
    pytest.importorskip("fastapi")
    code = ("import sys, graphrec.serve, graphrec.serve.http; "
            "from graphrec.serve import Recommender, add_items; "
            "print(sorted(m for m in sys.modules if m.startswith(('graphrec.train', "
            "'graphrec.eval', 'graphrec.pipeline'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out


def _cli_flags() -> set[str]:
    from graphrec_cli.main import main

    flags = set()
    for command in [main, *main.commands.values()]:
        for param in command.params:
            if isinstance(param, click.Option):
                flags.update(o for o in param.opts + param.secondary_opts if o.startswith("--"))
    return flags


def test_no_library_module_mentions_a_cli_flag() -> None:
    flags = _cli_flags()
    assert {"--tail-boost", "--history", "--resume", "--k", "--no-text"} <= flags
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(flags))) + r")(?![\w-])")
    hits = [f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
            for path in PACKAGE.rglob("*.py")
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)]
    assert not hits, "\n".join(hits)


def test_cli_defaults_and_choices_come_from_the_library() -> None:
    from graphrec_cli.main import main

    from graphrec.data.config import BuildConfig
    from graphrec.options import field_defaults
    from graphrec.train import LR_SCHEDULES, PRECISIONS, TrainConfig

    def config_defaults() -> dict:
        return field_defaults(TrainConfig)

    train = {p.name: p for p in main.commands["train"].params}
    shared = [name for name in config_defaults() if name in train]
    assert len(shared) >= 18, shared  # every TrainConfig field but the few not on the CLI
    for name in shared:
        default = config_defaults()[name]
        if name == "ks":
            assert train["ks"].default == ",".join(map(str, default))
        else:
            assert train[name].default == default, name
    assert tuple(train["lr_schedule"].type.choices) == LR_SCHEDULES
    assert tuple(train["precision"].type.choices) == PRECISIONS
    assert TrainConfig().epochs == train["epochs"].default
    build = {p.name: p for p in main.commands["build-graph"].params}
    for name, default in field_defaults(BuildConfig).items():
        if name in build and name not in ("text_cols", "device"):
            assert build[name].default == default, name
    assert sum(name in build for name in field_defaults(BuildConfig)) >= 18


def test_errors_carry_parameter_value_expected_and_the_cli_spells_them() -> None:
    from graphrec_cli.main import flag_speller, main

    exc = ConfigError(parameter="tail_boost", value=11.0, expected="a number in [0, 10]")
    assert (exc.parameter, exc.value, exc.expected) == ("tail_boost", 11.0, "a number in [0, 10]")
    assert str(exc) == "tail_boost 11: expected a number in [0, 10]"
    spell = flag_speller(main.commands["recommend"])
    assert exc.describe(spell) == "--tail-boost 11: expected a number in [0, 10]"
    assert spell("k") == "-k" and flag_speller(main.commands["train"])("ks") == "--k"
    # Mentions of other parameters are spelled too; build-graph's --no-text from add-items.
    other = DataError(f"built without text ({mention('no_text')})", parameter="items",
                      value=Path("new.csv"))
    assert other.describe(flag_speller(main.commands["add-items"])) == \
        "--items new.csv: built without text (--no-text)"
    assert str(other) == "items new.csv: built without text (no_text)"
    assert isinstance(GraphrecError("plain message"), Exception)
    assert str(GraphrecError("plain message")) == "plain message"


def test_a_metric_is_one_registered_function() -> None:
    from graphrec.eval import METRICS, evaluate_scores, metric
    from graphrec.eval.metrics import RankedLists

    scores = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.9]])
    from graphrec.data import Csr

    seen = Csr(torch.tensor([0, 0, 0]).numpy(), torch.tensor([], dtype=torch.int64).numpy())
    target = Csr(torch.tensor([0, 1, 2]).numpy(), torch.tensor([1, 0]).numpy())
    before = evaluate_scores(scores, seen, target, ks=(2,))
    assert "first_hit@2" not in before

    @metric("first_hit")
    def first_hit(lists: RankedLists) -> torch.Tensor:
        """first_hit@K = mean_u [L_u[0] in T_u]"""
        return lists.hits[:, 0]

    try:
        after = evaluate_scores(scores, seen, target, ks=(2,))
        # user 0 ranks items 0, 1 (target 1: hit at rank 2); user 1 ranks 3, 2 (target 0)
        assert after["first_hit@2"] == 0.0 and after["recall@2"] == pytest.approx(0.5)
        assert {k: v for k, v in after.items() if k != "first_hit@2"} == before
    finally:
        del METRICS["first_hit"]


def test_the_command_line_starts_without_torch() -> None:
    # Choices and defaults come from torch-free modules (graphrec.options, train.config), so
    # `graphrec --help` and a usage error cost a fraction of a second, not a torch import.
    code = "import sys, graphrec_cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
