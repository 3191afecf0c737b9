"""Keep a worker's heap from holding on to memory its requests freed (glibc only; a no-op elsewhere).

The largest requests allocate and free hundreds of megabytes each (a 25 Mpx image is 75 MB of
pixels, then float copies, the resized overlay, a 4096 px figure). glibc's allocator keeps freed
chunks in its arenas for reuse and returns memory to the kernel only from the top of the main
heap, so a worker's resident size ratchets up with fragmentation, not with live objects: the
soak (``bench/soak_largest.py``) measured that, and the README gives the figures. Two remedies:

* :func:`limit_arenas`: at most :data:`ARENAS` malloc arenas per worker (``M_ARENA_MAX``, what the
  ``MALLOC_ARENA_MAX`` variable sets). glibc otherwise creates up to 8 per core, one for each
  thread that meets contention (torch's intra-op threads), and each keeps its own free memory.
* :func:`trim_after_request`: after a request, when the arenas hold more than a threshold of free
  bytes (``mallinfo2``), ``malloc_trim(0)`` returns the free pages to the kernel. Gunicorn calls it
  from ``post_request``, after the response has been written, so no client waits for it; the
  check alone costs microseconds, so small requests pay nothing noticeable.

The module imports only the standard library (Gunicorn's config file imports it).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from functools import cache

log = logging.getLogger("attnmap.heap")

ARENAS = 2
# mallopt parameter number of M_ARENA_MAX in glibc's malloc.h.
_M_ARENA_MAX = -8
# Free bytes in the arenas above which a request's end trims the heap; ATTNMAP_HEAP_TRIM_MB
# overrides it (0 turns trimming off, to measure what the allocator retains without it).
DEFAULT_TRIM_MB = 64


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33+): every field a ``size_t``."""

    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc with ``mallinfo2``, ``malloc_trim`` and ``mallopt``; else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None  # musl (Alpine), macOS: other allocators, other remedies
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("mallinfo2", "malloc_trim", "mallopt")):
        return None
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def trim_threshold_bytes() -> int:
    """Free heap bytes that make a request's end trim (``ATTNMAP_HEAP_TRIM_MB``; 0: never)."""
    try:
        megabytes = float(os.environ.get("ATTNMAP_HEAP_TRIM_MB", DEFAULT_TRIM_MB))
    except ValueError:
        megabytes = DEFAULT_TRIM_MB
    return max(0, int(megabytes * 2**20))


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap the number of malloc arenas (call in a worker before it starts threads); True if applied."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, arenas) == 1)


def free_heap_bytes() -> int | None:
    """Bytes the allocator holds free in its arenas (``mallinfo2().fordblks``); None off glibc."""
    libc = _glibc()
    return None if libc is None else int(libc.mallinfo2().fordblks)


def trim_after_request(threshold: int | None = None) -> int:
    """Return free heap pages to the kernel when more than ``threshold`` bytes sit free.

    Returns the free bytes that were found when it trimmed (0 when it did not: below the
    threshold, trimming off, or not glibc).
    """
    limit = trim_threshold_bytes() if threshold is None else threshold
    libc = _glibc()
    if libc is None or limit <= 0:
        return 0
    free = int(libc.mallinfo2().fordblks)
    if free < limit:
        return 0
    libc.malloc_trim(0)
    return free
