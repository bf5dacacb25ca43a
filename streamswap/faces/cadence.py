"""How often the detector runs: every `detect_every` frames, and on a live input as rarely as
the measured times require (up to `max_detect_every`), tracking the faces in between.

A live source sends a frame every 1/fps seconds whatever the pipeline does; a detect stage
that takes longer than that per frame makes the capture ring drop frames. With the detector
running on one frame of N and tracking (landmarks from the previous crop, or the box held)
on the others, the stage's mean time per frame is (d + (N − 1)·t) / N for a detector call
of d seconds and a tracked frame of t. So N is the smallest value that keeps that mean
within HEADROOM of the frame interval, from running means of d and t measured in the run
(under the run's own CPU contention). N goes up as soon as the times require it (drops
are immediate) and back down one step at a time once the lower N has fitted for
SETTLE_S, so it does not flip at every slow frame. File inputs are not paced: there the
detector runs every `detect_every` frames, as configured.

The detect stage's own time is not the whole story on a small machine: when the stages
together need more CPU than there is (another process busy, a slow swap), frames are
dropped further up although the detect stage fits its interval. The stage sees those drops
as gaps in the source index; while more than DROP_LIMIT of the input is being dropped, N
rises one step per RAISE_S (the detector is the work that can be skipped), and it only comes
back down while (almost) nothing is dropped.
"""

from __future__ import annotations

import math
import time
from typing import Callable

HEADROOM = 0.85  # share of the frame interval the detect stage may plan to use
SETTLE_S = 2.0  # a lower N must have fitted this long before N steps down
WARMUP_CALLS = 2  # first detector calls (allocation, caches) are not representative
_ALPHA = 0.2  # running-mean weight of a new sample
DROP_LIMIT = 0.05  # share of input frames dropped above which N rises regardless of the times
RAISE_S = 1.0  # while drops go on, N rises at most one step per this long
_DROP_ALPHA = 0.05  # running-mean weight of one processed frame's drop sample


class DetectCadence:
    """Decides which frames run the detector; implements the adaptive N described above.

    `clock` is injectable so tests drive it with a fake one."""

    def __init__(
        self, detect_every: int = 1, max_detect_every: int = 4, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.base = max(1, detect_every)
        self.max = max(self.base, max_detect_every)
        self.every = self.base
        self.interval: float | None = None  # seconds between input frames when live
        self._clock = clock
        self._detect_s: float | None = None
        self._track_s: float | None = None
        self._detect_calls = 0
        self._fits_since: float | None = None  # when N − 1 started to fit
        self._started: float | None = None
        self._drop_rate = 0.0  # running share of the input dropped before this stage
        self._raised_at: float | None = None

    def set_live_rate(self, fps: float | None) -> None:
        """Adapt to a live input at `fps` frames a second; None: a file (fixed N)."""
        self.interval = 1.0 / fps if fps and fps > 0 else None
        self.every = self.base

    @property
    def adaptive(self) -> bool:
        return self.interval is not None and self.max > self.base

    def due(self, frame: int, last_detect: int | None) -> bool:
        """Does the stage's `frame`-th frame run the detector (the last one that did: the
        `last_detect`-th)? Counted in frames the stage processes, not source indices: on a
        live input dropped frames leave gaps in those, and N is about the stage's own load."""
        return last_detect is None or frame < last_detect or frame - last_detect >= self.every

    # --- measuring ----------------------------------------------------------------------
    def begin(self) -> None:
        """The detect stage starts a frame."""
        self._started = self._clock()

    def end(self, detect: bool) -> None:
        """The frame begun last is done (it ran the detector when `detect`): record its
        time and revise N."""
        if self._started is None:
            return
        self.record(detect, self._clock() - self._started)
        self._started = None

    def record(self, detect: bool, seconds: float) -> None:
        if detect:
            self._detect_calls += 1
            if self._detect_calls <= WARMUP_CALLS:
                return
            self._detect_s = _mean(self._detect_s, seconds)
        else:
            self._track_s = _mean(self._track_s, seconds)
        if self.adaptive:
            self._revise()

    def record_input(self, skipped: int) -> None:
        """The frame about to be processed came after `skipped` source frames that were
        dropped before reaching this stage (0 when none)."""
        dropped = max(skipped, 0) / (max(skipped, 0) + 1)
        self._drop_rate += _DROP_ALPHA * (dropped - self._drop_rate)

    def needed(self) -> int:
        """The smallest N whose mean time per frame fits the frame interval (bounded)."""
        if self.interval is None or self._detect_s is None:
            return self.base
        budget = HEADROOM * self.interval
        d, t = self._detect_s, self._track_s if self._track_s is not None else 0.0
        if d <= budget:
            return self.base
        if t >= budget:
            return self.max
        return min(self.max, max(self.base, math.ceil((d - t) / (budget - t))))

    def _revise(self) -> None:
        need = self.needed()
        now = self._clock()
        dropping = self._drop_rate > DROP_LIMIT
        if dropping and self.every < self.max and (self._raised_at is None or now - self._raised_at >= RAISE_S):
            need = max(need, self.every + 1)
        if need > self.every:
            self.every = need
            self._fits_since = None
            self._raised_at = now
        elif need < self.every and self._drop_rate < DROP_LIMIT / 5:
            if self._fits_since is None:
                self._fits_since = now
            elif now - self._fits_since >= SETTLE_S:
                self.every -= 1
                self._fits_since = now
        else:
            self._fits_since = None

    def snapshot(self) -> dict[str, object]:
        """For status and the stats line."""
        return {
            "detect_every": self.every,
            "detect_adaptive": self.adaptive,
            "detect_call_ms": None if self._detect_s is None else round(self._detect_s * 1000, 1),
            "track_ms": None if self._track_s is None else round(self._track_s * 1000, 1),
            "input_dropped_share": round(self._drop_rate, 3),
        }


def _mean(current: float | None, sample: float) -> float:
    return sample if current is None else current + _ALPHA * (sample - current)
