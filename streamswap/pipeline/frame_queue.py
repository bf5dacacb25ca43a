"""FrameQueue: the bounded FIFO of frame items (slot index + metadata) between two stages.

Two policies when a queue is full: "block" (the producer waits; a file loses nothing) and
"drop-oldest" (a live source never waits: the oldest frame still waiting is removed and
handed back so its slot can be released and the drop counted). Either way items leave
in the order they entered, so frames leave the pipeline in sequence order.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from streamswap.io.base import FrameMeta


@dataclass
class FrameItem:
    """One frame travelling through the queues. `slot` indexes the SlotPool."""

    slot: int
    meta: FrameMeta
    faces: Any = ()
    # Audio packets demuxed up to this frame; they reach the sinks just before it.
    audio: list[Any] = field(default_factory=list)


class QueueClosed(Exception):
    """The queue was closed (abort) while a thread waited on it."""


class FrameQueue:
    """A bounded, blocking queue of FrameItems with an end-of-stream marker (the only
    place two stage threads meet). Thread-safe."""

    def __init__(self, capacity: int, name: str = "") -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be ≥ 1")
        self.capacity = capacity
        self.name = name
        self._items: deque[FrameItem] = deque()
        self._cond = threading.Condition()
        self._ended = False  # producer finished: get() returns None once empty
        self._closed = False  # aborted: every waiter raises QueueClosed
        self.max_depth = 0  # highest depth ever seen (tests and status)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: FrameItem, timeout: float | None = None) -> bool:
        """Append, waiting while the queue is full (block policy). With `timeout`: False
        (nothing appended) when it is still full after that many seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._items) < self.capacity or self._closed, timeout):
                return False
            if self._closed:
                raise QueueClosed(self.name)
            self._append(item)
            return True

    def put_drop_oldest(self, item: FrameItem) -> FrameItem | None:
        """Append without waiting; when full, remove and return the oldest waiting item.

        The dropped frame's audio packets are not lost: they move to the next frame so
        the sinks still get every packet, in order.
        """
        with self._cond:
            if self._closed:
                raise QueueClosed(self.name)
            dropped = None
            if len(self._items) >= self.capacity:
                dropped = self._items.popleft()
                if dropped.audio:
                    heir = self._items[0] if self._items else item
                    heir.audio[:0] = dropped.audio
                    dropped.audio = []
            self._append(item)
            return dropped

    def _append(self, item: FrameItem) -> None:
        self._items.append(item)
        self.max_depth = max(self.max_depth, len(self._items))
        self._cond.notify_all()

    def wait_room(self) -> None:
        """Wait until put() would not block (a single producer can then take its next
        input knowing it can hand the result on at once). Raises QueueClosed on abort."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._items) < self.capacity or self._closed)
            if self._closed:
                raise QueueClosed(self.name)

    def get(self, timeout: float | None = None) -> FrameItem | None:
        """The oldest item; None once the producer ended and the queue is empty.

        Raises TimeoutError after `timeout` seconds without an item, QueueClosed on abort.
        """
        with self._cond:
            ok = self._cond.wait_for(lambda: self._items or self._ended or self._closed, timeout)
            if self._closed:
                raise QueueClosed(self.name)
            if not ok:
                raise TimeoutError(self.name)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def end(self) -> None:
        """The producer is done; consumers drain what is left, then get None."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def close(self) -> list[FrameItem]:
        """Abort: wake every waiter with QueueClosed; return the items still queued."""
        with self._cond:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return left
