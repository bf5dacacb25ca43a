"""A fixed pool of preallocated frame buffers ("slots"); frame queues pass slot indices around.

Nothing in the hot path allocates a frame-sized buffer: the pool is allocated once per
run, frames are decoded straight into a free slot and released after the sinks wrote it.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol

import numpy as np


class Allocator(Protocol):
    """Makes the slot buffers: plain numpy here, pinned CUDA host memory on the GPU path."""

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray: ...


class NumpyAllocator:
    """Ordinary (pageable) host memory."""

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)


class SlotPoolClosed(Exception):
    """The pool was closed while a thread waited for a free slot."""


class SlotPool:
    """`count` H×W×3 uint8 BGR buffers with a free list. Thread-safe."""

    def __init__(self, count: int, height: int, width: int, allocator: Allocator | None = None) -> None:
        if count < 1:
            raise ValueError("a slot pool needs at least one slot")
        allocator = allocator or NumpyAllocator()
        self.shape = (height, width, 3)
        self.buffers: list[np.ndarray] = [allocator.alloc(self.shape, np.uint8) for _ in range(count)]
        self._free: deque[int] = deque(range(count))
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self.buffers)

    def __getitem__(self, slot: int) -> np.ndarray:
        return self.buffers[slot]

    @property
    def free(self) -> int:
        with self._cond:
            return len(self._free)

    def acquire(self, timeout: float | None = None) -> int | None:
        """A free slot index; waits for one (None on timeout). Raises SlotPoolClosed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._free or self._closed, timeout):
                return None
            if self._closed:
                raise SlotPoolClosed
            return self._free.popleft()

    def release(self, slot: int) -> None:
        with self._cond:
            if slot in self._free:
                raise RuntimeError(f"slot {slot} released twice")
            self._free.append(slot)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
