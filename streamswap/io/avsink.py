"""H.264 outputs through PyAV: files (.mp4/.mov/.mkv/.flv) and RTMP (FLV over the network).

Video timestamps are the source's pts, so the passed-through audio stays in sync.

What a killed process (SIGKILL, the OOM killer, a crash) can lose is bounded for every
container: MP4/MOV are written fragmented and Matroska in clusters, each closed after half
FLUSH_INTERVAL_S (and at every keyframe); FLV writes every packet as it comes; the muxer's
interleaving queue holds at most the other half when one stream pauses (an input whose
audio ends early, which held video back for 10 s before); every packet goes to the OS at
once (what reaches the disk before a power cut is the OS's writeback). So a killed run
leaves a file that plays up to FLUSH_INTERVAL_S before the kill (plus the encoder's own
delay: one frame with ultrafast, up to `file_lookahead` + 1 more with the slower presets
file outputs get from io.preset auto); a normal close adds the index.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit

import av
import numpy as np

from streamswap.errors import OutputError
from streamswap.files import move_aside
from streamswap.io.avsource import error_text
from streamswap.io.base import AudioFormat, FrameMeta, VideoFormat
from streamswap.io.convert import YuvFrameFiller
from streamswap.io.settings import IoSettings
from streamswap.logs import kv
from streamswap.redact import redact_uri

log = logging.getLogger(__name__)

# Audio codecs each container takes as they are; anything else is re-encoded to AAC.
PASSTHROUGH_AUDIO = {
    "flv": {"aac", "mp3"},
    "mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    "mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le"},
    "matroska": None,  # everything
}
FILE_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".flv": "flv"}
# delay_moov: the header waits for the first fragment so it can carry the edit lists
# (AAC priming before 0, a track starting late); without it the first video frame
# absorbed the input's ~21 ms audio priming and every track shifted.
FRAGMENTED_MP4 = "frag_keyframe+empty_moov+delay_moov+default_base_moof"
# The most media a file output holds in memory before handing it to the OS (seconds).
FLUSH_INTERVAL_S = 0.25


def file_muxer_options(container_format: str) -> dict[str, str]:
    """Muxer options that bound what a killed run loses to FLUSH_INTERVAL_S (see above)."""
    half_us = int(FLUSH_INTERVAL_S * 1_000_000) // 2
    options = {"flush_packets": "1", "max_interleave_delta": str(half_us)}
    if container_format in ("mp4", "mov"):
        options["movflags"] = FRAGMENTED_MP4
        options["frag_duration"] = str(half_us)  # besides a fragment per keyframe
    elif container_format == "matroska":
        options["cluster_time_limit"] = str(half_us // 1000)  # ms; FFmpeg's default is 5 s
    elif container_format == "flv":
        options["flvflags"] = "no_duration_filesize"
    return options


def pick_encoder(settings: IoSettings, video: VideoFormat) -> str:
    """The H.264 encoder to use: the configured one, or for auto h264_nvenc when it opens."""
    if settings.encoder != "auto":
        return settings.encoder
    if "h264_nvenc" in av.codecs_available and _opens("h264_nvenc", video):
        return "h264_nvenc"
    return "libx264"


def _opens(codec: str, video: VideoFormat) -> bool:
    try:
        ctx = av.CodecContext.create(codec, "w")
        if not isinstance(ctx, av.VideoCodecContext):
            return False
        ctx.width, ctx.height, ctx.pix_fmt = video.width, video.height, "yuv420p"
        ctx.time_base = 1 / video.fps
        ctx.open()
        return True
    except (av.error.FFmpegError, ValueError, OSError):
        return False


# x264's CPU cost per megapixel of a frame on one core, by preset (ms; 720p, CRF 18–21,
# the `bench anchor` clip, on the 2-core bench machine). Only the ratios matter much: the
# choice keeps a wide margin. Slower presets than medium are never chosen automatically.
X264_MS_PER_MEGAPIXEL = {
    "ultrafast": 2.5,
    "superfast": 4.0,
    "veryfast": 5.1,
    "faster": 9.6,
    "fast": 10.5,
    "medium": 12.5,
}
# The share of its threads' time a file encoder may plan to use: the rest is margin for
# the busier frames, and on small machines it shares the cores with the models.
ENCODER_CPU_SHARE = 0.15


def auto_preset(width: int, height: int, fps: float, threads: int) -> str:
    """The slowest libx264 preset (the smallest file at a given quality) whose estimated cost
    stays within ENCODER_CPU_SHARE of `threads` threads at `fps` frames a second."""
    allowed_ms = ENCODER_CPU_SHARE * max(threads, 1) * 1000.0 / max(fps, 1.0)
    megapixels = width * height / 1e6
    chosen = "ultrafast"
    for preset, cost in X264_MS_PER_MEGAPIXEL.items():  # fastest first
        if cost * megapixels <= allowed_ms:
            chosen = preset
    return chosen


def file_lookahead(fps: float) -> int:
    """x264 rc-lookahead of file outputs: half FLUSH_INTERVAL_S of frames (≥ 1)."""
    return max(1, int(round(fps * FLUSH_INTERVAL_S / 2)))


@dataclass(frozen=True)
class EncoderSettings:
    """What one H.264 output is encoded with."""

    options: dict[str, str]  # the encoder's private options (preset, crf, tune, …)
    bit_rate: int | None  # bits/s for bitrate control; None under constant quality
    gop: int  # frames between keyframes
    threads: int  # 0 = the encoder's own choice


def encoder_settings(s: IoSettings, encoder: str, video: VideoFormat, *, network: bool) -> EncoderSettings:
    """File outputs: constant quality (io.crf) at a preset that holds the rate (io.preset
    auto). Network outputs: the low-latency settings of a live stream (a fixed bitrate,
    ultrafast + zerolatency for libx264, p1/ull/CBR for NVENC)."""
    gop = max(int(round(s.keyframe_interval_s * float(video.fps))), 1)
    quality = None if network else s.crf
    bit_rate = None if quality is not None else s.bitrate_kbps * 1000
    if encoder == "h264_nvenc":  # its own silicon: the CPU budget does not apply
        if quality is None:
            options = {"preset": "p1", "tune": "ull", "zerolatency": "1", "bf": "0", "rc": "cbr"}
        else:
            options = {"preset": "p4", "rc": "vbr", "cq": str(quality), "bf": "0"}
        return EncoderSettings(options, bit_rate, gop, 0)
    if s.preset != "auto":
        preset = s.preset
    elif network:
        preset = "ultrafast"
    else:
        preset = auto_preset(video.width, video.height, float(video.fps), s.encoder_threads)
    options = {"preset": preset, "keyint": str(gop), "min-keyint": str(gop), "scenecut": "0", "bframes": "0"}
    if quality is not None:
        options["crf"] = str(quality)
    if not network and preset not in ("ultrafast", "superfast"):  # those two have none
        # Frames in x264's lookahead are lost to a SIGKILL like those in the muxer: cap it
        # so the encoder holds back at most about half a flush interval more (10 → 4 frames
        # with veryfast at 30 fps: +20 % file size, measured on the anchor clip).
        options["rc-lookahead"] = str(file_lookahead(float(video.fps)))
    if network:
        options["tune"] = "zerolatency"  # no lookahead, sliced threads: no frames held back
    return EncoderSettings(options, bit_rate, gop, s.encoder_threads)


class AvSink:
    """Encodes BGR frames to H.264 and muxes them with the input's audio. Implements `io.base.Sink`."""

    def __init__(
        self,
        url: str,
        container_format: str,
        settings: IoSettings,
        *,
        network: bool,
        encoder: str | None = None,
        move_existing_aside: bool = False,
    ) -> None:
        self.name = redact_uri(url)  # shown in status, metrics labels and logs
        self.url = url
        self.format = container_format
        self.network = network
        self.settings = settings
        self.move_existing_aside = move_existing_aside  # keep a previous run's file (serve)
        self.encoder = encoder  # resolved on open; kept across reconnects (no re-probing)
        self._container: Any = None
        self._vstream: Any = None
        self._astream: Any = None
        self._filler: YuvFrameFiller | None = None
        self._video: VideoFormat | None = None
        self._last_pts: int | None = None
        self._transcoder: _AacTranscoder | None = None
        self.counters: dict[str, int] = {"frames": 0, "audio_packets": 0}

    def open(self, video: VideoFormat, audio: AudioFormat | None) -> None:
        s = self.settings
        self._video = video
        encoder = self.encoder = self.encoder or pick_encoder(s, video)
        if self.network:
            options = {"flvflags": "no_duration_filesize"}
            probe_server(self.url, s.open_timeout_s)
        else:
            options = file_muxer_options(self.format)
            if self.move_existing_aside:
                try:
                    moved = move_aside(self.url)
                except OSError as exc:
                    raise OutputError(f"{self.name}: cannot move the existing file aside ({exc})") from None
                if moved is not None:
                    log.info("existing output file kept", extra=kv(file=self.url, moved_to=moved))
        try:
            self._container = av.open(
                self.url,
                "w",
                format=self.format,
                options=options,
                timeout=(s.open_timeout_s, s.read_timeout_s) if self.network else None,
            )
        except (av.error.FFmpegError, OSError) as exc:
            where = (
                "check the URL and that the server accepts publishing"
                if self.network
                else "check that the folder exists and is writable"
            )
            raise OutputError(f"{self.name}: cannot open output ({error_text(exc)}); {where}") from None
        if s.label.metadata:  # responsible use: the file says it is face-swapped
            from streamswap.io.label import TAG_KEY, tag_text

            self._container.metadata[TAG_KEY] = tag_text(s.label)
        try:
            self._add_video(video, encoder)
            if audio is not None:
                self._add_audio(audio)
        except (av.error.FFmpegError, ValueError) as exc:
            self._abort()
            raise OutputError(f"{self.name}: cannot set up encoder {self.encoder} ({error_text(exc)})") from None
        try:
            # PyAV connects/creates lazily on the first packet; do it now so a dead server
            # or an unwritable file is an error of open(), not of some later write.
            self._container.start_encoding()
        except (av.error.FFmpegError, OSError) as exc:
            self._abort()
            where = (
                "check the URL and that the server accepts publishing"
                if self.network
                else "check that the folder is writable"
            )
            raise OutputError(f"{self.name}: cannot open output ({error_text(exc)}); {where}") from None
        self._filler = YuvFrameFiller(video.width, video.height)
        log.info(
            "output opened",
            extra=kv(
                output=self.name,
                encoder=self.encoder,
                audio=(
                    "none"
                    if audio is None
                    else "aac re-encoded"
                    if self._transcoder
                    else f"{audio.codec} passed through"
                ),
            ),
        )

    def _add_video(self, video: VideoFormat, encoder: str) -> None:
        stream = self._container.add_stream(encoder, rate=video.fps)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        cc = stream.codec_context
        cc.time_base = video.time_base
        cc.framerate = video.fps
        cc.max_b_frames = 0  # pts == dts: no reordering delay, simple sync
        cc.colorspace = av.video.reformatter.Colorspace.ITU601
        cc.color_range = av.video.reformatter.ColorRange.MPEG
        settings = encoder_settings(self.settings, encoder, video, network=self.network)
        if settings.bit_rate:
            cc.bit_rate = settings.bit_rate
        cc.gop_size = settings.gop
        if settings.threads:
            cc.thread_count = settings.threads
        stream.options = settings.options
        stream.time_base = video.time_base
        self._vstream = stream
        log.debug("encoder settings", extra=kv(output=self.name, encoder=self.encoder, **settings.options))

    def _add_audio(self, audio: AudioFormat) -> None:
        allowed = PASSTHROUGH_AUDIO.get(self.format)
        if (
            audio.stream is not None
            and (allowed is None or audio.codec in allowed)
            and not self._needs_audio_config(audio)
        ):
            self._astream = self._container.add_stream_from_template(audio.stream)
            return
        self._transcoder = _AacTranscoder(audio, self.settings.audio_bitrate_kbps)
        self._astream = self._transcoder.add_stream(self._container)

    def _needs_audio_config(self, audio: AudioFormat) -> bool:
        """True for ADTS AAC (MPEG-TS, RTSP cameras): it carries its config in each packet
        and has no extradata, which MP4/MOV need in the header, so it is re-encoded."""
        return audio.codec == "aac" and self.format in ("mp4", "mov") and not audio.stream.codec_context.extradata

    # --- writing ----------------------------------------------------------------------
    def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
        assert self._filler is not None and self._video is not None, "open() first"
        video = self._video
        pts = meta.pts
        if pts is None:
            pts = int(meta.index / video.fps / video.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # encoders need strictly increasing pts
        self._last_pts = pts
        vframe = self._filler.fill(frame, pts, video.time_base)
        try:
            for packet in self._vstream.encode(vframe):
                self._container.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.name}: write failed ({error_text(exc)})") from exc
        self.counters["frames"] += 1

    def write_audio(self, packets: list[Any]) -> None:
        if self._astream is None or not packets:
            return
        try:
            if self._transcoder is not None:
                for packet in self._transcoder.transcode(packets):
                    self._container.mux(packet)
                    self.counters["audio_packets"] += 1
                return
            for packet in packets:
                if packet.dts is None:
                    continue
                # The same packet goes to every sink: mux rebases it in place, so restore it.
                saved = packet.pts, packet.dts, packet.time_base
                packet.stream = self._astream
                try:
                    self._container.mux(packet)
                finally:
                    packet.time_base, packet.pts, packet.dts = saved[2], saved[0], saved[1]
                self.counters["audio_packets"] += 1
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.name}: audio write failed ({error_text(exc)})") from exc

    def close(self) -> None:
        """Flush the encoder and write the trailer (the file's index)."""
        container = self._container
        if container is None:
            return
        error: BaseException | None = None
        try:
            if self._vstream is not None:
                for packet in self._vstream.encode(None):
                    container.mux(packet)
            if self._transcoder is not None:
                for packet in self._transcoder.flush():
                    container.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            error = exc
        finally:
            self._container = None
            try:
                container.close()
            except (av.error.FFmpegError, OSError) as exc:
                error = error or exc
        if error is not None:
            raise OutputError(f"{self.name}: finishing the output failed ({error_text(error)})")
        log.info("output closed", extra=kv(output=self.name, frames=self.counters["frames"]))

    def _abort(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except (av.error.FFmpegError, OSError):
                pass


class _AacTranscoder:
    """Decodes the input's audio packets and re-encodes them to AAC (FLV/MP4 need it)."""

    def __init__(self, audio: AudioFormat, bitrate_kbps: int) -> None:
        if audio.stream is None:
            raise ValueError("no audio codec parameters to decode from")
        decoder = av.CodecContext.create(audio.codec, "r")
        if not isinstance(decoder, av.AudioCodecContext):
            raise ValueError(f"{audio.codec} is not an audio codec")
        self._decoder = decoder
        template = audio.stream.codec_context
        self._decoder.sample_rate = template.sample_rate
        self._decoder.layout = template.layout
        if template.extradata:
            self._decoder.extradata = template.extradata
        self.sample_rate = template.sample_rate or 48000
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=self.sample_rate)
        self._bitrate = bitrate_kbps * 1000
        self._stream: Any = None
        self._next_pts: int | None = None

    def add_stream(self, container: Any) -> Any:
        stream = container.add_stream("aac", rate=self.sample_rate)
        stream.codec_context.layout = "stereo"
        stream.codec_context.bit_rate = self._bitrate
        self._stream = stream
        return stream

    def transcode(self, packets: list[Any]) -> list[Any]:
        out: list[Any] = []
        for packet in packets:
            try:
                frames = self._decoder.decode(packet)
            except av.error.FFmpegError:
                continue  # a broken audio packet: skip it
            for frame in frames:
                if self._next_pts is None and frame.pts is not None and frame.time_base:
                    self._next_pts = int(frame.pts * frame.time_base * self.sample_rate)
                for resampled in self._resampler.resample(frame):
                    out.extend(self._encode(resampled))
        return out

    def _encode(self, frame: Any) -> list[Any]:
        frame.pts = self._next_pts or 0
        frame.time_base = Fraction(1, self.sample_rate)
        self._next_pts = frame.pts + frame.samples
        return list(self._stream.encode(frame))

    def flush(self) -> list[Any]:
        out: list[Any] = []
        for resampled in self._resampler.resample(None):
            out.extend(self._encode(resampled))
        out.extend(self._stream.encode(None))
        return out


