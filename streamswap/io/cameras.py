"""Which cameras this machine has (`streamswap cameras`).

Linux: every video4linux device from sysfs (its name), asked through the V4L2 ioctls
(QUERYCAP, ENUM_FMT, ENUM_FRAMESIZES, ENUM_FRAMEINTERVALS) whether it captures and in
which pixel formats, sizes and rates. v4l2loopback devices are marked: they are where
vcam:// writes. macOS and Windows: FFmpeg's own device listing (avfoundation / dshow
`list_devices`) through PyAV.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

# ioctl numbers: _IOR/_IOWR('V', nr, struct) with the struct sizes of linux/videodev2.h.
VIDIOC_QUERYCAP = 0x80685600  # struct v4l2_capability, 104 bytes
VIDIOC_ENUM_FMT = 0xC0405602  # struct v4l2_fmtdesc, 64 bytes
VIDIOC_ENUM_FRAMESIZES = 0xC02C564A  # struct v4l2_frmsizeenum, 44 bytes
VIDIOC_ENUM_FRAMEINTERVALS = 0xC034564B  # struct v4l2_frmivalenum, 52 bytes
CAP_VIDEO_CAPTURE = 0x00000001
CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
CAP_VIDEO_OUTPUT = 0x00000002
CAP_DEVICE_CAPS = 0x80000000
BUF_TYPE_VIDEO_CAPTURE = 1
FRMSIZE_TYPE_DISCRETE = 1
FRMIVAL_TYPE_DISCRETE = 1
# FFmpeg's names for the common camera formats (what v4l2://...?format= and io.pixel_format take).
FFMPEG_FORMATS = {
    "MJPG": "mjpeg",
    "YUYV": "yuyv422",
    "H264": "h264",
    "NV12": "nv12",
    "YU12": "yuv420p",
    "UYVY": "uyvy422",
    "RGB3": "rgb24",
    "BGR3": "bgr24",
    "GREY": "gray",
}


@dataclass
class CameraFormat:
    fourcc: str  # V4L2 pixel format, e.g. MJPG
    description: str
    sizes: list[str] = field(default_factory=list)  # "1280x720@30", or "640x480-1920x1080" stepwise

    @property
    def ffmpeg_name(self) -> str | None:
        return FFMPEG_FORMATS.get(self.fourcc)


@dataclass
class Camera:
    device: str  # /dev/video0, or the avfoundation index / dshow name
    name: str
    driver: str = ""
    bus: str = ""
    capture: bool = True  # False: a metadata node or an output-only device
    loopback: bool = False  # a v4l2loopback device (vcam:// writes there)
    formats: list[CameraFormat] = field(default_factory=list)
    problem: str | None = None  # why it could not be asked (busy, permission)
    uri: str = ""


# -- Linux ------------------------------------------------------------------------------


def _cstr(raw: bytes | bytearray) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace").strip()


def _fourcc(code: int) -> str:
    return struct.pack("<I", code).decode("ascii", errors="replace").strip()


class V4l2Device:
    """The ioctls asked of one open /dev/videoN (read-only, no streaming)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def close(self) -> None:
        os.close(self.fd)

    def _ioctl(self, request: int, buf: bytearray) -> bool:
        import fcntl

        try:
            fcntl.ioctl(self.fd, request, buf, True)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOTTY):  # the end of an enumeration
                return False
            raise
        return True

    def querycap(self) -> tuple[str, str, str, int]:
        buf = bytearray(104)
        self._ioctl(VIDIOC_QUERYCAP, buf)
        driver, card, bus = _cstr(buf[0:16]), _cstr(buf[16:48]), _cstr(buf[48:80])
        caps, device_caps = struct.unpack_from("<II", buf, 84)
        return driver, card, bus, device_caps if caps & CAP_DEVICE_CAPS else caps

    def formats(self) -> list[CameraFormat]:
        out = []
        for index in range(64):
            buf = bytearray(64)
            struct.pack_into("<II", buf, 0, index, BUF_TYPE_VIDEO_CAPTURE)
            if not self._ioctl(VIDIOC_ENUM_FMT, buf):
                break
            pixelformat = struct.unpack_from("<I", buf, 44)[0]
            fmt = CameraFormat(_fourcc(pixelformat), _cstr(buf[12:44]))
            fmt.sizes = self._sizes(pixelformat)
            out.append(fmt)
        return out

    def _sizes(self, pixelformat: int) -> list[str]:
        sizes = []
        for index in range(256):
            buf = bytearray(44)
            struct.pack_into("<II", buf, 0, index, pixelformat)
            if not self._ioctl(VIDIOC_ENUM_FRAMESIZES, buf):
                break
            kind = struct.unpack_from("<I", buf, 8)[0]
            if kind == FRMSIZE_TYPE_DISCRETE:
                width, height = struct.unpack_from("<II", buf, 12)
                fps = self._max_fps(pixelformat, width, height)
                sizes.append(f"{width}x{height}" + (f"@{fps:g}" if fps else ""))
            else:  # continuous / stepwise: one range, nothing more to enumerate
                min_w, max_w, _, min_h, max_h, _ = struct.unpack_from("<6I", buf, 12)
                sizes.append(f"{min_w}x{min_h}-{max_w}x{max_h}")
                break
        return sizes

    def _max_fps(self, pixelformat: int, width: int, height: int) -> float | None:
        best = None
        for index in range(64):
            buf = bytearray(52)
            struct.pack_into("<IIII", buf, 0, index, pixelformat, width, height)
            if not self._ioctl(VIDIOC_ENUM_FRAMEINTERVALS, buf):
                break
            kind, num, den = struct.unpack_from("<III", buf, 16)
            if num:
                fps = round(den / num, 2)
                best = fps if best is None else max(best, fps)
            if kind != FRMIVAL_TYPE_DISCRETE:
                break
        return best


