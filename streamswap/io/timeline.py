"""One steady output timeline over a sequence of inner sources (a reconnected stream, a
looped file): frame indices count on, and each new inner source's first frame gets the
next pts, whatever its own clock says; its audio packets move by the same offset."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from streamswap.io.base import FrameMeta, VideoFormat


class Timeline:
    """The index and pts the outputs see, for `LoopingSource` and `ReconnectingSource`."""

    def __init__(self) -> None:
        self.format: VideoFormat | None = None  # the first inner source's: our time base
        self.index = 0
        self.next_pts = 0
        self.frame_ticks = 1  # one frame in pts ticks
        self._offset = 0  # added to the current inner source's pts (in our time base)
        self._audio_offset = Fraction(0)  # seconds added to its audio packets

    def start(self, fmt: VideoFormat) -> None:
        """The first inner source opened with `fmt`: its clock is ours."""
        self.format = fmt
        self.frame_ticks = max(int(round(1 / (fmt.fps * fmt.time_base))), 1)

    def continue_with(self, fmt: VideoFormat, first_pts: int | None) -> None:
        """A new inner source (format `fmt`, first frame at `first_pts`) follows on."""
        assert self.format is not None, "start() first"
        start = int((first_pts or 0) * fmt.time_base / self.format.time_base)
        self._offset = self.next_pts - start
        self._audio_offset = self._offset * self.format.time_base

    def stamp(self, meta: FrameMeta, fmt: VideoFormat) -> FrameMeta:
        """`meta` of a frame read from the inner source of format `fmt`, on our timeline
        (pts never step back)."""
        assert self.format is not None, "start() first"
        pts = meta.pts if meta.pts is not None else 0
        if fmt.time_base != self.format.time_base:
            pts = int(pts * fmt.time_base / self.format.time_base)
        pts = max(pts + self._offset, self.next_pts)
        self.next_pts = pts + self.frame_ticks
        meta.index, meta.pts = self.index, pts
        self.index += 1
        return meta

    def next_synthetic(self) -> tuple[int, int]:
        """(index, pts) of a frame made while no inner source plays."""
        index, pts = self.index, self.next_pts
        self.index += 1
        self.next_pts += self.frame_ticks
        return index, pts

    def shift_audio(self, packets: list[Any]) -> list[Any]:
        """The current inner source's audio packets, moved onto our timeline in place."""
        if self._audio_offset:
            for packet in packets:
                shift = int(self._audio_offset / packet.time_base)
                if packet.pts is not None:
                    packet.pts += shift
                if packet.dts is not None:
                    packet.dts += shift
        return packets
