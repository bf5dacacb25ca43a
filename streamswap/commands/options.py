"""Command-line options shared by `run` and `serve`: the video flags (--size, --fps,
--encoder, --bitrate) and how they become dotted config overrides."""

from __future__ import annotations

import argparse
import re
from dataclasses import fields
from typing import Any

from streamswap.errors import InputError


def _io_choices(key: str) -> tuple[str, ...]:
    """The values the config accepts for io.`key` (one list, kept by io/settings.py)."""
    from streamswap.io.settings import IoSettings

    for f in fields(IoSettings):
        if f.name == key:
            return tuple(f.metadata.get("choices", ()))
    return ()


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720); InputError naming the flag otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise InputError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720")
    width, height = int(match[1]), int(match[2])
    from streamswap.io.base import MAX_FRAME_SIDE, MIN_FRAME_SIDE

    if not (MIN_FRAME_SIDE <= width <= MAX_FRAME_SIDE and MIN_FRAME_SIDE <= height <= MAX_FRAME_SIDE):
        raise InputError(f"--size {text}: each side must be {MIN_FRAME_SIDE} to {MAX_FRAME_SIDE} pixels")
    if width % 2 or height % 2:
        raise InputError(
            f"--size {text}: width and height must be even (H.264 4:2:0), e.g. "
            f"{width - width % 2}x{height - height % 2}"
        )
    return width, height


def parse_bitrate(text: str) -> int:
    """'4000', '4000k', '4M', '2.5Mbps' -> kbit/s."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)(?:bps|b/s|bit/s)?\s*", text)
    if not match:
        raise InputError(f"--bitrate {text!r}: expected kbit/s (4000) or a unit (4000k, 4M)")
    value = float(match[1]) * (1000 if match[2].lower() == "m" else 1)
    return int(round(value))


def add_video_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("video (override the config's io section)")
    group.add_argument(
        "--size",
        metavar="WxH",
        help="frame size of the whole run, e.g. 1280x720 (io.width/io.height; default: the input's)",
    )
    group.add_argument(
        "--fps",
        type=float,
        metavar="N",
        help="frame rate (io.fps): cameras are asked for it; files and streams are "
        "converted to it (frames dropped or repeated by timestamp); default: the input's",
    )
    # Checked when the command runs (the accepted names live in io/settings.py, whose
    # import would load the YAML machinery at parse time).
    group.add_argument(
        "--encoder", metavar="NAME", help="H.264 encoder of file and rtmp:// outputs (io.encoder), e.g. libx264"
    )
    group.add_argument(
        "--bitrate",
        metavar="RATE",
        help="video bitrate of rtmp:// outputs, and of files too (instead of constant "
        "quality): kbit/s or with a unit, e.g. 6000 or 6M (io.bitrate_kbps)",
    )
    group.add_argument(
        "--crf",
        type=int,
        metavar="N",
        help="constant quality of file outputs, 0-51, lower is better and larger (io.crf; default 20)",
    )


def video_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted config keys the video flags set (absent flags set nothing)."""
    out: dict[str, Any] = {}
    if getattr(args, "size", None):
        out["io.width"], out["io.height"] = parse_size(args.size)
    if getattr(args, "fps", None) is not None:
        if args.fps <= 0:
            raise InputError(f"--fps {args.fps:g}: must be positive")
        out["io.fps"] = args.fps
    if getattr(args, "encoder", None):
        allowed = _io_choices("encoder")
        if allowed and args.encoder not in allowed:
            raise InputError(f"--encoder {args.encoder}: use one of {', '.join(allowed)}")
        out["io.encoder"] = args.encoder
    if getattr(args, "bitrate", None):
        if getattr(args, "crf", None) is not None:
            raise InputError("--bitrate and --crf: give one (a fixed bitrate, or a constant quality for files)")
        out["io.bitrate_kbps"] = parse_bitrate(args.bitrate)
    if getattr(args, "crf", None) is not None:
        out["io.crf"] = args.crf
    return out


def apply_video_flags(config: Any, args: argparse.Namespace) -> Any:
    """What an override cannot say: --bitrate also turns files from constant quality
    (io.crf) to that fixed bitrate, so the flag is honoured for every output."""
    if getattr(args, "bitrate", None):
        config.io.crf = None
    return config