Probe = Callable[[str], tuple[tuple[str, str, str, int], list[CameraFormat]]]


def _probe(path: str) -> tuple[tuple[str, str, str, int], list[CameraFormat]]:
    device = V4l2Device(path)
    try:
        caps = device.querycap()
        capture = caps[3] & (CAP_VIDEO_CAPTURE | CAP_VIDEO_CAPTURE_MPLANE)
        return caps, device.formats() if capture else []
    finally:
        device.close()


def _video_number(name: str) -> int:
    digits = re.sub(r"\D", "", name)
    return int(digits) if digits else 0


def list_v4l2(sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev"), probe: Probe = _probe) -> list[Camera]:
    """Every video4linux device with its name; capture devices with their formats."""
    cameras = []
    nodes = sorted((sys_root / "class" / "video4linux").glob("video*"), key=lambda p: _video_number(p.name))
    for node in nodes:
        try:
            name = (node / "name").read_text(errors="replace").strip()
        except OSError:
            name = "?"
        device = str(dev_root / node.name)
        camera = Camera(device, name, uri=f"v4l2://{device}")
        try:
            (driver, card, bus, caps), camera.formats = probe(device)
        except OSError as exc:
            camera.problem = f"cannot open it ({exc.strerror or exc}); " + (
                "add yourself to the 'video' group: sudo usermod -aG video $USER"
                if exc.errno in (errno.EACCES, errno.EPERM)
                else "another program may be using it"
                if exc.errno == errno.EBUSY
                else "check the device"
            )
        else:
            camera.name = card or name
            camera.driver, camera.bus = driver, bus
            camera.capture = bool(caps & (CAP_VIDEO_CAPTURE | CAP_VIDEO_CAPTURE_MPLANE))
            camera.loopback = driver == "v4l2 loopback" or "loopback" in driver.lower()
        # v4l2loopback's devices are virtual (no bus behind them); doctor's labels too.
        if any(word in name.lower() for word in ("loopback", "dummy", "streamswap")) or "/virtual/" in str(
            node.resolve()
        ):
            camera.loopback = True
        cameras.append(camera)
    return cameras


# -- macOS / Windows through FFmpeg ---------------------------------------------------


def parse_ffmpeg_device_list(fmt: str, lines: list[str]) -> list[Camera]:
    """The video devices in FFmpeg's `list_devices` log output."""
    cameras = []
    if fmt == "avfoundation":
        in_video = False
        for line in lines:
            if "video devices" in line.lower():
                in_video = True
                continue
            if "audio devices" in line.lower():
                in_video = False
                continue
            match = re.search(r"\[(\d+)\]\s+(.+)$", line)
            if in_video and match:
                cameras.append(Camera(match[1], match[2].strip(), uri=f"avfoundation://{match[1]}"))
    else:  # dshow: '"Integrated Camera" (video)'; older FFmpeg lists under "DirectShow video devices"
        section_video = False
        for line in lines:
            low = line.lower()
            if "directshow video devices" in low:
                section_video = True
                continue
            if "directshow audio devices" in low:
                section_video = False
                continue
            match = re.search(r'"([^"]+)"(\s*\((video|audio|none)\))?', line)
            if not match or "alternative name" in low:
                continue
            kind = match[3]
            if kind == "video" or (kind is None and section_video):
                cameras.append(Camera(match[1], match[1], uri=f"dshow://{match[1]}"))
    return cameras


def list_ffmpeg(fmt: str) -> list[Camera]:
    """Ask FFmpeg (inside PyAV) to list its `fmt` devices; it answers in its log."""
    import av
    import av.logging

    device = "" if fmt == "avfoundation" else "dummy"
    with av.logging.Capture(local=False) as logs:
        try:
            av.open(device, format=fmt, options={"list_devices": "true"}).close()
        except (av.error.FFmpegError, OSError, ValueError):
            pass  # the listing "fails" by design after printing the devices
    return parse_ffmpeg_device_list(fmt, [str(entry[2]) for entry in logs])


def list_cameras() -> tuple[list[Camera], str]:
    """(cameras, how they were found) for this platform."""
    if sys.platform.startswith("linux"):
        return list_v4l2(), "video4linux (/sys/class/video4linux)"
    fmt = "avfoundation" if sys.platform == "darwin" else "dshow" if sys.platform == "win32" else None
    if fmt is None:
        return [], f"no camera listing for {sys.platform}"
    return list_ffmpeg(fmt), f"FFmpeg {fmt}"
