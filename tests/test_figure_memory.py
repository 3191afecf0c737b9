"""Annotated maps too heavy for the figure cache give their pixel buffers back with the response.

A matplotlib figure is a web of reference cycles, so without an explicit release its buffers
(77 MB each at 4096 px) lived until the garbage collector's next full pass, which in a worker
holding models comes only every few such figures: the largest-requests soak saw worker memory
swing by hundreds of MB with it. Here the collector is off, as it effectively is between full
passes, and three 4096 px annotated maps (a matrix, and a query row's bar chart) must leave no
buffer behind. Measured as glibc's mmapped bytes: buffers this large are always mmapped.
"""

from __future__ import annotations

import ctypes
import gc
import platform

import numpy as np
import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mmapped_bytes() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblkhd)


MATRIX = {"weights": np.random.default_rng(0).random((8, 8)).round(3).tolist(), "annotate": True, "size": 4096,
          "tokens": [f"t{i}" for i in range(8)]}


@pytest.mark.skipif(not GLIBC, reason="reads glibc's allocator statistics")
def test_uncached_annotated_figures_free_their_buffers_with_the_response(client):
    requests = [MATRIX, {**MATRIX, "query": 2}, MATRIX]  # the query row is drawn as a bar chart
    assert client.post("/visualize", json=MATRIX).status_code == 200  # fonts and caches warm
    gc.collect()
    gc.disable()
    try:
        before = _mmapped_bytes()
        for body in requests:
            response = client.post("/visualize", json=body)
            assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
            del response
        left = _mmapped_bytes() - before
    finally:
        gc.enable()
    assert left < 16 * 2**20, f"{left / 2**20:.0f} MB of figure buffers outlived their requests"
