"""graphrec.fsio: the one atomic writer. A write replaces its target whole or not at all,
never through a planted link, and leaves no temporary behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from graphrec.errors import ArtifactError
from graphrec.fsio import (
    atomic_directory,
    atomic_file,
    read_json,
    read_jsonl,
    read_versioned,
    write_json,
    write_jsonl,
)


def test_atomic_file_replaces_the_target_whole(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    with atomic_file(target) as f:
        f.write("new\n")
        assert target.read_text() == "old\n"  # nothing visible until the rename
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write('{"v": ')
        raise RuntimeError("interrupted")
    assert read_json(target, "test") == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_planted_link_at_the_old_temp_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "recs.jsonl"
    # The guessable names of the old writer: .NAME.tmp-PID
    os.symlink(victim, tmp_path / f".{out.name}.tmp-{os.getpid()}")
    with atomic_file(out) as f:
        write_jsonl(f, [{"user": "1"}, {"user": "2"}])
    assert victim.read_text() == "keep me\n"
    assert read_jsonl(out) == [{"user": "1"}, {"user": "2"}]


def test_binary_mode_and_json_lines(tmp_path: Path) -> None:
    with atomic_file(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with atomic_file(tmp_path / "u.jsonl") as f:
        assert write_jsonl(f, [{"t": "é"}], ensure_ascii=True) == 1
    assert (tmp_path / "u.jsonl").read_text() == json.dumps({"t": "é"}) + "\n"


def test_atomic_directory_swaps_whole_or_not_at_all(tmp_path: Path) -> None:
    final = tmp_path / "model"
    with atomic_directory(final) as tmp:
        (tmp / "a").write_text("1")
    assert (final / "a").read_text() == "1"
    with pytest.raises(KeyboardInterrupt), atomic_directory(final) as tmp:
        (tmp / "a").write_text("2")
        raise KeyboardInterrupt
    assert (final / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_read_versioned_names_the_directory_and_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found .*run `graphrec train` first"):
        read_versioned(tmp_path / "nope", "config.json", "model directory", 1, "graphrec train")
    (tmp_path / "m").mkdir()
    write_json(tmp_path / "m" / "config.json", {"format_version": 0})
    with pytest.raises(ArtifactError, match="format version 0, expected 1"):
        read_versioned(tmp_path / "m", "config.json", "model directory", 1, "graphrec train")
    (tmp_path / "m" / "config.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_versioned(tmp_path / "m", "config.json", "model directory", 1, "graphrec train")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
