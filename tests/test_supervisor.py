"""PipelineSupervisor: opens the pipeline off the caller's thread, re-opens it with a
back-off that doubles while it keeps failing (capped), resets once frames flow, keeps
frames_out monotonic and a pause across pipelines; a bad URI is fatal, not retried."""

from __future__ import annotations

from typing import Any

from streamswap.errors import ConfigError, InputError
from streamswap.service.settings import ServiceSettings
from streamswap.service.supervisor import PipelineSupervisor


class Pipe:
    """A pipeline whose start fails, or which ran `frames` frames and ended."""

    def __init__(self, fail: BaseException | None = None, frames: int = 0) -> None:
        self.fail, self.frames, self.paused = fail, frames, False
        self.finished = False
        self.stopped = False

    def start(self) -> None:
        if self.fail is not None:
            raise self.fail
        self.finished = True  # ran its frames and ended (the input was lost for good)

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        self.stopped = True

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"state": "stopped" if self.frames else "failed", "frames_out": self.frames, "paused": self.paused}

    def frames_out(self) -> int:
        return self.frames

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False


def _supervisor(pipes: list[Pipe], fatal: list[BaseException] | None = None) -> PipelineSupervisor:
    queue = list(pipes)
    settings = ServiceSettings(restart_delay_s=1.0, restart_max_delay_s=4.0)
    return PipelineSupervisor(
        lambda: queue.pop(0), lambda: settings, wake=lambda: None, fatal=(fatal if fatal is not None else []).append
    )


def _opened(sup: PipelineSupervisor) -> None:
    assert sup._starter is not None
    sup._starter.join(5)


def test_back_off_doubles_while_failing_is_capped_and_resets_after_frames() -> None:
    down = InputError("rtsp://cam: cannot open input")
    pipes = [Pipe(down), Pipe(down), Pipe(down), Pipe(down), Pipe(frames=50), Pipe(down), Pipe(frames=1)]
    sup = _supervisor(pipes)
    sup.start()
    delays = []
    now = 0.0
    for _ in range(4):
        _opened(sup)
        sup.supervise(now)  # it never got going: schedule the next attempt
        assert sup.phase == "waiting" and sup.retry_at is not None
        delays.append(sup.retry_at - now)
        now = sup.retry_at
        sup.supervise(now - 0.01)
        assert sup.phase == "waiting"  # not before its time
        sup.supervise(now)  # re-opened
    assert delays == [1.0, 2.0, 4.0, 4.0]  # doubled, capped at restart_max_delay_s
    _opened(sup)  # this one streams 50 frames, then its input is lost for good
    sup.supervise(now)
    assert sup.phase == "starting" and sup.restarts == 5  # an input that ran: re-opened at once
    _opened(sup)
    sup.supervise(now)
    assert sup.retry_at == now + 1.0  # after frames flowed, the back-off starts over


def test_frames_out_stays_monotonic_and_a_pause_carries_over() -> None:
    first, second = Pipe(frames=30), Pipe(frames=12)
    sup = _supervisor([first, second])
    sup.start()
    _opened(sup)
    first.pause()
    assert sup.frames_out() == 30 and sup.paused
    sup.supervise(0.0)
    _opened(sup)
    assert sup.pipeline is second and second.paused  # the new pipeline starts paused
    assert sup.frames_out() == 42


def test_a_bad_uri_is_fatal_and_replace_stops_before_opening_again() -> None:
    fatal: list[BaseException] = []
    sup = _supervisor([Pipe(ConfigError("tset://x: unknown input scheme"))], fatal)
    sup.start()
    _opened(sup)
    assert fatal and isinstance(fatal[0], ConfigError)
    running, new = Pipe(frames=5), Pipe(frames=1)
    sup = _supervisor([running, new])
    sup.start()
    _opened(sup)
    sup.replace()
    _opened(sup)
    assert running.stopped and sup.pipeline is new
