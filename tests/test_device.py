"""The CPU allocator setting the trainer makes (graphrec.device.retain_freed_memory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import graphrec.device as device

linux_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's mallopt only")

# Allocate, touch and free a tensor of argv[1] MB 40 times; print the minor page faults of each.
PROBE = """
import resource, sys, torch
from graphrec.device import retain_freed_memory
print(retain_freed_memory())
faults = []
for _ in range(40):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(int(sys.argv[1]) << 18).fill_(1.0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def probe(retain: str, megabytes: int) -> tuple[str, list[int]]:
    # 2 MB pages as the command line sets them (cli/__init__.py).
    env = {**os.environ, "GRAPHREC_RETAIN_MEMORY": retain, "THP_MEM_ALLOC_ENABLE": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(megabytes)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], [int(x) for x in out[1:]]


@linux_glibc
@pytest.mark.parametrize("megabytes", [16, 96])  # below and above glibc's 32 MB mmap ceiling
def test_freed_buffers_come_back_without_page_faults(megabytes: int) -> None:
    on, faults_on = probe("1", megabytes)
    off, faults_off = probe("0", megabytes)
    assert (on, off) == ("True", "False")
    # Without the setting every pass maps the buffer afresh (~520 faults for 16 MB with 2 MB
    # pages); with it the heap settles after a few passes and the buffer comes back mapped.
    assert min(faults_off) >= 256, faults_off
    assert sorted(faults_on)[len(faults_on) // 2] < 16, faults_on


def test_turned_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "_retained", False)
    monkeypatch.setenv("GRAPHREC_RETAIN_MEMORY", "0")
    assert device.retain_freed_memory() is False
