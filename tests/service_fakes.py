"""Test doubles for the service tests: a PipelineControl that makes frames on a thread,
face stages (a StageSet) whose identity is observable and that can be made to hang, a fake
NOTIFY_SOCKET. Used in-process (test_notify, test_api) and inside `streamswap serve`
subprocesses (test_serve, via serve_with_test_stages.py)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from streamswap.errors import NoFaceError

# Side of the square each swapped frame gets stamped with (top-left corner): big and flat
# enough to survive a lossy encoder, so a test can read the identity back from an output.
STAMP = 32


# Unequal pairs: a flat picture (or the test pattern) never reads as a stamp.
_LEVELS = ((50, 200), (200, 50), (90, 160), (160, 90))


def stamp_levels(generation: int) -> tuple[int, int]:
    """The grey levels (left block, right block) stamped by the `generation`-th identity
    (1-based; distinct for the first four)."""
    return _LEVELS[(generation - 1) % len(_LEVELS)]


def read_stamp(frame: np.ndarray, tolerance: int = 12) -> int | None:
    """The identity generation stamped into `frame` (BGR), or None when it carries none."""
    left = float(frame[4 : STAMP - 4, 4 : STAMP - 4].mean())
    right = float(frame[4 : STAMP - 4, STAMP + 4 : 2 * STAMP - 4].mean())
    for generation in range(1, len(_LEVELS) + 1):
        a, b = stamp_levels(generation)
        if abs(left - a) <= tolerance and abs(right - b) <= tolerance:
            return generation
    return None


class _Step:
    """One of RecordingStages' two pipeline stages (pipeline.stage.Stage)."""

    pausable = True

    def __init__(self, name: str, owner: "RecordingStages") -> None:
        from streamswap.pipeline.stage import ErrorPolicy

        self.name = name
        self.owner = owner
        self.error_policy = ErrorPolicy(clear_faces=name == "detect", restore_frame=name == "swap")

    def start(self, video: Any, live: bool) -> None:
        pass

    def process(self, frame: np.ndarray, item: Any) -> None:
        if self.name == "detect":
            item.faces = self.owner.detect(frame, item.meta.index)
        elif item.faces:
            self.owner.swap(frame, item.faces)

    def describe(self) -> dict[str, Any]:
        return {"source_identity": self.owner.source_names} if self.name == "swap" else {}

    def close(self) -> None:
        pass


class RecordingStages:
    """Face stages (a daemon StageSet) that 'find' one face per frame and stamp the current identity into the
    frame. The identity is a digest of the source image; an image without detail (one
    flat colour) stands for a photo without a face. Each new identity gets the next
    `generation`, stamped as two flat grey blocks (`stamp_levels`, read back with
    `read_stamp`). Hangs while `hang` is set (or while the file named by
    $STREAMSWAP_TEST_HANG exists)."""

    gpu = None  # its "networks" run on the CPU: plain frame slots

    def __init__(self) -> None:
        self.identity: str | None = None
        self.generation = 0
        self.frames_with_identity = 0
        self.swapped = 0
        self.hang = threading.Event()
        self.hang_file = os.environ.get("STREAMSWAP_TEST_HANG")
        self._forever = threading.Event()
        self.stages = [_Step("detect", self), _Step("swap", self)]
        self.people = None  # no faces.select / faces.map

    def close(self) -> None:
        pass

    def set_source_images(self, images: Sequence[Any]) -> None:
        arrays = [np.asarray(_load(i)) for i in images]
        if not arrays or any(float(a.std()) < 1.0 for a in arrays):
            raise NoFaceError("uploaded image: no face found; use a photo with a clearly visible face")
        self.identity = hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()[:16]
        self.generation += 1
        self.frames_with_identity = 0
        return [f"source image #{i + 1}" for i in range(len(arrays))]

    def release(self) -> None:
        """Let a hung stage return (test clean-up)."""
        self.hang.clear()
        self._forever.set()

    @property
    def source_names(self) -> list[str] | None:
        """What Pipeline.status() reports as `source_identity`: here the identity digest
        and how many frames were swapped with it (see `identity_of`)."""
        if self.identity is None:
            return None
        return [f"{self.identity} frames={self.frames_with_identity}"]

    def detect(self, frame: np.ndarray, index: int) -> Sequence[Any]:
        # A stage that does not return while told to hang: blocks on an Event (the file
        # variant re-checks it so a subprocess test can let go before stopping).
        while self.hang.is_set() or (self.hang_file and os.path.exists(self.hang_file)):
            if self._forever.wait(0.05 if self.hang_file else None):
                break
        return ("face",)

    def swap(self, frame: np.ndarray, faces: Sequence[Any]) -> None:
        self.swapped += 1
        if self.identity is not None:
            self.frames_with_identity += 1
            left, right = stamp_levels(self.generation)
            frame[:STAMP, :STAMP] = left
            frame[:STAMP, STAMP : 2 * STAMP] = right


