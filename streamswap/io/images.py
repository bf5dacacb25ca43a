"""Still images in and out (source photos, `swap-image`, the control API's uploads).

Every image leaves here as a BGR uint8 H×W×3 array, whatever the file held: 16-bit PNGs are
scaled to 8 bits, grayscale is expanded to three channels, an alpha channel is dropped and
EXIF orientation is applied. The pixel count is checked three times: from the file's
header BEFORE anything is decoded (a 10000×10000 photo is refused without allocating its
pixels), by OpenCV's decoder itself (its cap, OPENCV_IO_MAX_IMAGE_PIXELS, is set when the
`streamswap` package is imported: a file whose header lies to our parser, e.g. a TIFF with
two different width tags, is refused by the decoder before it allocates), and on the decoded
array before any conversion allocates more. Files are read only when they are regular files
no larger than MAX_FILE_BYTES (streamswap.files).
"""

from __future__ import annotations

import functools
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2  # noqa: E402  (after the cap above)
import numpy as np  # noqa: E402

from streamswap import DECODER_MAX_PIXELS  # sets OpenCV's decoder cap before cv2 loads
from streamswap.errors import InputError, OutputError
from streamswap.files import read_regular
from streamswap.logs import kv

log = logging.getLogger(__name__)

# 50 megapixels: above 8K UHD (33 MP), below anything a camera phone still-shot needs.
DEFAULT_MAX_PIXELS = DECODER_MAX_PIXELS
# A face needs some pixels; detectors do not find faces much smaller than this.
MIN_SIDE = 32
# Encoded files above this are refused before being read into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024

SUPPORTED = "JPEG, PNG, BMP, WebP, TIFF, GIF, PNM"
_WRITE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, read without decoding any pixels."""

    format: str
    width: int
    height: int


def read_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as BGR uint8 H×W×3.

    Raises InputError naming the file when it is missing, a folder, empty, unreadable,
    not an image, too small to hold a face, or larger than `max_pixels`.
    """
    return decode_image(read_image_bytes(path), max_pixels=max_pixels, name=str(path))


