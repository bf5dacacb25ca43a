"""`streamswap cameras`: the cameras this machine has, with their formats, and the
--input URI for each."""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "list the cameras (names, pixel formats, sizes, frame rates) and the --input URI of each"
EXAMPLES = (
    "streamswap cameras",
    "streamswap cameras --all        # also metadata nodes and virtual (v4l2loopback) cameras",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--all",
        action="store_true",
        help="also list devices that do not capture (metadata nodes, outputs) and v4l2loopback virtual cameras",
    )


def run(args: argparse.Namespace, ctx: Any) -> int:
    from streamswap.io.cameras import list_cameras

    cameras, how = list_cameras()
    shown = [c for c in cameras if args.all or (c.capture and not c.loopback)]
    if not shown:
        hidden = len(cameras) - len(shown)
        more = f" ({hidden} other video device(s): see --all)" if hidden else ""
        print(
            f"no cameras found via {how}{more}. Plug one in and check `ls /dev/video*`, that "
            "no other program holds it, and that you may read it (group 'video'); "
            "test:// gives a test pattern meanwhile.",
            file=sys.stderr,
        )
        return 1
    for camera in shown:
        tags = [t for t in (camera.driver, camera.bus) if t]
        kind = (
            " [virtual camera: v4l2loopback, vcam:// writes here]"
            if camera.loopback
            else ""
            if camera.capture
            else " [does not capture]"
        )
        print(f"{camera.device}  {camera.name}" + (f"  ({', '.join(tags)})" if tags else "") + kind)
        if camera.problem:
            print(f"    {camera.problem}")
        for fmt in camera.formats:
            name = f" = format={fmt.ffmpeg_name}" if fmt.ffmpeg_name else ""
            sizes = " ".join(fmt.sizes) or "(sizes not listed)"
            print(f"    {fmt.fourcc:<4} {fmt.description}{name}: {sizes}")
        if camera.capture and not camera.loopback:
            print(
                f"    use: streamswap run -i {camera.uri} …  (choose a mode: "
                f"{camera.uri}?width=1280&height=720&fps=30&format=mjpeg)"
            )
    return 0
