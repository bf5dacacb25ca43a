"""Tee frames to several outputs at once."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from streamswap.errors import OutputError
from streamswap.io.base import AudioFormat, FrameMeta, Sink, VideoFormat
from streamswap.logs import kv

log = logging.getLogger(__name__)


class SinkSet:
    """Several sinks behind one `io.base.Sink`.

    Network outputs come wrapped in `ReconnectingSink` (from `open_sink`), which never
    raises: a dropped stream reconnects in the background while the others keep going.
    Any other sink failing (a full disk, a vanished camera) is an error for the run.
    """

    def __init__(self, sinks: Sequence[Sink]) -> None:
        if not sinks:
            raise OutputError("no outputs given; add --output URI (e.g. null://, out.mp4, vcam://)")
        self.sinks = list(sinks)
        self.name = " + ".join(s.name for s in self.sinks)
        self._opened: list[Sink] = []

    def open(self, video: VideoFormat, audio: AudioFormat | None) -> None:
        try:
            for sink in self.sinks:
                sink.open(video, audio)
                self._opened.append(sink)
        except BaseException:
            self.close()
            raise

    def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
        for sink in self.sinks:
            sink.write(frame, meta)

    def write_audio(self, packets: list[Any]) -> None:
        if packets:
            for sink in self.sinks:
                sink.write_audio(packets)

    def close(self) -> None:
        """Close every opened sink; the first failure is raised after all were tried."""
        first: BaseException | None = None
        opened, self._opened = self._opened, []
        for sink in opened:
            try:
                sink.close()
            except Exception as exc:
                log.error("closing output failed", extra=kv(output=sink.name, error=str(exc)))
                first = first or exc
        if first is not None:
            raise first

    def per_output_counters(self) -> dict[str, dict[str, int]]:
        """Per-output counters (frames, dropped, reconnects, ...), keyed by output name."""
        return {s.name: dict(getattr(s, "counters", {})) for s in self.sinks}
