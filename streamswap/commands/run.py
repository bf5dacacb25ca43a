"""`streamswap run`: swap faces from an input URI to one or more output URIs until the
input ends or Ctrl-C / SIGTERM (then: stop reading, drain, finalise files, close streams)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from streamswap.commands.options import add_video_options, apply_video_flags, video_overrides
from streamswap.commands.progress import LOG_EVERY_S, ProgressPrinter, StatsPrinter
from streamswap.errors import InputError, StreamswapError
from streamswap.logs import kv

# The pipeline (numpy, PyAV) is imported when the command runs, so that `streamswap --help`
# and a mistyped option answer at once.
if TYPE_CHECKING:
    from streamswap.faces.stages import FaceStageSet
    from streamswap.pipeline.pipeline import Pipeline

HELP = "swap faces live: --source FACE.jpg --input URI --output URI [--output URI …]"
EXAMPLES = (
    "streamswap run -s face.jpg -i /dev/video0 -o vcam://           # webcam into a virtual camera",
    "streamswap run -s face.jpg -i /dev/video0 -o vcam:// --ui      # and the control page on http://127.0.0.1:8008/",
    "streamswap run -s face.jpg -i in.mp4 -o out.mp4                # a file, every frame, with a progress bar",
    "streamswap run -s face.jpg -i in.mp4 -o out.mp4 --size 1280x720 --fps 25 --bitrate 6M",
    "streamswap run -s face.jpg -i rtsp://cam/stream -o rtmp://live.example/app/KEY -o display://",
    "streamswap run -c configs/desktop-gpu.yaml --debug",
)

log = logging.getLogger(__name__)

# Output kinds that consume frames in real time: a generated test:// input is paced for
# them, and read as fast as possible (losing nothing) when only files are written.
_REALTIME_OUTPUTS = ("network", "vcam", "display", "null")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s",
        "--source",
        action="append",
        metavar="FACE",
        dest="sources",
        help="face photo whose identity is put on the video (repeat to average several); "
        "without it frames pass through unchanged",
    )
    parser.add_argument(
        "-i",
        "--input",
        metavar="URI",
        help="v4l2:///dev/video0, rtsp://…, rtmp://…, file.mp4, test:// (default: config `input`, "
        "else the test pattern test://; `streamswap cameras` lists cameras)",
    )
    parser.add_argument(
        "-o",
        "--output",
        action="append",
        metavar="URI",
        dest="outputs",
        help="vcam://, rtmp://host/app/key, out.mp4, display://, null:// (repeatable; "
        "default: config `outputs`, else null://, which discards; a file input needs one)",
    )
    live = parser.add_mutually_exclusive_group()
    live.add_argument(
        "--live",
        dest="live",
        action="store_true",
        default=None,
        help="treat the input as live: pace files at their frame rate, drop the oldest frame when the pipeline is full",
    )
    live.add_argument(
        "--no-live",
        dest="live",
        action="store_false",
        help="lossless: the reader waits for the pipeline (default for files, and "
        "for test:// when every output is a file)",
    )
    add_video_options(parser)
    parser.add_argument(
        "--ui",
        action="store_true",
        help="also serve the control page (live preview, pause, face upload, stats) and "
        "the control API on service.api, default http://127.0.0.1:8008/",
    )
    parser.add_argument("--api", metavar="HOST:PORT", help="address of --ui (overrides service.api)")
    parser.add_argument("--quiet", action="store_true", help="no stats line or progress bar")
    parser.add_argument(
        "--stats-json",
        metavar="FILE",
        help="at the end, write the final statistics (frames, fps, latency p50/p95, errors by stage) to FILE as JSON",
    )
    parser.add_argument(
        "-y",
        "--overwrite",
        action="store_true",
        help="replace output files that already exist (default: refuse, like ffmpeg "
        "without -y); an output that is the input or a source photo is always refused",
    )
    parser.add_argument(
        "--log-every",
        type=float,
        default=LOG_EVERY_S,
        metavar="SECONDS",
        help=f"without a terminal: seconds between progress/stats log lines (default: {LOG_EVERY_S:g})",
    )


def run(args: argparse.Namespace, ctx: Any) -> int:
    if args.log_every <= 0:
        raise InputError(f"--log-every {args.log_every:g}: must be positive")
    overrides: dict[str, Any] = video_overrides(args)
    if args.sources:
        overrides["source"] = list(args.sources)
    if args.input:
        overrides["input"] = args.input
    if args.outputs:
        overrides["outputs"] = list(args.outputs)
    if args.overwrite:
        overrides["io.existing_output"] = "overwrite"
    if args.api:
        overrides["service.api"] = args.api
    from streamswap.io.uri import input_kind, output_kind
    from streamswap.wiring import FACE_COMPUTE_STAGES, apply_cpu_budget, build_pipeline, plan_endpoints

    config = apply_video_flags(ctx.config(**overrides), args)
    config = apply_cpu_budget(config, FACE_COMPUTE_STAGES if config.source else 0)

    in_config = ctx.file_keys()
    live = args.live
    kind = input_kind(config.input)
    outputs_given = bool(args.outputs) or "outputs" in in_config
    if not outputs_given and kind == "file" and live is not True:
        raise InputError(
            f"no output given: every frame of {config.input} would be processed and thrown away "
            "(the default output is null://); add -o out.mp4 (or -o vcam://, -o rtmp://…), "
            "or -o null:// to only measure the speed"
        )
    input_given = bool(args.input) or "input" in in_config
    if (
        not input_given
        and kind == "test"
        and outputs_given
        and all(output_kind(uri) == "file" for uri in config.outputs)
    ):
        raise InputError(
            f"no input given: the default input {config.input} (a test pattern) never ends, so "
            f"{', '.join(config.outputs)} would grow until Ctrl-C; give -i (a file, camera or stream "
            "URL), or -i 'test://?frames=300' for a 10 s test clip"
        )
    if not input_given:
        log.warning(
            f"no -i given: using the input {config.input} (a generated test pattern); "
            "give -i /dev/video0, a file or a stream URL (`streamswap cameras` lists cameras)"
        )
    if not outputs_given:
        log.warning(
            f"no -o given: frames go to {', '.join(config.outputs)} and are discarded; "
            "give -o vcam://, -o out.mp4 or -o rtmp://host/app/key (Ctrl-C stops)"
        )
    if live is None and kind == "test" and not any(output_kind(uri) in _REALTIME_OUTPUTS for uri in config.outputs):
        live = False  # only files written: every generated frame, as fast as it goes
    # A mistyped input or output, or a source photo that is missing or not a regular file
    # (a FIFO, /dev/zero), is reported before the models load (seconds).
    from streamswap.files import check_regular

    for src in config.source:
        check_regular(Path(src).expanduser(), "source photo")
    endpoints = plan_endpoints(config, live=live)  # every problem with them at once
    source = endpoints.source
    face = build_stages(config)
    stages, gpu = (face.stages, face.gpu) if face else ([], None)
    if not args.ui:
        pipeline = build_pipeline(config, stages, source=source, sinks=endpoints.sinks, gpu=gpu)
        code = run_until_done(pipeline, quiet=args.quiet, label="run", printer=_printer(pipeline, source, args))
    else:
        from streamswap.service.metrics import Metrics
        from streamswap.service.ui import PageParts, serve_page

        parts, metrics = PageParts(config.service), Metrics()
        pipeline = build_pipeline(
            config, stages, source=source, sinks=endpoints.sinks, observers=[metrics, parts.tap], gpu=gpu
        )
        parts.start()
        try:
            with serve_page(pipeline, face, config, parts, metrics):
                code = run_until_done(pipeline, quiet=args.quiet, label="run", printer=_printer(pipeline, source, args))
        finally:
            parts.close()
    if args.stats_json:
        import json

        Path(args.stats_json).write_text(json.dumps(pipeline.status(), default=str, indent=1))
    return code


def _printer(pipeline: Pipeline, source: Any, args: argparse.Namespace) -> ProgressPrinter:
    """A progress bar when the input is a file read losslessly (its frame count is known)."""
    from streamswap.io.base import KnowsLength

    return ProgressPrinter(
        lambda: source.frames_total if isinstance(source, KnowsLength) and not pipeline.live else None,
        log_every=args.log_every,
    )


def build_stages(config: Any) -> FaceStageSet | None:
    """The face stages for `config.source`, or none (frames pass through) without a face."""
    if not config.source:
        log.warning("no --source face given: frames pass through unchanged")
        return None
    from streamswap.wiring import build_face_stages

    face = build_face_stages(config)
    face.set_source_images(list(config.source))
    return face


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


def _start(runtime: Pipeline, signals: _Signals) -> bool:
    """runtime.start() on a helper thread, so that an interrupt still answers while a slow
    input or output is being opened (network timeouts): the first asks the runtime to stop
    as soon as it is up (nothing is read, outputs are finalised) and waits for that at most
    pipeline.drain_timeout; a second, or an open that outlasts that deadline (a device
    that never answers), gives up at once (False). Raises what start() raised."""
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
    give_up_at: float | None = None  # monotonic deadline once the first interrupt came
    while opener.is_alive():
        # Short waits: a signal that landed on another thread runs its handler only when
        # this (main) thread next runs Python code.
        timeout = 0.25 if give_up_at is None else min(max(give_up_at - time.monotonic(), 0.0), 0.25)
        signals.event.wait(timeout)
        signals.event.clear()
        if signals.count >= 2:
            log.warning("second interrupt while opening the input/outputs: exiting at once")
            return False
        if signals.count == 1 and give_up_at is None:
            give_up_at = time.monotonic() + runtime.settings.drain_timeout
            log.warning("stopping once the input and outputs are open (interrupt again to quit now)")
            runtime.request_stop()
        elif give_up_at is not None and time.monotonic() >= give_up_at and opener.is_alive():
            log.warning(
                "the input/outputs are still opening after the drain deadline: exiting now",
                extra=kv(seconds=runtime.settings.drain_timeout),
            )
            return False
    opener.join()
    if failed:
        raise failed[0]
    return True


def run_until_done(
    runtime: Pipeline,
    *,
    quiet: bool = False,
    label: str = "run",
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
                    log.warning(
                        "drain timed out; dropping in-flight frames", extra=kv(seconds=runtime.settings.drain_timeout)
                    )
                    runtime.stop(drain=False)
                    break
                continue
            if not quiet:
                printer.show(runtime.status())
    printer.done()
    snap = runtime.status()
    summary = (
        f"{label}: {snap['frames_out']} frames out of {snap['frames_in']} read, "
        f"{snap['dropped']} dropped, {sum(snap['errors'].values())} errors"
    )
    print(summary, file=sys.stderr)
    error = runtime.input_error
    if error is not None and not signals.count:
        if isinstance(error, StreamswapError):
            raise error
        return 1
    failed = [stage for stage, n in snap["errors"].items() if snap["frames_in"] and n >= snap["frames_in"]]
    if failed:  # a run that produced nothing useful is not a success
        print(
            f"{label}: every frame failed in the {', '.join(failed)} stage; see the first error above", file=sys.stderr
        )
        return 1
    return 0
