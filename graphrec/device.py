"""Device policy, in one place: explicit argument, then GRAPHREC_DEVICE, then CUDA if present,
else CPU."""

from __future__ import annotations

import ctypes
import os
import sys

import torch

from graphrec.errors import DeviceError


def resolve_device(name: str | None = None) -> torch.device:
    """Return the torch device to compute on.

    ``name`` may be ``None``/``"auto"`` (then ``GRAPHREC_DEVICE``, then CUDA when available,
    else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Asking for CUDA on a machine without
    a GPU raises :class:`DeviceError` rather than silently falling back.
    """
    if name is None or name == "auto":
        name = os.environ.get("GRAPHREC_DEVICE") or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise DeviceError("not a device name", parameter="device", value=name,
                          expected="auto, cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but no GPU is available here",
                          parameter="device", value=name)
    if device.type not in ("cpu", "cuda"):
        raise DeviceError("unsupported device type", parameter="device", value=name,
                          expected="auto, cpu or cuda")
    return device


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)
_retained = False


def retain_freed_memory() -> bool:
    """Keep freed CPU tensors' memory in the process for reuse (glibc only; idempotent).

    A CPU training step allocates and frees tens of megabytes (hundreds on a 10M-interaction
    graph) of [nodes, d] and [batch, d] buffers. With glibc's defaults every buffer above its
    adaptive mmap threshold is a fresh mmap, so the kernel zero-fills its pages again on
    first touch, step after step (0.3-2 million page faults and 2-4 s of system time per
    Gowalla epoch; 1.2-1.6 s of system time in every 5 s step at 10M interactions). This
    serves every allocation from the heap instead: no mmap for single buffers (so the
    setting also covers buffers above glibc's 32 MB mmap-threshold ceiling), and freed
    memory is returned to the system only above 1 GB free at the heap's top. The cost is
    peak memory where freed blocks do not fit later requests (+0.7 GB at 10M interactions,
    none measurable on Gowalla; experiments/RESULTS.md). Process-wide, like
    THP_MEM_ALLOC_ENABLE; GRAPHREC_RETAIN_MEMORY=0 turns it off. Returns whether the setting
    is in effect.
    """
    global _retained
    if _retained:
        return True
    if os.environ.get("GRAPHREC_RETAIN_MEMORY", "1") == "0" or not sys.platform.startswith(
            "linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl): nothing to tune
        return False
    _retained = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _retained
