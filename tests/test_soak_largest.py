"""The largest-requests soak (bench/soak_largest.py), short enough for CI (about two minutes).

Every answer 200, no worker restarted, each worker within its peak budget, and /metrics bounded.
Flatness (the second half's median and floor within GROWTH_BUDGET_MB of the first half's) needs
many cycles of the mix, so it is asserted by the long run, ``python bench/soak_largest.py
--duration 480 --warmup 90`` (its exit status is 1 when a budget is broken), whose figures are in
the README. The cause of the swings that run once showed, 4096 px figures whose buffers outlived
their requests, is pinned by a fast deterministic test, ``tests/test_figure_memory.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from soak_largest import PEAK_BUDGET_MB, soak

pytestmark = [pytest.mark.live, pytest.mark.slow]


def test_largest_requests_keep_worker_memory_flat():
    result = soak(duration=45, warmup=60, workers=2, clients=2)
    print(result)
    assert not result["failures"], result["failures"]
    assert not result["restarted"]
    for pid, worker in result["rss"].items():
        assert worker["peak_after_mb"] <= PEAK_BUDGET_MB, (pid, worker)
    assert result["metrics_bytes"]["after"] - result["metrics_bytes"]["before"] < 64 * 1024
