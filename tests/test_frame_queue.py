"""Slots and frame queues: bounded depth, FIFO order, drop-oldest hands back the oldest frame."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamswap.io.base import FrameMeta
from streamswap.pipeline.frame_queue import FrameItem, FrameQueue, QueueClosed
from streamswap.pipeline.slots import NumpyAllocator, SlotPool, SlotPoolClosed


def item(i: int, audio: list | None = None) -> FrameItem:
    return FrameItem(slot=i, meta=FrameMeta(index=i, pts=i, capture_time=0.0), audio=audio or [])


def test_slot_pool_preallocates_and_recycles() -> None:
    pool = SlotPool(3, 4, 5, NumpyAllocator())
    assert len(pool) == 3 and pool[0].shape == (4, 5, 3) and pool[0].dtype == np.uint8
    ids = {id(pool[i]) for i in range(3)}
    taken = [pool.acquire(), pool.acquire(), pool.acquire()]
    assert sorted(taken) == [0, 1, 2] and pool.free == 0
    assert pool.acquire(timeout=0.01) is None
    pool.release(1)
    assert pool.acquire() == 1
    with pytest.raises(RuntimeError):
        pool.release(0)
        pool.release(0)
    assert {id(pool[i]) for i in range(3)} == ids  # the same buffers, never reallocated


def test_slot_pool_close_wakes_waiter() -> None:
    pool = SlotPool(1, 2, 2)
    pool.acquire()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            pool.acquire()
        except SlotPoolClosed as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    pool.close()
    t.join(5)
    assert not t.is_alive() and len(errors) == 1


def test_drop_oldest_keeps_bound_and_order_and_moves_audio() -> None:
    ring = FrameQueue(3)
    dropped = []
    for i in range(10):
        d = ring.put_drop_oldest(item(i, audio=[f"a{i}"]))
        if d is not None:
            dropped.append(d.meta.index)
        assert len(ring) <= 3
    assert dropped == [0, 1, 2, 3, 4, 5, 6]
    ring.end()
    out = []
    while (it := ring.get()) is not None:
        out.append(it)
    assert [it.meta.index for it in out] == [7, 8, 9]
    # every audio packet survives, in order, on the frames still queued
    assert [a for it in out for a in it.audio] == [f"a{i}" for i in range(10)]
    assert ring.max_depth == 3


def test_block_policy_loses_nothing_between_threads() -> None:
    ring = FrameQueue(2)
    n = 500
    got: list[int] = []
    depth_seen: list[int] = []

    def consumer() -> None:
        while (it := ring.get()) is not None:
            depth_seen.append(len(ring))
            got.append(it.meta.index)

    t = threading.Thread(target=consumer)
    t.start()
    for i in range(n):
        ring.put(item(i))
    ring.end()
    t.join(10)
    assert got == list(range(n))
    assert ring.max_depth <= 2 and max(depth_seen) <= 2


def test_close_wakes_blocked_producer_and_consumer() -> None:
    full = FrameQueue(1)
    full.put(item(0))
    empty = FrameQueue(1)
    raised: list[str] = []

    def produce() -> None:
        try:
            full.put(item(1))
        except QueueClosed:
            raised.append("put")

    def consume() -> None:
        try:
            empty.get()
        except QueueClosed:
            raised.append("get")

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    assert [it.meta.index for it in full.close()] == [0]
    empty.close()
    for t in threads:
        t.join(5)
    assert sorted(raised) == ["get", "put"]


def test_get_timeout() -> None:
    with pytest.raises(TimeoutError):
        FrameQueue(1).get(timeout=0.01)


def test_wait_room_returns_once_the_consumer_took_an_item_and_wakes_on_close() -> None:
    ring = FrameQueue(1)
    ring.wait_room()  # empty: at once
    ring.put(item(0))
    waiting = threading.Thread(target=ring.wait_room)
    waiting.start()
    waiting.join(0.05)
    assert waiting.is_alive()  # full: waits
    assert ring.get().meta.index == 0
    waiting.join(5)
    assert not waiting.is_alive()
    ring.put(item(1))
    raised: list[bool] = []

    def wait_then_close() -> None:
        try:
            ring.wait_room()
        except QueueClosed:
            raised.append(True)

    closer = threading.Thread(target=wait_then_close)
    closer.start()
    ring.close()
    closer.join(5)
    assert raised == [True]
