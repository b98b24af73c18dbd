"""Torch devices: choosing one, describing it, and autocast for reduced precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def available_devices() -> list[str]:
    """Torch device strings usable here: every CUDA device, then ``"cpu"``."""
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] + ["cpu"]


def default_device() -> str:
    """``"cuda:0"`` when a CUDA device is present, else ``"cpu"``."""
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def describe_device(device: str) -> str:
    """A short human description, e.g. ``"cuda:0 (NVIDIA H200)"`` or ``"cpu (2 threads)"``."""
    if device.startswith("cuda"):
        try:
            return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        except (RuntimeError, AssertionError, ValueError):
            return device
    return f"cpu ({torch.get_num_threads()} threads)"


@contextlib.contextmanager
def autocast(device: str, dtype: str = "float32") -> Iterator[None]:
    """Autocast to ``dtype`` (``"bfloat16"`` or ``"float16"``) on ``device``; a no-op for ``"float32"``."""
    if dtype == "float32":
        yield
        return
    kind = "cuda" if device.startswith("cuda") else "cpu"
    with torch.autocast(device_type=kind, dtype=getattr(torch, dtype)):
        yield
