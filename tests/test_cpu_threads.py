"""Each Gunicorn worker gets its own share of the CPU cores for torch (no oversubscription)."""

from __future__ import annotations

import os
import time

import pytest
import torch

from app.service.config import load_settings
from models.device import cgroup_cpu_quota, cpu_threads_per_worker, usable_cores
from models.registry import build_registry
from tests.live import gunicorn_server
from tests.serving_support import json_lines, wait_for_workers


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def test_threads_are_an_equal_share_of_the_cores():
    assert cpu_threads_per_worker(1, cores=8) == 8
    assert cpu_threads_per_worker(2, cores=8) == 4
    assert cpu_threads_per_worker(3, cores=8) == 2
    assert cpu_threads_per_worker(16, cores=8) == 1  # never zero threads
    assert cpu_threads_per_worker(2, requested=3, cores=8) == 3  # an explicit setting wins
    assert cpu_threads_per_worker(1) == usable_cores() <= _cores()


@pytest.mark.parametrize(("files", "quota"), [
    ({"cpu.max": "200000 100000\n"}, 2.0),          # cgroup v2, --cpus 2
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),            # v2, no limit
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),     # v1, no limit
    ({}, None),                                      # no cgroup files at all
])
def test_container_cpu_quota_is_read_from_cgroup_files(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(tmp_path) == quota


def test_a_quota_caps_the_usable_cores(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert usable_cores(tmp_path) == 1  # 1.5 CPUs of quota: one thread that is never throttled


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


@pytest.mark.live
def test_each_gunicorn_worker_loads_its_models_with_its_share_of_the_cores(tmp_path):
    log_path = tmp_path / "gunicorn.log"
    with gunicorn_server({"ATTNMAP_BUILTIN_MODELS": "shapes-vit", "ATTNMAP_TORCH_THREADS": "0"}, workers=2,
                         log_path=log_path) as (_, process):
        wait_for_workers(process.pid, 2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            loaded = {r["pid"]: r for r in json_lines(log_path) if r.get("msg") == "model loaded"}
            if len(loaded) == 2:
                break
            time.sleep(0.2)
    assert len(loaded) == 2, "both workers load their own copy of the model"
    assert {r["torch_threads"] for r in loaded.values()} == {max(1, usable_cores() // 2)}
