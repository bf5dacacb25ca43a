"""Settings of inputs and outputs (the `io` section of the config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamswap.errors import ConfigError
from streamswap.typedconfig import choices, limits


@dataclass
class LabelSettings:
    """Responsible use: a visible label on every output frame, and a metadata tag in file
    outputs (container metadata of videos, a text chunk/comment of PNG/JPEG images)."""

    enabled: bool = False  # draw the label on every output frame
    text: str = "AI-generated"
    position: str = field(
        default="bottom-right", metadata=choices("top-left", "top-right", "bottom-left", "bottom-right")
    )
    size: float = field(default=0.035, metadata=limits(min=0.01, max=0.2))  # text height × frame height
    background: float = field(default=0.55, metadata=limits(min=0.0, max=1.0))  # opacity of the box behind
    metadata: bool = True  # tag file outputs (also when the visible label is off)

    def validate(self, where: str) -> None:
        if not self.text.strip():
            raise ConfigError(f"{where}.text: empty; give the label's text (e.g. AI-generated)")
        if not self.text.isascii() or not self.text.isprintable() or len(self.text) > 80:
            raise ConfigError(
                f"{where}.text: use up to 80 printable ASCII characters (the label font has "
                f"no others), got {self.text!r}"
            )


@dataclass
class IoSettings:
    # Frame size of the whole run; None = the source's own size. Every frame is scaled to it
    # (also when the source changes resolution mid-stream).
    width: int | None = field(default=None, metadata=limits(min=16, max=8192))
    height: int | None = field(default=None, metadata=limits(min=16, max=8192))
    # Nominal frame rate; None = the source's. Webcams are asked for it; it paces
    # synthetic frames while reconnecting and sets the encoders' rate.
    fps: float | None = field(default=None, metadata=limits(min=1, max=240))
    # Webcam pixel format asked of the driver: None = the driver's default,
    # "mjpeg" for high resolutions over USB 2, or an FFmpeg name such as "yuyv422".
    pixel_format: str | None = None
    # RTSP transport: tcp avoids the smeared frames UDP gives on lossy networks.
    rtsp_transport: str = field(default="tcp", metadata=choices("tcp", "udp"))
    # Seconds to wait for a network input/output to open, and for data once open.
    open_timeout_s: float = field(default=10.0, metadata=limits(min=0.1, max=600))
    read_timeout_s: float = field(default=5.0, metadata=limits(min=0.1, max=600))
    # A lost network input or webcam is reopened with exponential back-off
    # (initial, doubled up to max) while the outputs keep running with synthetic frames.
    reconnect: bool = True
    reconnect_initial_s: float = field(default=0.5, metadata=limits(min=0.01, max=60))
    reconnect_max_s: float = field(default=10.0, metadata=limits(min=0.01, max=600))
    # What the outputs get while the input is lost: the last frame again, or a "no signal" card.
    on_loss: str = field(default="repeat", metadata=choices("repeat", "no-signal"))
    # File inputs: "auto" paces at the file's own rate when it stands in for a live input
    # and reads as fast as possible (losing nothing) otherwise.
    file_pacing: str = field(default="auto", metadata=choices("auto", "realtime", "fast"))
    # H.264 encoder of the rtmp:// and file outputs; auto = h264_nvenc when it opens, else libx264.
    encoder: str = field(default="auto", metadata=choices("auto", "libx264", "h264_nvenc"))
    # libx264 preset. auto: file outputs get the slowest (smallest file) preset whose
    # estimated cost holds the frame rate within the encoder's CPU share (avsink.auto_preset),
    # network outputs ultrafast + zerolatency (low latency).
    preset: str = field(
        default="auto",
        metadata=choices("auto", "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"),
    )
    # File outputs: constant quality (x264 CRF, NVENC CQ; lower = better and larger; 18 is
    # about visually lossless). None = the fixed io.bitrate_kbps, like network outputs.
    crf: int | None = field(default=20, metadata=limits(min=0, max=51))
    # Network outputs (rtmp://): the bitrate a live stream is sent at.
    bitrate_kbps: int = field(default=4000, metadata=limits(min=100, max=200000))
    # Threads per H.264 encoder / video decoder; 0 = the CPU budget's share (all cores for a
    # pipeline without models, else what the model stages leave; see pipeline/cpu_budget.py).
    encoder_threads: int = field(default=0, metadata=limits(min=0, max=64))
    decoder_threads: int = field(default=0, metadata=limits(min=0, max=64))
    keyframe_interval_s: float = field(default=1.0, metadata=limits(min=0.1, max=10))
    audio_bitrate_kbps: int = field(default=128, metadata=limits(min=16, max=512))
    # Virtual camera: device None = the first v4l2loopback device; fps None = the run's fps.
    vcam_device: str | None = None
    vcam_fps: float | None = field(default=None, metadata=limits(min=1, max=240))
    # An output file that already exists: auto = `run`/`swap-image` refuse it (-y replaces
    # it), `serve` moves the old one aside (NAME.<UTC time>.EXT); or refuse/overwrite/rename.
    existing_output: str = field(default="auto", metadata=choices("auto", "refuse", "overwrite", "rename"))
    label: LabelSettings = field(default_factory=LabelSettings)

    def validate(self, where: str) -> None:
        if (self.width is None) != (self.height is None):
            raise ConfigError(f"{where}.width/height: give both or neither (None = the source's size)")
        for key in ("width", "height"):
            value = getattr(self, key)
            if value is not None and value % 2:
                raise ConfigError(f"{where}.{key}: must be even (H.264 4:2:0), got {value}")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ConfigError(f"{where}.reconnect_max_s: must be ≥ reconnect_initial_s ({self.reconnect_initial_s})")
