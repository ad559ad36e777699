"""Property-based fuzzing (hypothesis) of everything that reads user files or artefacts:
whatever the bytes, a reader returns or raises a GraphrecError (one clean line on the
command line), never another exception."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from graphrec.artifacts.graph_dir import load_graph  # noqa: E402
from graphrec.artifacts.model_dir import load_arrays, read_model_config  # noqa: E402
from graphrec.data import io  # noqa: E402
from graphrec.errors import GraphrecError  # noqa: E402
from graphrec.fsio import resolve_version  # noqa: E402

# 1,000 cases per test in the default suite (fixed seed: the same cases on every run);
# GRAPHREC_FUZZ_EXAMPLES=5000 for a longer, random search.
EXAMPLES = int(os.environ.get("GRAPHREC_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 1000,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Table-ish text: delimiters, quotes, line ends, digits, letters, a NUL, non-ASCII, NaN.
CELLS = st.sampled_from(["user_id", "item_id", "rating", "timestamp", "title", "1", "2", "-3",
                         "4.5", "nan", "inf", "", " ", "a b", "é", "\x00", '"', "''", "x\ny",
                         "1e309", "0x10"])
TABLES = st.lists(st.lists(CELLS, min_size=0, max_size=5), min_size=0, max_size=8).map(
    lambda rows: "\n".join(st_join(r) for r in rows))
RAW = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)


def st_join(row: list[str]) -> str:
    return ",".join(row)


def _quiet(call) -> None:
    try:
        call()
    except GraphrecError:
        pass


@FUZZ
@given(text=st.one_of(TABLES, RAW), binary=st.binary(max_size=64), as_bytes=st.booleans())
def test_the_input_readers_fail_cleanly(tmp_path: Path, text: str, binary: bytes,
                                        as_bytes: bool) -> None:
    path = tmp_path / "input.csv"
    if as_bytes:
        path.write_bytes(binary)
    else:
        path.write_text(text, encoding="utf-8")
    _quiet(lambda: io.read_interactions_csv(path))
    _quiet(lambda: io.read_items(path))
    _quiet(lambda: io.read_lightgcn(path, path))


def _mutations():
    """(how, where in [0, 1), payload): truncate, overwrite a stretch, or replace whole."""
    return st.tuples(st.sampled_from(["truncate", "overwrite", "replace"]),
                     st.floats(0.0, 0.999), st.binary(min_size=1, max_size=32))


def _mutate(data: bytes, how: str, where: float, payload: bytes) -> bytes:
    at = int(where * len(data))
    if how == "truncate":
        return data[:at]
    if how == "overwrite":
        return data[:at] + payload + data[at + len(payload):]
    return payload


@pytest.fixture(scope="module")
def artefacts(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain, private copy of a trained work directory (links followed)."""
    return Path(shutil.copytree(trained, tmp_path_factory.mktemp("fuzz") / "w"))


@pytest.mark.parametrize("kind", ["model", "graph"])
def test_the_artefact_loaders_fail_cleanly(artefacts: Path, kind: str) -> None:
    folder, _ = resolve_version(artefacts / kind)
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != ".lock")
    originals = {n: (folder / n).read_bytes() for n in names}

    def load() -> None:
        if kind == "model":
            read_model_config(folder)
            load_arrays(folder)
        else:
            load_graph(folder)

    @FUZZ
    @given(name=st.sampled_from(names), mutation=_mutations())
    def case(name: str, mutation) -> None:
        target = folder / name
        target.write_bytes(_mutate(originals[name], *mutation))
        try:
            _quiet(load)
        finally:
            target.write_bytes(originals[name])

    case()
    load()  # the originals are back and load
