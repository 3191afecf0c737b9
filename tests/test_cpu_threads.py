"""Each Gunicorn worker gets its own share of the CPU cores for torch (no oversubscription)."""

from __future__ import annotations

import os

import pytest
import torch

from app.config import load_settings
from models.device import cpu_threads_per_worker
from models.registry import build_registry


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def test_threads_are_an_equal_share_of_the_cores():
    cores = _cores()
    assert cpu_threads_per_worker(1) == cores
    assert cpu_threads_per_worker(2) == max(1, cores // 2)
    assert cpu_threads_per_worker(cores * 4) == 1  # never zero threads
    assert cpu_threads_per_worker(2, requested=3) == 3  # an explicit setting wins


def test_settings_read_worker_count_and_threads_from_the_environment():
    settings = load_settings(environ={"ATTNMAP_WORKERS": "4", "ATTNMAP_TORCH_THREADS": "2"})
    assert (settings.workers, settings.torch_threads) == (4, 2)
    assert load_settings(environ={}).torch_threads == 0


@pytest.fixture
def restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_loading_models_sets_the_worker_thread_count(restore_torch_threads):
    torch.set_num_threads(2)
    registry = build_registry(("shapes-vit",), None, "cpu", False, warmup=False, cpu_threads=1)
    assert registry.names() == ["shapes-vit"]
    assert torch.get_num_threads() == 1