def probe_server(url: str, seconds: float) -> None:
    """Fail fast when an rtmp(s):// server cannot be reached or does not answer.

    PyAV opens outputs with a plain avio_open (no interrupt callback, no options, the GIL
    held), so neither a timeout nor FFmpeg's rw_timeout reaches that socket: a host that
    drops packets or a server that accepts and stays silent would hang the whole process.
    So first, with our own deadline: connect, and for rtmp:// check that the server
    answers the RTMP handshake (C0+C1 → S0+S1). Raises OutputError saying what failed.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host, port = parts.hostname, parts.port or (443 if scheme == "rtmps" else 1935)
    if not host:
        raise OutputError(f"{url}: no host in the URL; expected rtmp://host[:port]/app/key")
    try:
        with socket.create_connection((host, port), timeout=seconds) as sock:
            if scheme != "rtmp":
                return  # TLS first: the connection is as far as we check
            sock.settimeout(seconds)
            sock.sendall(b"\x03" + bytes(8) + os.urandom(1528))  # C0 + C1 (time 0, zero)
            got = 0
            while got < 1537:  # S0 + S1
                chunk = sock.recv(1537 - got)
                if not chunk:
                    raise ConnectionError("the server closed the connection during the RTMP handshake")
                got += len(chunk)
    except TimeoutError:
        raise OutputError(
            f"{url}: cannot open output (no answer within {seconds:g} s); check the URL, "
            "that the server is up and accepts publishing, and io.open_timeout_s"
        ) from None
    except OSError as exc:
        raise OutputError(
            f"{url}: cannot open output ({error_text(exc)}); check the URL and that the "
            "server is up and accepts publishing"
        ) from None
