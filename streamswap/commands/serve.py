"""`streamswap serve`: the long-running daemon (systemd service, control API, metrics)."""

from __future__ import annotations

import argparse
from typing import Any

from streamswap.commands.options import add_video_options, apply_video_flags, video_overrides

HELP = "run as a daemon: stream until stopped, with a control API, metrics and systemd notify"
EXAMPLES = (
    "streamswap serve -s face.jpg -i /dev/video0 -o vcam://    # then open http://127.0.0.1:8008/",
    "streamswap serve -c configs/jetson-orin.yaml               # as the systemd unit runs it",
    "streamswap serve -i rtsp://cam/stream -o rtmp://live.example/app/KEY --size 1280x720 --bitrate 4M",
    "STREAMSWAP_API_TOKEN=$(openssl rand -hex 32) streamswap serve --api 0.0.0.0:8008 -o vcam://",
    "curl -X POST --data-binary @face.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8008/source",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        "-s",
        action="append",
        metavar="IMAGE",
        help="face image whose identity is swapped in (repeat for several; overrides `source`)",
    )
    parser.add_argument(
        "--input",
        "-i",
        metavar="URI",
        help="input URI (overrides `input`), e.g. v4l2:///dev/video0; "
        "a file is played at its frame rate and started again when it ends",
    )
    parser.add_argument(
        "--output",
        "-o",
        action="append",
        metavar="URI",
        help="output URI (repeat for several; overrides `outputs`), e.g. vcam:// or rtmp://host/app/key",
    )
    parser.add_argument(
        "--api",
        metavar="HOST:PORT",
        help="control API address (overrides service.api; default 127.0.0.1:8008); "
        "any address but 127.0.0.1/::1/localhost needs service.token or $STREAMSWAP_API_TOKEN",
    )
    parser.add_argument("--no-api", action="store_true", help="run without the control API")
    add_video_options(parser)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted config overrides given on the command line (kept for every reload)."""
    return {
        "source": args.source,
        "input": args.input,
        "outputs": args.output,
        "service.api": args.api,
        **video_overrides(args),
    }


def run(args: argparse.Namespace, ctx: Any) -> int:
    more = overrides(args)

    def load() -> Any:
        from streamswap.wiring import apply_cpu_budget

        config = apply_video_flags(ctx.config(**more), args)
        if config.io.existing_output == "auto":
            # A daemon restarts (after a crash, a reload, a reboot): an output file from the
            # previous run is moved aside, never overwritten, never a reason not to start.
            config.io.existing_output = "rename"
        if args.no_api:
            config.service.api = None
        return apply_cpu_budget(config)  # the daemon always builds the face stages

    # The daemon (HTTP server, metrics, the pipeline) is imported when the command runs, so
    # that `streamswap --help` and a mistyped option answer at once.
    from streamswap.service import daemon as daemon_module

    config = load()
    # Looked up at call time: tests substitute `build_stages` on this module.
    return daemon_module.Daemon(
        config,
        load,
        build_stages=lambda c, extend: build_stages(c, extend),
        make_pipeline=make_pipeline,
        check_endpoints=check_endpoints,
    ).run()


# Each engine-build report (the builder sends a heartbeat every few seconds while a
# TensorRT engine builds) buys this much more start-up time from systemd.
ENGINE_BUILD_EXTEND_S = 90.0


def build_stages(config: Any, extend_timeout: Any) -> Any:
    """The configured face stages (built even without a source face, so one can be
    uploaded later through POST /source), with TensorRT engine-build progress turned into
    EXTEND_TIMEOUT_USEC so a first start that builds engines is not killed. Module-level
    so tests can substitute their own."""
    from streamswap.wiring import build_face_stages, default_pool

    pool = default_pool(config)

    def on_build(progress: Any) -> None:
        what = " ".join(str(x) for x in (progress.model, progress.phase) if x)
        extend_timeout(ENGINE_BUILD_EXTEND_S, what or None)

    pool.progress = on_build
    return build_face_stages(config, pool=pool)


def check_endpoints(config: Any) -> None:
    """Every problem with the configured input/outputs at once (nothing is opened)."""
    from streamswap.wiring import plan_endpoints

    plan_endpoints(config, live=True, loop=True)


def make_pipeline(config: Any, stages: Any, observers: Any) -> Any:
    """A pipeline over the configured input and outputs. A daemon streams in real time: a
    file input is a stand-in for a camera, played at its own frame rate and looped (the
    outputs stay open across loops: one recording, one RTMP publication)."""
    from streamswap.wiring import build_pipeline, plan_endpoints

    endpoints = plan_endpoints(config, live=True, loop=True)
    return build_pipeline(
        config, stages.stages, source=endpoints.source, sinks=endpoints.sinks, observers=observers, gpu=stages.gpu
    )
