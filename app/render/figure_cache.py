"""A least-recently-used cache bounded by bytes as well as by count.

The annotated renderer keeps laid-out figures; each holds its canvas and a snapshot of the
background, two RGBA buffers of the figure's pixels (about 150 MB for a 4096 px figure). A cap
on the *count* alone let eight such figures pin 1.2 GB per worker, so entries are weighed by
their bytes: the oldest are dropped until both caps hold, and an entry heavier than the whole
byte budget is not kept at all (it is built, used once and its buffers freed at once, see ``app.render.annotated._release``).

Pure: no matplotlib, no Flask.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class BytesBoundedLRU(Generic[V]):
    """``get``/``put`` with eviction by age until ``len <= max_entries`` and ``bytes <= max_bytes``."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: Hashable) -> V | None:
        """The cached value (now the most recent), or None."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Hashable, value: V, nbytes: int) -> bool:
        """Keep ``value`` weighing ``nbytes``; False when it is too heavy to keep at all."""
        if key in self._items:
            self._bytes -= self._items.pop(key)[1]
        if nbytes > self.max_bytes:
            return False
        self._items[key] = (value, nbytes)
        self._bytes += nbytes
        while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped
        return True

    def __len__(self) -> int:
        return len(self._items)

    def values(self) -> list[V]:
        """The cached values, least recently used first."""
        return [value for value, _ in self._items.values()]

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached entries (as weighed by ``put``)."""
        return self._bytes
