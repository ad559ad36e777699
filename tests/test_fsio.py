"""graphrec.fsio: the one atomic writer. A write replaces its target whole or not at all,
never through a planted link, and leaves no temporary behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from graphrec.errors import ArtifactError
from graphrec.fsio import (
    atomic_file,
    publish_version,
    read_json,
    read_jsonl,
    read_versioned,
    resolve_version,
    versions_dir,
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


def test_publish_version_swaps_a_link_and_keeps_the_newest(tmp_path: Path) -> None:
    final = tmp_path / "model"
    seen = []
    for n in range(5):
        with publish_version(final, keep=2) as tmp:
            (tmp / "a").write_text(str(n))
            if n == 0:
                (tmp / "only-first").write_text("x")
        source, version = resolve_version(final)
        seen.append(version)
        assert (final / "a").read_text() == str(n) == (source / "a").read_text()
        assert not os.path.isabs(os.readlink(final / "current"))
    assert seen == sorted(seen) and len(set(seen)) == 5  # ids sort by publication
    assert sorted(p.name for p in versions_dir(final).iterdir()) == seen[-2:]  # no temporary
    assert sorted(p.name for p in final.iterdir()) == ["a", "current", "versions"]
    moved = final.rename(tmp_path / "moved")  # all links are relative and inside
    assert (moved / "a").read_text() == "4" and resolve_version(moved)[1] == seen[-1]


def test_publish_version_leaves_the_current_one_on_ctrl_c(tmp_path: Path) -> None:
    final = tmp_path / "model"
    with publish_version(final) as tmp:
        (tmp / "a").write_text("1")
    before = resolve_version(final)
    with pytest.raises(KeyboardInterrupt), publish_version(final) as tmp:
        (tmp / "a").write_text("2")
        raise KeyboardInterrupt
    assert resolve_version(final) == before and (final / "a").read_text() == "1"
    assert [p.name for p in versions_dir(final).iterdir()] == [before[1]]


def test_publish_version_takes_over_plain_directories(tmp_path: Path) -> None:
    import shutil

    final = tmp_path / "model"
    final.mkdir()
    (final / "a").write_text("old")
    assert resolve_version(final) == (final, None)
    with publish_version(final) as tmp:
        (tmp / "a").write_text("new")
    assert (final / "a").is_symlink() and (final / "a").read_text() == "new"
    # A copy that followed the links is a plain directory again, and can be published to.
    copy = Path(shutil.copytree(final, tmp_path / "copy"))
    assert resolve_version(copy) == (copy, None) and (copy / "a").read_text() == "new"
    with publish_version(copy) as tmp:
        (tmp / "a").write_text("newer")
    assert (copy / "a").read_text() == "newer" and (final / "a").read_text() == "new"


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


@pytest.mark.parametrize("text", ['{"a": 1}\n{"a": 2}, {"a": 3}\n', '{"a": 1}\n\n{"a": 2}\n',
                                  '{"a": 1}\n{"a": \n'])
def test_read_jsonl_refuses_what_is_not_one_document_per_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError):
        read_jsonl(path)
    path.write_text('{"a": 1}\n{"a": [2, 3]}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": [2, 3]}]


PUBLISH = """
import sys
from pathlib import Path
from graphrec.fsio import publish_version
with publish_version(Path(sys.argv[1])) as tmp:
    for name in ("a", "b"):
        (tmp / name).write_text(sys.argv[2])
"""


@pytest.mark.parametrize("step", ["filled", "renamed", "pointed", "linked"])
def test_a_sigkill_at_any_step_leaves_one_whole_version(tmp_path: Path, step: str) -> None:
    import signal
    import subprocess
    import sys

    from graphrec.fsio import CRASH_ENV

    final = tmp_path / "model"

    def publish(text: str, crash: str | None = None) -> int:
        env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
        if crash is not None:
            env[CRASH_ENV] = crash
        return subprocess.run([sys.executable, "-c", PUBLISH, str(final), text], env=env,
                              timeout=60).returncode

    assert publish("1") == 0
    assert publish("2", crash=step) == -signal.SIGKILL
    source, version = resolve_version(final)
    texts = {(final / n).read_text() for n in ("a", "b")} | {
        (source / n).read_text() for n in ("a", "b")}
    assert texts in ({"1"}, {"2"})  # the old version or the new one, never a mix
    assert texts == ({"1"} if step in ("filled", "renamed") else {"2"})
    assert publish("3") == 0  # the next writer completes, and clears the dead one's temporary
    assert (final / "a").read_text() == "3"
    assert not [p for p in versions_dir(final).iterdir() if p.name.startswith(".")]


def test_a_second_writer_is_refused_naming_the_first(tmp_path: Path) -> None:
    from graphrec.errors import BusyError
    from graphrec.fsio import exclusive_lock

    with exclusive_lock(tmp_path, "graphrec train"):
        with pytest.raises(BusyError, match=rf"in use by pid {os.getpid()} \(graphrec train\)"):
            with exclusive_lock(tmp_path, "graphrec add-items"):
                pass
    with exclusive_lock(tmp_path, "graphrec add-items"):  # released with the block
        assert "graphrec add-items" in (tmp_path / ".lock").read_text()


def test_leftovers_of_the_old_directory_swap_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    old = tmp_path / f".model.old-{dead}"
    stale, fresh = tmp_path / ".model.tmp-abc", tmp_path / ".model.tmp-def"
    for d in (old, stale, fresh):
        d.mkdir()
    os.utime(stale, (0, 0))  # far older than an hour
    with publish_version(tmp_path / "model") as tmp:
        (tmp / "a").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.tmp-def", "model"]
