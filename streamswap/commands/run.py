"""`streamswap run`: swap faces from an input URI to one or more output URIs until the
input ends or Ctrl-C / SIGTERM (then: stop reading, drain, finalise files, close streams)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

from streamswap.errors import StreamswapError
from streamswap.logs import kv

# The pipeline (numpy, PyAV) is imported when the command runs, so that `streamswap --help`
# and a mistyped option answer at once.
if TYPE_CHECKING:
    from streamswap.pipeline.runtime import Runtime
    from streamswap.pipeline.stages import FaceStages

HELP = "swap faces live: --source FACE.jpg --input URI --output URI [--output URI …]"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s", "--source", action="append", metavar="FACE", dest="sources",
        help="face photo whose identity is put on the video (repeat to average several); "
        "without it frames pass through unchanged",
    )
    parser.add_argument(
        "-i", "--input", metavar="URI",
        help="v4l2:///dev/video0, rtsp://…, rtmp://…, file.mp4, test:// (default: config `input`)",
    )
    parser.add_argument(
        "-o", "--output", action="append", metavar="URI", dest="outputs",
        help="vcam://, rtmp://host/app/key, out.mp4, display://, null:// (repeatable; "
        "default: config `outputs`)",
    )
    parser.add_argument("--config", metavar="FILE", dest="run_config",
                        help="YAML config file (same as the global -c)")
    live = parser.add_mutually_exclusive_group()
    live.add_argument("--live", dest="live", action="store_true", default=None,
                      help="treat the input as live: pace files at their frame rate, drop the "
                      "oldest frame when the pipeline is full")
    live.add_argument("--no-live", dest="live", action="store_false",
                      help="lossless: the reader waits for the pipeline (default for files)")
    parser.add_argument("--quiet", action="store_true", help="no live stats line")
    parser.add_argument("-y", "--overwrite", action="store_true",
                        help="replace output files that already exist (default: refuse, like ffmpeg "
                        "without -y); an output that is the input or a source photo is always refused")


def run(args: argparse.Namespace, ctx: Any) -> int:
    if args.run_config:
        ctx = dataclasses.replace(ctx, config_path=args.run_config)
    overrides: dict[str, Any] = {}
    if args.sources:
        overrides["source"] = list(args.sources)
    if args.input:
        overrides["input"] = args.input
    if args.outputs:
        overrides["outputs"] = list(args.outputs)
    if args.overwrite:
        overrides["io.existing_output"] = "overwrite"
    from streamswap.io.uri import open_source
    from streamswap.wiring import FACE_COMPUTE_STAGES, apply_cpu_budget, build_runtime, open_sinks

    config = ctx.config(**overrides)
    config = apply_cpu_budget(config, FACE_COMPUTE_STAGES if config.source else 0)

    # A mistyped input or output is reported before the models load (seconds).
    source = open_source(config.input, config.io, live=args.live)
    sinks = open_sinks(config)
    stages = build_stages(config)
    runtime = build_runtime(config, stages, source=source, sinks=sinks)
    return run_until_done(runtime, quiet=args.quiet, label="run")


def build_stages(config: Any) -> FaceStages:
    """The face processor for `config.source`, or pass-through when no face was given."""
    if not config.source:
        from streamswap.pipeline.runtime import PassThroughStages

        log.warning("no --source face given: frames pass through unchanged")
        return PassThroughStages()
    from streamswap.wiring import build_face_processor

    processor = build_face_processor(config)
    processor.set_source_images(list(config.source))
    return processor


class _Signals:
    """First Ctrl-C / SIGTERM: graceful stop (drain, finalise). Second: stop now."""

    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def handle(self, signum: int, _frame: Any) -> None:
        self.count += 1
        self.event.set()


@contextmanager
def _signal_handlers(signals: _Signals) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signals.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StatsPrinter:
    """One updating line on a terminal, a log record per interval otherwise."""

    def __init__(self, stream: Any = None, render: Callable[[dict[str, Any]], str] | None = None) -> None:
        if render is None:
            from streamswap.pipeline.stats import format_stats_line as render
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.render = render
        self._shown = False

    def show(self, snap: dict[str, Any]) -> None:
        line = self.render(snap)
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            self._shown = True
        else:
            log.info("stats", extra=kv(**_flat(snap)))

    def done(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


def _flat(snap: dict[str, Any]) -> dict[str, Any]:
    out = {k: snap[k] for k in ("frames_in", "frames_out", "dropped", "fps_in", "fps_out",
                                "latency_ms_p50", "latency_ms_p95")}
    out.update({f"{k}_ms": v for k, v in snap.get("stage_ms", {}).items()})
    errors = sum(snap.get("errors", {}).values())
    if errors:
        out["errors"] = errors
    reconnects = sum(snap.get("reconnects", {}).values())
    if reconnects:
        out["reconnects"] = reconnects
    return out


def _start(runtime: Runtime, signals: _Signals) -> bool:
    """runtime.start() on a helper thread, so that an interrupt still answers while a slow
    input or output is being opened (network timeouts): the first asks the runtime to stop
    as soon as it is up (nothing is read, outputs are finalised), a second gives up at
    once (False). Raises what start() raised."""
    failed: list[BaseException] = []

    def start() -> None:
        try:
            runtime.start()
        except BaseException as exc:  # re-raised in the calling thread
            failed.append(exc)
        finally:
            signals.event.set()

    opener = threading.Thread(target=start, name="streamswap-open", daemon=True)
    opener.start()
    asked = False
    while opener.is_alive():
        signals.event.wait()
        signals.event.clear()
        if signals.count >= 2:
            return False
        if signals.count == 1 and not asked:
            asked = True
            log.warning("stopping once the input and outputs are open (interrupt again to quit now)")
            runtime.request_stop()
    opener.join()
    if failed:
        raise failed[0]
    return True


def run_until_done(
    runtime: Runtime, *, quiet: bool = False, label: str = "run",
    printer: StatsPrinter | None = None,
) -> int:
    """Start, show stats until the input ends or a signal asks to stop, then finalise.

    Returns 0 after a normal end or a requested stop; raises the input's StreamswapError
    when the input failed (nonexistent file, lost for good, …)."""
    signals = _Signals()
    printer = printer or StatsPrinter()
    interval = runtime.settings.stats_interval
    with _signal_handlers(signals):
        if not _start(runtime, signals):
            printer.done()
            log.warning("second interrupt while opening the input/outputs: exiting at once")
            return 130
        drain_until: float | None = None  # monotonic deadline of the drain after a signal
        while not runtime.wait(min(interval, 0.25) if signals.count else interval):
            if signals.count >= 2:
                printer.done()
                log.warning("second interrupt: stopping without draining")
                runtime.stop(drain=False)
                break
            if signals.count == 1:
                if drain_until is None:
                    printer.done()
                    log.info("stopping: draining frames in flight, finalising outputs")
                    runtime.request_stop()
                    drain_until = time.monotonic() + runtime.settings.drain_timeout
                elif time.monotonic() > drain_until:
                    log.warning("drain timed out; dropping in-flight frames",
                                extra=kv(seconds=runtime.settings.drain_timeout))
                    runtime.stop(drain=False)
                    break
                continue
            if not quiet:
                printer.show(runtime.status())
    printer.done()
    snap = runtime.status()
    summary = (f"{label}: {snap['frames_out']} frames out of {snap['frames_in']} read, "
               f"{snap['dropped']} dropped, {sum(snap['errors'].values())} errors")
    print(summary, file=sys.stderr)
    error = runtime.input_error
    if error is not None and not signals.count:
        if isinstance(error, StreamswapError):
            raise error
        return 1
    return 0
