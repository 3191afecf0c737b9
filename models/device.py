"""Choosing the torch device and dtype a worker's models live on.

Only called inside workers (never in the Gunicorn master), because touching CUDA before fork
breaks every forked worker.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

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


def cpu_threads_per_worker(workers: int, requested: int = 0, cores: int | None = None) -> int:
    """Torch intra-op threads for one worker: ``requested``, else an equal share of the usable cores.

    Each worker's torch defaults to one thread per core; with several workers on the same cores
    their thread pools oversubscribe the CPU, and a request's forward pass then waits on threads
    that another worker's pass has displaced (measured here: p99 of the mixed load ~1 s).
    """
    if requested > 0:
        return requested
    available = usable_cores() if cores is None else cores
    return max(1, available // max(1, workers))


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by a container's CPU quota.

    In a container limited with ``--cpus 2`` or a Kubernetes CPU limit, the affinity mask still
    shows every core of the node; the quota (cgroup v2 ``cpu.max``, or v1 ``cfs_quota_us``) is
    what the scheduler enforces.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(cgroup_root)
    # Round down: threads past the quota only get throttled together.
    return max(1, min(cores, math.floor(quota))) if quota is not None else cores


def cgroup_cpu_quota(cgroup_root: Path) -> float | None:
    """CPUs' worth of quota from cgroup v2 or v1 files under ``cgroup_root``; None when unlimited or unknown."""
    try:
        fields = (cgroup_root / "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        if fields:
            return None
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:
        quota = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def configure_cpu_threads(threads: int) -> None:
    """Set this process's torch intra-op thread count (once, before any model runs)."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
