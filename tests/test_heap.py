"""app/ops/heap.py: heap trimming after large requests and the arena cap (glibc), a no-op elsewhere.

That it keeps worker memory flat is shown by the soak (bench/soak_largest.py, README figures);
these tests pin the mechanism: the threshold, the switch, and the fallbacks off glibc.
"""

from __future__ import annotations

import ctypes
import platform

import pytest

from app.ops import heap

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
glibc_only = pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")


def _free_a_fragmented_heap(megabytes: int) -> list[ctypes.Array[ctypes.c_char]]:
    """Allocate many 64 KiB blocks (below the mmap threshold: they live in the heap) and free every
    other one, so the free memory sits between live blocks, where only malloc_trim can return it."""
    blocks = [ctypes.create_string_buffer(64 * 1024) for _ in range(megabytes * 16)]
    return blocks[::2]


@glibc_only
def test_trim_returns_free_heap_above_the_threshold():
    kept = _free_a_fragmented_heap(256)
    free = heap.free_heap_bytes()
    assert free is not None and free > 64 * 2**20, free
    assert heap.trim_after_request(threshold=2**40) == 0  # below the threshold: nothing done
    assert heap.trim_after_request(threshold=32 * 2**20) >= 64 * 2**20
    del kept


@glibc_only
def test_trimming_can_be_switched_off(monkeypatch):
    kept = _free_a_fragmented_heap(128)
    monkeypatch.setenv("ATTNMAP_HEAP_TRIM_MB", "0")
    assert heap.trim_threshold_bytes() == 0 and heap.trim_after_request() == 0
    monkeypatch.setenv("ATTNMAP_HEAP_TRIM_MB", "not a number")
    assert heap.trim_threshold_bytes() == heap.DEFAULT_TRIM_MB * 2**20
    del kept


def test_off_glibc_everything_is_a_no_op(monkeypatch):
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    assert heap.free_heap_bytes() is None
    assert heap.trim_after_request(threshold=1) == 0
    assert heap.limit_arenas() is False


@glibc_only
def test_the_arena_cap_is_accepted():
    assert heap.limit_arenas(8) is True  # this test process: a generous cap, harmless to the rest of the run