def read_image_bytes(path: str | os.PathLike[str]) -> bytes:
    """The encoded bytes of image file `path`: a regular file of at most MAX_FILE_BYTES
    (InputError for a FIFO, a device such as /dev/zero, a folder, a missing file)."""
    return read_regular(path, MAX_FILE_BYTES, what="image file")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes (a file's content, an upload) to BGR uint8 H×W×3.

    `name` is used in error messages (a path, or e.g. "uploaded image").
    """
    if not data:
        raise InputError(f"{name}: empty file (0 bytes), not an image")
    header = read_header(data, name)
    check_dimensions(header, max_pixels, name)
    _warn_unless_decoder_capped()
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        # IMREAD_COLOR: 16-bit -> 8-bit (>> 8), gray -> BGR, alpha dropped, EXIF orientation applied.
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc) or "validateInputImageSize" in str(exc):
            raise InputError(
                f"{name}: the {header.format} data decodes to more than "
                f"{min(max_pixels, _decoder_cap()) / 1e6:.0f} megapixels although its header "
                f"says {header.width}×{header.height}; refused (corrupt or hostile file)"
            ) from None
        raise InputError(f"{name}: corrupt {header.format} image ({_first_line(exc)})") from None
    if image is None:
        raise InputError(f"{name}: the {header.format} data cannot be decoded (truncated or corrupt file)")
    # What was decoded, not what the header said, decides (before conversions allocate more).
    h, w = image.shape[:2]
    if w * h > max_pixels or (w * h > header.width * header.height):
        raise InputError(
            f"{name}: the {header.format} data decodes to {w}×{h} although its header says "
            f"{header.width}×{header.height}; refused (corrupt or hostile file)"
            if w * h > header.width * header.height
            else f"{name}: image is {w}×{h}, over the size limit of {max_pixels / 1e6:.0f} megapixels"
        )
    if image.dtype != np.uint8:  # defensive: decoders that ignore IMREAD_COLOR's depth rule
        image = _to_uint8(image)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def check_dimensions(header: ImageHeader, max_pixels: int, name: str) -> None:
    """Refuse images too small to hold a face or too large to decode safely."""
    w, h = header.width, header.height
    if w <= 0 or h <= 0:
        raise InputError(f"{name}: the {header.format} header claims a {w}×{h} image; the file is corrupt")
    if w < MIN_SIDE or h < MIN_SIDE:
        raise InputError(
            f"{name}: image is {w}×{h} pixels, too small to contain a face (need at least {MIN_SIDE}×{MIN_SIDE})"
        )
    if w * h > max_pixels:
        raise InputError(
            f"{name}: image is {w}×{h} ({w * h / 1e6:.0f} megapixels), over the size limit of "
            f"{max_pixels / 1e6:.0f} megapixels; scale it down first"
        )


def read_header(data: bytes, name: str = "image") -> ImageHeader:
    """Format and size from the first bytes of an encoded image, without decoding pixels."""
    for parse in (_png, _jpeg, _gif, _bmp, _webp, _tiff, _pnm):
        header = parse(data, name)
        if header is not None:
            return header
    hint = ""
    if _looks_like_text(data[:512]):
        hint = " (it holds text)"
    raise InputError(f"{name}: not an image{hint}; supported formats: {SUPPORTED}")


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Raise OutputError unless `path` has an extension `write_image` can encode (check it
    before the work whose result it will hold)."""
    p = Path(path)
    if p.suffix.lower() not in _WRITE_EXTENSIONS:
        raise OutputError(
            f"{p}: unknown image extension {p.suffix or '(none)'!r}; use one of " + ", ".join(_WRITE_EXTENSIONS)
        )
    return p


def write_image(path: str | os.PathLike[str], image: np.ndarray, quality: int = 95, tag: str | None = None) -> Path:
    """Write a BGR uint8 image; the format follows the extension. Written atomically.
    `tag`: a text stored in the file (PNG text chunk / JPEG comment), e.g. "AI-generated"."""
    p = check_output_path(path)
    ext = p.suffix.lower()
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, encoded = cv2.imencode(ext, image, params)
    if not ok:
        raise OutputError(f"{p}: cannot encode the image as {ext}")
    if not p.parent.is_dir():  # no folders are created: a typo must not make a tree of them
        raise OutputError(f"{p}: folder {p.parent} does not exist; create it first")
    data = encoded.tobytes()
    if tag:
        from streamswap.io.label import tag_image_bytes

        data = tag_image_bytes(data, ext, tag)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{p}: cannot write ({exc.strerror or exc}); check the folder and its permissions") from None
    return p


# --- header parsers: each returns None when the data is not its format -------------------


def _png(data: bytes, name: str) -> ImageHeader | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InputError(f"{name}: truncated or corrupt PNG (no IHDR header)")
    w, h = struct.unpack(">II", data[16:24])
    return ImageHeader("PNG", w, h)


# JPEG start-of-frame markers (baseline, progressive, lossless, ...); not DHT/JPG/DAC.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes, name: str) -> ImageHeader | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise InputError(f"{name}: corrupt JPEG (bad marker at byte {i})")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            if i + 9 > n:
                break
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return ImageHeader("JPEG", w, h)
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        i += 2 + length
    raise InputError(f"{name}: truncated or corrupt JPEG (no frame header)")


def _gif(data: bytes, name: str) -> ImageHeader | None:
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    if len(data) < 10:
        raise InputError(f"{name}: truncated GIF")
    w, h = struct.unpack("<HH", data[6:10])
    return ImageHeader("GIF", w, h)


def _bmp(data: bytes, name: str) -> ImageHeader | None:
    if not data.startswith(b"BM") or len(data) < 18:
        return None
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:
        if len(data) < 22:
            raise InputError(f"{name}: truncated BMP")
        w, h = struct.unpack("<HH", data[18:22])
    else:
        if len(data) < 26:
            raise InputError(f"{name}: truncated BMP")
        w, h = struct.unpack("<ii", data[18:26])
    return ImageHeader("BMP", abs(w), abs(h))


def _webp(data: bytes, name: str) -> ImageHeader | None:
    if not (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return None
    if len(data) < 30:
        raise InputError(f"{name}: truncated WebP")
    chunk = data[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return ImageHeader("WebP", w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L":
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return ImageHeader("WebP", w, h)
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return ImageHeader("WebP", w, h)
    raise InputError(f"{name}: unsupported WebP variant {chunk!r}")


def _tiff(data: bytes, name: str) -> ImageHeader | None:
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    end = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(end + "I", data[4:8])
        (count,) = struct.unpack(end + "H", data[ifd : ifd + 2])
        w = h = None
        for k in range(count):
            off = ifd + 2 + 12 * k
            tag, typ = struct.unpack(end + "HH", data[off : off + 4])
            if tag not in (256, 257):
                continue
            if (w if tag == 256 else h) is not None:
                # Readers disagree on which of two size tags wins (libtiff keeps the first):
                # a file that says two things is refused rather than guessed at.
                raise InputError(
                    f"{name}: TIFF with two {'width' if tag == 256 else 'height'} "
                    "tags; refused (corrupt or hostile file)"
                )
            if typ not in (3, 4):
                raise InputError(f"{name}: TIFF size tag of unexpected type {typ}; corrupt file")
            value = (
                struct.unpack(end + "H", data[off + 8 : off + 10])[0]
                if typ == 3
                else struct.unpack(end + "I", data[off + 8 : off + 12])[0]
            )
            if tag == 256:
                w = value
            else:
                h = value
    except struct.error:
        raise InputError(f"{name}: truncated or corrupt TIFF") from None
    if w is None or h is None:
        raise InputError(f"{name}: TIFF without width/height tags")
    return ImageHeader("TIFF", w, h)


def _pnm(data: bytes, name: str) -> ImageHeader | None:
    if len(data) < 3 or data[0:1] != b"P" or data[1:2] not in b"123456" or not data[2:3].isspace():
        return None
    tokens: list[bytes] = []
    for line in data[2:256].splitlines():
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 2:
            break
    try:
        return ImageHeader("PNM", int(tokens[0]), int(tokens[1]))
    except (IndexError, ValueError):
        raise InputError(f"{name}: corrupt PNM header") from None


# --- helpers ------------------------------------------------------------------------------


def _bmp_claiming(width: int, height: int) -> bytes:
    """A BMP holding only a header that claims width×height (no pixel data)."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40, 0, 0, 14 + 40) + info


def _decoder_cap() -> int:
    value = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "")
    return int(value) if value.isdigit() else DECODER_MAX_PIXELS


@functools.lru_cache(maxsize=1)
def _warn_unless_decoder_capped() -> bool:
    """Whether OpenCV's decoder enforces our pixel cap (it does not when cv2 was imported
    before `streamswap`, e.g. by a host program); warns once when it does not."""
    side = int((DECODER_MAX_PIXELS * 2) ** 0.5)  # a header that claims twice the cap
    try:
        cv2.imdecode(np.frombuffer(_bmp_claiming(side, side), np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return True  # refused from the header alone: the cap is active
    log.warning(
        "OpenCV's decoder pixel cap is not active (cv2 was imported before streamswap); "
        "image sizes are checked from headers and after decoding only",
        extra=kv(env="OPENCV_IO_MAX_IMAGE_PIXELS"),
    )
    return False


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c >= 0x20 or c in (0x09, 0x0A, 0x0D) for c in head)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
