"""Device policy, in one place: explicit argument, then GRAPHREC_DEVICE, then CUDA if present,
else CPU."""

from __future__ import annotations

import os

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
        raise DeviceError(
            f"--device {name!r}: not a device name (expected auto, cpu or cuda)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name!r}: CUDA was requested but no GPU is available here")
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(
            f"--device {name!r}: unsupported device type (expected auto, cpu or cuda)")
    return device