def identity_of(status: dict[str, Any]) -> tuple[str | None, int]:
    """(identity digest, frames swapped with it) from a /status body of RecordingStages."""
    names = status.get("source_identity")
    if not names:
        return None, 0
    digest, _, frames = names[0].partition(" frames=")
    return digest, int(frames)


def _load(image: Any) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        from streamswap.io.images import read_image

        return read_image(image)
    return image


class FakePipeline:
    """Makes frames every `period` seconds through `stages` on a thread; implements the
    daemon's PipelineControl."""

    def __init__(
        self,
        config: Any,
        stages: Any,
        observers: Sequence[Any] = (),
        period: float = 0.01,
        fail_start: bool = False,
        max_frames: int | None = None,
    ) -> None:
        self.config, self.stages, self.observers = config, stages, list(observers)
        self.period = period
        self.fail_start = fail_start
        self.max_frames = max_frames  # the input "ends" (or is lost) after this many frames
        self._frames = 0
        self._paused = False
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.state = "created"

    def start(self) -> None:
        if self.fail_start:
            from streamswap.errors import InputError

            self.state = "failed"
            raise InputError("test://: cannot open (fake failure)")
        self.state = "running"
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        frame = np.zeros((16, 16, 3), np.uint8)
        i = 0
        while not self._stop.wait(self.period):
            t0 = time.monotonic()
            for o in self.observers:
                o.frame_in()
            faces = () if self._paused else self.stages.detect(frame, i)
            with self._lock:
                if faces:
                    self.stages.swap(frame, faces)
            for o in self.observers:
                o.stage_time("swap", time.monotonic() - t0)
                o.frame_out(time.monotonic() - t0)
            self._frames += 1
            i += 1
            if self.max_frames is not None and self._frames >= self.max_frames:
                break
        self.state = "stopped"
        self._done.set()

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        self._stop.set()
        self._done.wait(timeout if timeout is not None else 1.0)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "frames_out": self._frames,
            "paused": self._paused,
            "fps_out": 1 / self.period,
            "latency_ms_p50": 1.0,
            "dropped": 0,
            "errors": {},
            "source_identity": self.stages.source_names,
        }

    def frames_out(self) -> int:
        return self._frames

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False


class NotifyListener:
    """A fake $NOTIFY_SOCKET: an AF_UNIX datagram socket collecting messages."""

    def __init__(self, path: str | None = None, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"streamswap-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            assert path is not None
            self.sock.bind(path)
            self.address = path
        self.sock.settimeout(0.2)
        self._closed = False
        self.messages: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    def _recv(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                for line in data.decode().splitlines():
                    self.messages.append((time.monotonic(), line))
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 20.0) -> bool:
        """Wait until `predicate(lines)` holds for the lines received so far."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate([m for _, m in self.messages]), timeout)

    def lines(self, since: float = 0.0) -> list[str]:
        with self._cond:
            return [m for t, m in self.messages if t >= since]

    def close(self) -> None:
        self._closed = True
        self._thread.join(1.0)
        self.sock.close()
