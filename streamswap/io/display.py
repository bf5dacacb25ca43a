"""A preview window (OpenCV HighGUI) in a child process, and a sink that discards frames.

Why a child process: HighGUI in the pipeline's own process hangs for good inside
`cv2.namedWindow` at 100 % CPU once PyAV is loaded (PyAV's bundled libxcb against OpenCV's
Qt; PyAV issues #978/#1050), holding the GIL, so SIGTERM's handler never ran either. The
window runs in a spawned interpreter that never imports PyAV. Frames cross through one
shared-memory slot: the pipeline copies a frame in only when the slot is free (a try-lock,
never a wait) and otherwise drops it, so a slow or hung window costs the pipeline nothing;
at close the child gets a moment to go and is then killed.

This module is what the spawned child imports: keep PyAV (and anything importing it) out.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from streamswap.errors import OutputError
from streamswap.io.base import AudioFormat, FrameMeta, VideoFormat
from streamswap.logs import kv

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0  # the child starts an interpreter and imports OpenCV first
CLOSE_GRACE_S = 1.0  # then it is killed


@dataclass
class WindowChannel:
    """What parent and child share: the frame slot, its lock, and two counters.

    `posted` counts frames the parent put in the slot, `taken` the last one the child
    copied out; `stop` asks the child to close its window and end."""

    shape: tuple[int, int, int]
    slot: Any  # multiprocessing RawArray of H·W·3 bytes
    lock: Any
    posted: Any  # RawValue('q')
    taken: Any  # RawValue('q')
    stop: Any  # Event

    def frame(self) -> np.ndarray:
        return np.frombuffer(self.slot, dtype=np.uint8).reshape(self.shape)


def window_main(channel: WindowChannel, title: str, conn: Any) -> None:
    """The child: open the window, then show the newest posted frame until told to stop,
    the user closes the window or the parent is gone. Sends ("ready", "") or ("error",
    text) first, ("closed", "") when the user closed the window."""
    import cv2  # here, not at the top: the parent never needs HighGUI

    # Ctrl-C in a terminal reaches the whole process group: the run decides when the
    # window goes (close() sets `stop`), not a KeyboardInterrupt traceback in here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    h, w = channel.shape[:2]
    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        cv2.resizeWindow(title, w, h)
    except cv2.error as exc:
        conn.send(("error", str(exc).strip().splitlines()[-1]))
        return
    conn.send(("ready", ""))
    shared, local = channel.frame(), np.zeros(channel.shape, np.uint8)
    parent = multiprocessing.parent_process()  # killed (SIGKILL): no window left behind
    seen = 0
    while not channel.stop.is_set() and (parent is None or parent.is_alive()):
        if channel.posted.value != seen and channel.lock.acquire(timeout=0.1):
            try:
                np.copyto(local, shared)
                seen = channel.posted.value
                channel.taken.value = seen
            finally:
                channel.lock.release()
            cv2.imshow(title, local)
        cv2.waitKey(5)  # paints and handles window events
        if cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) < 1:
            conn.send(("closed", ""))
            return
    cv2.destroyAllWindows()


class DisplaySink:
    """Shows frames in a window run by a child process. Implements `io.base.Sink`.

    `write` never waits for the window: a frame the window has not taken yet is replaced
    by the next one (counted in `dropped`). `window` is the child's entry point (tests
    give one that hangs)."""

    def __init__(
        self,
        name: str = "display://",
        title: str = "streamswap",
        *,
        window: Callable[[WindowChannel, str, Any], None] = window_main,
        open_timeout_s: float = OPEN_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.title = title
        self.window = window
        self.open_timeout_s = open_timeout_s
        self._channel: WindowChannel | None = None
        self._frame: np.ndarray | None = None
        self._process: Any = None
        self._conn: Any = None
        self._gone = False
        self.counters: dict[str, int] = {"frames": 0, "dropped": 0}

    def open(self, video: VideoFormat, audio: AudioFormat | None) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise OutputError(
                f"{self.name}: no display (DISPLAY is not set); run it in a desktop session, "
                "or use vcam:// or a file output instead"
            )
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no PyAV, no threads
        shape = (video.height, video.width, 3)
        channel = WindowChannel(
            shape,
            ctx.RawArray("B", video.height * video.width * 3),
            ctx.Lock(),
            ctx.RawValue("q", 0),
            ctx.RawValue("q", 0),
            ctx.Event(),
        )
        receive, send = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=self.window, args=(channel, self.title, send), name="streamswap-display", daemon=True
        )
        process.start()
        # At exit, before multiprocessing's own handler (registered earlier, so run later)
        # waits for its children: a run that ends without close() leaves no hung window.
        atexit.register(process.kill)
        send.close()
        self._process, self._conn, self._channel = process, receive, channel
        try:
            kind, text = receive.recv() if receive.poll(self.open_timeout_s) else ("timeout", "")
        except (EOFError, OSError):  # Qt aborts the process it cannot give a window (above: why)
            process.join(CLOSE_GRACE_S)
            where = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "this desktop"
            kind, text = (
                "error",
                (
                    f"the window process ended with exit code {process.exitcode}; is {where} "
                    "a display this user may open windows on?"
                ),
            )
        if kind != "ready":
            self._end_child()
            if kind == "timeout":
                raise OutputError(
                    f"{self.name}: the preview window did not open within "
                    f"{self.open_timeout_s:g} s; use vcam://, a file or the browser preview"
                )
            raise OutputError(f"{self.name}: cannot open a window ({text}); use vcam:// or a file instead")
        self._frame = channel.frame()
        log.info("preview window opened", extra=kv(output=self.name, pid=process.pid))

    def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
        channel, shared = self._channel, self._frame
        if channel is None or shared is None or self._gone:
            return
        self.counters["frames"] += 1
        if not self._process.is_alive() or self._conn.poll():
            self._window_gone()
            return
        if not channel.lock.acquire(block=False):  # the child is copying: never wait for it
            self.counters["dropped"] += 1
            return
        try:
            if channel.taken.value != channel.posted.value:
                self.counters["dropped"] += 1  # the window never took the previous frame
            np.copyto(shared, frame)
            channel.posted.value += 1
        finally:
            channel.lock.release()

    def _window_gone(self) -> None:
        self._gone = True
        why = "closed" if self._process.exitcode in (0, None) else f"ended (exit code {self._process.exitcode})"
        log.warning(
            "preview window gone; the other outputs go on",
            extra=kv(output=self.name, window=why, frames=self.counters["frames"]),
        )

    def write_audio(self, packets: list[Any]) -> None:
        pass

    def close(self) -> None:
        if self._process is None:
            return
        self._end_child()
        log.info("output closed", extra=kv(output=self.name, **self.counters))

    def _end_child(self) -> None:
        """Ask the child to close its window; kill it when it does not end in time."""
        process, self._process = self._process, None
        atexit.unregister(process.kill)
        if self._channel is not None:
            self._channel.stop.set()
        self._channel = self._frame = None
        process.join(CLOSE_GRACE_S)
        if process.is_alive():
            log.warning("preview window did not close; killed", extra=kv(output=self.name))
            process.kill()
            process.join(CLOSE_GRACE_S)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class NullSink:
    """Discards frames (benchmarks, dry runs). Implements `io.base.Sink`."""

    def __init__(self, name: str = "null://") -> None:
        self.name = name
        self.counters: dict[str, int] = {"frames": 0, "audio_packets": 0}

    def open(self, video: VideoFormat, audio: AudioFormat | None) -> None:
        pass

    def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
        self.counters["frames"] += 1

    def write_audio(self, packets: list[Any]) -> None:
        self.counters["audio_packets"] += len(packets)

    def close(self) -> None:
        pass
