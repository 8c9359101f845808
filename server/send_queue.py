"""A bounded asyncio queue that drops its oldest droppable item instead of blocking the producer.

A slow WebSocket reader loses old chunks (counted) and never stalls the device loop. Only
droppable items (video chunks) count toward `maxsize`; items put with `droppable=False` (JSON
events, an fMP4 session's first chunk which carries the init segment) are always kept, in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """Single-event-loop FIFO; `put` never blocks, `get` waits for an item."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize  # droppable items kept at most
        self.dropped = 0  # droppable items discarded to make room
        self._items: deque[tuple[T, bool]] = deque()  # (item, droppable)
        self._droppable = 0  # droppable items currently queued
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def depth(self) -> int:
        """Droppable items (chunks) waiting."""
        return self._droppable

    def put(self, item: T, droppable: bool = True) -> int:
        """Append; returns how many old items were dropped to stay within maxsize."""
        dropped = 0
        if droppable:
            while self._droppable >= self.maxsize:
                index = next(i for i, (_, d) in enumerate(self._items) if d)
                del self._items[index]
                self._droppable -= 1
                dropped += 1
            self._droppable += 1
        self._items.append((item, droppable))
        self.dropped += dropped
        self._ready.set()
        return dropped

    def clear(self) -> None:
        """Forget every queued item (the consumer is gone)."""
        self._items.clear()
        self._droppable = 0

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item, droppable = self._items.popleft()
        self._droppable -= droppable
        return item
