"""Device choice: CUDA when present, else the CPU with every core this process may use."""

from __future__ import annotations

import os

import torch

from train.args import UsageError


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_device(name: str = "auto", threads: int | None = None) -> torch.device:
    """`auto` -> cuda if available else cpu; sets torch's CPU threads (default: all cores).

    Raises:
        UsageError: CUDA asked for but not available, or an unknown device string.
    """
    torch.set_num_threads(threads or available_cores())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name!r}: {exc}".splitlines()[0]) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here (use auto or cpu)")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: only cpu and cuda are supported")
    return device
