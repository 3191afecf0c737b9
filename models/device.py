"""Choosing the torch device and dtype a worker's models live on.

Only called inside workers (never in the Gunicorn master), because touching CUDA before fork
breaks every forked worker.
"""

from __future__ import annotations

import torch


class DeviceUnavailable(RuntimeError):
    """The configured device does not exist on this machine."""


def resolve_device(setting: str) -> torch.device:
    """``auto`` -> CUDA when present else CPU; ``cpu``; ``cuda`` or ``cuda:N`` (must exist)."""
    setting = setting.strip().lower()
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"device {setting!r} requested but CUDA is not available")
        device = torch.device(setting)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailable(f"device {setting!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
        return device
    raise DeviceUnavailable(f"unknown device setting {setting!r}; use auto, cpu, cuda or cuda:N")


def resolve_dtype(device: torch.device, half_precision: bool) -> torch.dtype:
    """float16 on CUDA when half precision is asked for; float32 otherwise (CPU half is slow)."""
    return torch.float16 if half_precision and device.type == "cuda" else torch.float32


def is_out_of_memory(exc: BaseException) -> bool:
    """True for accelerator out-of-memory errors (torch raises a dedicated subclass on CUDA)."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def release_accelerator_memory() -> None:
    """Return cached blocks to the driver after an out-of-memory error so the next request fits."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
