"""Responsible use: a visible "AI-generated" label drawn on every output frame, and a
metadata tag in every file output (video container metadata, a PNG text chunk, a JPEG
comment), so a swapped picture says what it is.

The label is rendered once per frame size into a small patch with its own alpha; per frame
only the patch's corner region of the frame is blended (no frame-sized buffer).
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

from streamswap.io.settings import LabelSettings

TAG_KEY = "comment"  # container metadata key ffprobe shows as TAG:comment
TAG_SOFTWARE = "streamswap"


def tag_text(settings: LabelSettings) -> str:
    """The metadata text file outputs carry."""
    return f"{settings.text} (face swapped by {TAG_SOFTWARE})"


class Labeler:
    """Draws the configured label into frames in place."""

    def __init__(self, settings: LabelSettings) -> None:
        self.settings = settings
        self._size: tuple[int, int] | None = None
        self._patch: np.ndarray | None = None  # (h, w, 3) uint8 label pixels
        self._alpha: np.ndarray | None = None  # (h, w) float32 label opacity
        self._beta: np.ndarray | None = None
        self._at = (0, 0)

    def _render(self, width: int, height: int) -> None:
        st = self.settings
        font = cv2.FONT_HERSHEY_SIMPLEX
        scale = max(height * st.size / 30.0, 0.3)  # Hershey glyphs are ~30 px tall at scale 1
        thickness = max(int(round(scale * 1.6)), 1)
        (tw, th), base = cv2.getTextSize(st.text, font, scale, thickness)
        pad = max(int(th * 0.4), 2)
        w, h = min(tw + 2 * pad, width), min(th + base + 2 * pad, height)
        patch = np.zeros((h, w, 3), np.uint8)
        ink = np.zeros((h, w), np.uint8)
        cv2.putText(ink, st.text, (pad, pad + th), font, scale, 255, thickness, cv2.LINE_AA)
        patch[:] = 255
        alpha = np.full((h, w), st.background, np.float32)  # the dark box behind the text
        alpha += (1.0 - alpha) * (ink.astype(np.float32) / 255.0)
        # Text white over a black box: patch colour = white weighted by ink share of alpha.
        share = np.divide(ink.astype(np.float32) / 255.0, np.maximum(alpha, 1e-6))
        patch = (patch.astype(np.float32) * share[..., None]).astype(np.uint8)
        margin = max(int(height * 0.02), 2)
        x = margin if st.position.endswith("left") else width - w - margin
        y = margin if st.position.startswith("top") else height - h - margin
        self._at = (max(x, 0), max(y, 0))
        self._patch, self._alpha = patch, alpha
        self._beta = 1.0 - alpha
        self._size = (width, height)

    def draw(self, frame: np.ndarray) -> None:
        """Blend the label into `frame` (BGR uint8) in place."""
        h, w = frame.shape[:2]
        if self._size != (w, h):
            self._render(w, h)
        assert self._patch is not None and self._alpha is not None and self._beta is not None
        x, y = self._at
        ph, pw = self._patch.shape[:2]
        roi = frame[y : y + ph, x : x + pw]
        cv2.blendLinear(self._patch, roi, self._alpha, self._beta, dst=roi)


def tag_image_bytes(encoded: bytes, ext: str, text: str) -> bytes:
    """`encoded` (a PNG or JPEG file) with `text` added as a PNG tEXt chunk ("Comment") or a
    JPEG COM segment; other formats are returned unchanged."""
    ext = ext.lower()
    data = text.encode("latin-1", "replace")
    if ext == ".png" and encoded[:8] == b"\x89PNG\r\n\x1a\n":
        body = b"Comment\x00" + data
        chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
        ihdr_end = 8 + 8 + struct.unpack(">I", encoded[8:12])[0] + 4
        return encoded[:ihdr_end] + chunk + encoded[ihdr_end:]
    if ext in (".jpg", ".jpeg") and encoded[:2] == b"\xff\xd8":
        segment = b"\xff\xfe" + struct.pack(">H", len(data[:65533]) + 2) + data[:65533]
        return encoded[:2] + segment + encoded[2:]
    return encoded
