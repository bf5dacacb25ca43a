"""Sources: real H.264/AAC files made by PyAV, generated test sources, bad inputs, reconnects."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import require
from io_media import frame_image, make_video, read_video

from streamswap.errors import InputError
from streamswap.io import avsource
from streamswap.io.avsource import AvSource, OpenSpec
from streamswap.io.reconnect import Backoff, ReconnectingSource
from streamswap.io.settings import IoSettings
from streamswap.io.testsrc import default_photo
from streamswap.io.uri import open_source


def drain(source, limit: int = 10_000):
    fmt = source.open()
    buf = np.empty((fmt.height, fmt.width, 3), np.uint8)
    metas, images = [], []
    try:
        while len(metas) < limit and (meta := source.read_into(buf)) is not None:
            metas.append(meta)
            images.append(buf.copy())
    finally:
        source.close()
    return fmt, metas, images


def grey_level(img: np.ndarray) -> float:
    """The frame_image grey level, read away from the moving red bar."""
    mask = img[:, :, 2].astype(int) - img[:, :, 0].astype(int) < 60
    return float(np.median(img[:, :, 0][mask]))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    return {
        "av": make_video(d / "av.mp4", frames=45),
        "noaudio": make_video(d / "noaudio.mp4", frames=20, audio=False),
        "audioonly": make_video(d / "audioonly.m4a", video=False),
        "resize": make_video(d / "resize.ts", frames=40, change_size_at=20, audio=False),
        "mkv": make_video(d / "av.mkv", frames=45),
    }


def test_file_source_frames_pts_and_audio(media):
    source = open_source(str(media["av"]), IoSettings())
    assert source.live is False
    fmt, metas, images = drain(source)
    want_pts, _, time_base = read_video(media["av"])
    assert (fmt.width, fmt.height) == (320, 240) and fmt.fps == 30 and fmt.time_base == time_base
    assert [m.index for m in metas] == list(range(45))
    assert [m.pts for m in metas] == want_pts
    assert not any(m.synthetic for m in metas)
    # Content survives decode -> BGR (grey level encodes the frame number).
    for i in (0, 17, 44):
        assert abs(grey_level(images[i]) - grey_level(frame_image(i, 320, 240))) < 6
    assert source.audio is not None and source.audio.codec == "aac" and source.audio.sample_rate == 48000


def test_file_source_queues_audio_packets(media):
    source = open_source(str(media["av"]), IoSettings())
    fmt = source.open()
    buf = np.empty((fmt.height, fmt.width, 3), np.uint8)
    packets = []
    while source.read_into(buf) is not None:
        packets += source.take_audio()
    packets += source.take_audio()
    source.close()
    pts = [p.pts for p in packets]
    assert len(packets) > 60 and pts == sorted(pts)
    assert source.take_audio() == []


def test_file_source_fixed_size_from_settings(media):
    fmt, metas, images = drain(open_source(str(media["av"]), IoSettings(width=160, height=120)))
    assert (fmt.width, fmt.height) == (160, 120) and images[0].shape == (120, 160, 3)
    assert len(metas) == 45


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("live, paced", [(True, True), (False, False)])
def test_file_pacing(media, monkeypatch, live, paced):
    clock = FakeClock()
    monkeypatch.setattr(avsource, "time", clock)
    source = open_source(str(media["noaudio"]), IoSettings(), live=live)
    assert source.live is live
    _, metas, _ = drain(source)
    assert len(metas) == 20  # a live stand-in file still loses nothing by itself
    if paced:  # 19 frame intervals at 30 fps, wall time follows the file's pts
        assert sum(clock.slept) == pytest.approx(19 / 30, abs=1e-3)
        # a paced frame is captured when it is due, not before the wait (latency)
        spans = [m.capture_time - metas[0].capture_time for m in metas]
        assert spans == pytest.approx([i / 30 for i in range(20)], abs=1e-3)
    else:
        assert clock.slept == []


def test_file_pacing_forced_by_settings(media, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(avsource, "time", clock)
    drain(open_source(str(media["noaudio"]), IoSettings(file_pacing="realtime"), live=False))
    assert sum(clock.slept) == pytest.approx(19 / 30, abs=1e-3)


def test_pattern_source_moves_and_has_a_face():
    source = open_source("test://?width=320&height=240&fps=60&frames=12", IoSettings(), live=False)
    fmt, metas, images = drain(source)
    assert (fmt.width, fmt.height, fmt.fps) == (320, 240, 60)
    assert [m.pts for m in metas] == list(range(12)) and len(images) == 12
    assert not np.array_equal(images[0], images[11])  # it moves
    skin = np.all(np.abs(images[0].astype(int) - (140, 170, 225)) < 10, axis=2)
    assert skin.sum() > 500  # the drawn face


def test_pattern_source_live_is_paced():
    source = open_source("test://pattern?frames=3&fps=1000", IoSettings())
    assert source.live is True
    assert len(drain(source)[1]) == 3


def test_photo_source_from_path(tmp_path):
    photo = np.zeros((100, 80, 3), np.uint8)
    photo[:] = (10, 200, 30)
    path = tmp_path / "p.png"
    cv2.imwrite(str(path), photo)
    source = open_source(f"test://photo?path={path}&width=320&height=240&frames=20", IoSettings(), live=False)
    _, metas, images = drain(source)
    green = [np.argwhere(np.all(np.abs(im.astype(int) - (10, 200, 30)) < 8, axis=2)) for im in images]
    assert all(len(g) > 1000 for g in green)
    xs = [int(g[:, 1].min()) for g in green]
    assert xs[0] != xs[10]  # it glides across the frame


def test_photo_source_default_photo():
    require(default_photo() is not None, "insightface wheel (t1.jpg) for test://photo's default")
    _, metas, images = drain(open_source("test://photo?frames=2", IoSettings(), live=False))
    assert len(metas) == 2 and images[0].std() > 20


def test_photo_source_bad_path():
    with pytest.raises(InputError, match="nonexistent.jpg: image file not found"):
        open_source("test://photo?path=/nonexistent.jpg", IoSettings()).open()


def test_corrupt_packets_are_skipped_and_counted(media, tmp_path):
    data = bytearray(media["av"].read_bytes())
    import av

    with av.open(str(media["av"])) as container:
        positions = [p.pos for p in container.demux(video=0) if p.size]
    for k in (10, 11, 12):  # garbage NAL length prefixes: the decoder rejects these packets
        data[positions[k] : positions[k] + 4] = b"\xff\xff\xff\xff"
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    source = open_source(str(bad), IoSettings())
    _, metas, images = drain(source)
    assert source.counters["decode_errors"] >= 3
    assert 30 <= len(metas) <= 42  # the run went on past the damage
    assert [m.index for m in metas] == list(range(len(metas)))
    assert abs(grey_level(images[-1]) - grey_level(frame_image(44, 320, 240))) < 6


def test_truncated_file_reads_up_to_the_cut(media, tmp_path):
    data = media["mkv"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    _, metas, images = drain(open_source(str(cut), IoSettings()))
    assert 10 < len(metas) < 45
    assert abs(grey_level(images[5]) - grey_level(frame_image(5, 320, 240))) < 6


def test_truncated_mp4_without_index_is_a_clear_error(media, tmp_path):
    data = media["av"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="cut.mp4"):
        open_source(str(cut), IoSettings()).open()


def test_nonexistent_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_source(str(tmp_path / "missing.mp4"), IoSettings())
    with pytest.raises(InputError, match="folder"):
        open_source(str(tmp_path), IoSettings())


def test_audio_only_input(media):
    with pytest.raises(InputError, match="audio-only"):
        open_source(str(media["audioonly"]), IoSettings()).open()


def test_input_without_audio(media):
    source = open_source(str(media["noaudio"]), IoSettings())
    _, metas, _ = drain(source)
    assert source.audio is None and len(metas) == 20 and source.take_audio() == []


def test_resolution_change_mid_stream(media):
    source = open_source(str(media["resize"]), IoSettings())
    fmt, metas, images = drain(source)
    assert (fmt.width, fmt.height) == (320, 240)
    assert len(metas) == 40 and all(im.shape == (240, 320, 3) for im in images)
    # After the switch to 480x360 the picture is rescaled, not garbled.
    for i in (25, 39):
        assert abs(grey_level(images[i]) - grey_level(frame_image(i, 480, 360))) < 6


def test_unknown_scheme_lists_supported():
    with pytest.raises(InputError) as info:
        open_source("gopher://x/y", IoSettings())
    assert "gopher" in str(info.value) and "rtsp://" in str(info.value) and "test://" in str(info.value)


def test_webcam_uri_options(tmp_path):
    fake = tmp_path / "video7"
    fake.touch()
    source = open_source(f"v4l2://{fake}?width=1280&height=720&fps=30&format=mjpeg", IoSettings(reconnect=False))
    assert isinstance(source, AvSource)
    assert source.spec.format == "v4l2" and source.spec.url == str(fake)
    assert source.spec.options == {"video_size": "1280x720", "framerate": "30", "input_format": "mjpeg"}
    assert source.live is True
    with pytest.raises(InputError, match="streamswap cameras"):
        open_source("/dev/video-missing", IoSettings())


def test_unreachable_stream_is_a_clear_error():
    settings = IoSettings(open_timeout_s=2, read_timeout_s=2)
    source = open_source("rtsp://127.0.0.1:9/none", settings)
    with pytest.raises(InputError, match="cannot open input"):
        source.open()


def test_silent_server_times_out_with_a_clear_error():
    # A server that accepts the connection and never answers (a hung camera).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    try:
        settings = IoSettings(open_timeout_s=0.5, read_timeout_s=0.5, reconnect=False)
        source = open_source(f"rtsp://127.0.0.1:{port}/stream", settings)
        assert source.spec.options["rtsp_transport"] == "tcp"
        assert source.spec.options["timeout"] == "500000"  # µs: RTSP socket I/O timeout
        assert source.spec.timeout == (0.5, 0.5)  # PyAV's open/read interrupt deadlines
        with pytest.raises(InputError, match=r"no answer within \d+ s.*read_timeout_s"):
            source.open()
    finally:
        listener.close()


def _network_stand_in(path: Path, fixed, fail: threading.Event | None = None) -> AvSource:
    """A "network" input read from a file: its end counts as losing the stream."""
    if fail is not None and fail.is_set():
        raise OSError("connection refused")
    return AvSource(OpenSpec(str(path), "network"), live=True, pace=False, size=fixed, name="net")


@pytest.mark.parametrize("on_loss", ["repeat", "no-signal"])
def test_lost_input_reconnects_with_synthetic_frames(media, on_loss):
    failing = threading.Event()
    failing.set()
    calls = []

    def make(fixed):
        calls.append(fixed)
        if len(calls) == 4:  # the third reconnect attempt succeeds
            failing.clear()
        return _network_stand_in(media["noaudio"], fixed, failing if len(calls) > 1 else None)

    source = ReconnectingSource(make, name="net", on_loss=on_loss, backoff=Backoff(0.01, 0.02))
    fmt = source.open()
    buf = np.empty((fmt.height, fmt.width, 3), np.uint8)
    metas, last_real = [], None
    while len(metas) < 200:
        meta = source.read_into(buf)
        metas.append(meta)
        if not meta.synthetic and len(metas) <= 20:
            last_real = buf.copy()
        if meta.synthetic and on_loss == "repeat":
            assert np.array_equal(buf, last_real)
        if meta.synthetic and on_loss == "no-signal":
            assert abs(int(buf[0, 0, 0]) - 48) < 2
        if source.counters["reconnects"] == 1 and not meta.synthetic:
            break
    source.close()
    real = [m for m in metas if not m.synthetic]
    assert len(real) == 21 and metas[20].synthetic  # 20 frames, a gap, then the new stream
    assert source.counters["reconnect_failures"] == 2 and source.counters["synthetic"] >= 1
    assert calls[1:] == [(320, 240)] * 3  # reconnections keep the run's size
    assert [m.index for m in metas] == list(range(len(metas)))
    pts = [m.pts for m in metas]
    assert all(b > a for a, b in zip(pts, pts[1:]))  # the timeline continues across the gap


def test_close_from_another_thread_during_reads(media):
    source = open_source(str(media["av"]), IoSettings(), live=True)  # paced: reads block
    fmt = source.open()
    buf = np.empty((fmt.height, fmt.width, 3), np.uint8)
    assert source.read_into(buf) is not None
    closer = threading.Timer(0.1, source.close)
    closer.start()
    n = 1
    while source.read_into(buf) is not None:
        n += 1
    closer.join()
    assert 1 < n < 45  # stopped early, without crashing the decoder


def test_http_stream_source_reconnects_after_the_stream_ends(media):
    """A real network input over 127.0.0.1: its end is a loss; it reopens and continues."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(media["av"].parent))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{media['resize'].name}"
        settings = IoSettings(reconnect_initial_s=0.01, reconnect_max_s=0.05, open_timeout_s=5, read_timeout_s=5)
        source = open_source(url, settings)
        assert isinstance(source, ReconnectingSource) and source.live
        fmt = source.open()
        buf = np.empty((fmt.height, fmt.width, 3), np.uint8)
        metas = []
        while source.counters["reconnects"] < 1 or len(metas) < 50:
            metas.append(source.read_into(buf))
            assert len(metas) < 2000, "never reconnected"
        source.close()
    finally:
        server.shutdown()
        server.server_close()
    assert source.read_into(buf) is None  # closed: the end
    real = [m for m in metas if not m.synthetic]
    assert len(real) >= 41 and source.counters["synthetic"] >= 1
    pts = [m.pts for m in metas]
    assert all(b > a for a, b in zip(pts, pts[1:]))


def test_bgr_writer_fast_path_matches_swscale(media):
    import av

    from streamswap.io.convert import BgrWriter

    with av.open(str(media["av"])) as container:
        frame = next(container.decode(video=0))
        writer = BgrWriter(frame.width, frame.height)
        fast = np.empty((frame.height, frame.width, 3), np.uint8)
        writer.write(frame, fast)
        assert writer.fast_frames == 1  # untagged yuv420p at the run size: no allocation
        reference = frame.to_ndarray(format="bgr24")  # swscale
    assert np.abs(fast.astype(int) - reference.astype(int)).mean() < 2.0


def test_source_uses_the_allocation_free_path_until_the_size_changes(media):
    source = open_source(str(media["resize"]), IoSettings())
    drain(source)
    assert source._writer.fast_frames == 20  # the 480x360 half needs rescaling (swscale)


@pytest.mark.parametrize(
    "uri, platform, fmt, device, options",
    [
        (
            "avfoundation://0?fps=30&width=1280&height=720",
            "linux",
            "avfoundation",
            "0",
            {"video_size": "1280x720", "framerate": "30"},
        ),
        ("dshow://Integrated Camera?format=mjpeg", "linux", "dshow", "video=Integrated Camera", {"vcodec": "mjpeg"}),
        ("webcam://0", "darwin", "avfoundation", "0", {}),
        ("webcam://USB Cam", "win32", "dshow", "video=USB Cam", {}),
    ],
)
def test_camera_uris_per_platform(monkeypatch, uri, platform, fmt, device, options):
    import sys

    monkeypatch.setattr(sys, "platform", platform)
    source = open_source(uri, IoSettings(reconnect=False))
    assert (source.spec.format, source.spec.url, source.spec.options) == (fmt, device, options)
    assert source.spec.kind == "device" and source.live


def test_music_file_with_cover_art_is_audio_only(tmp_path):
    import av
    from io_media import SAMPLE_RATE, _write_tone

    path = tmp_path / "song.mp4"
    container = av.open(str(path), "w", format="mp4")
    audio = container.add_stream("aac", rate=SAMPLE_RATE)
    audio.codec_context.layout = "stereo"
    cover = container.add_stream("mjpeg", rate=1)
    cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
    cover.disposition = av.stream.Disposition.attached_pic
    picture = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24").reformat(format="yuvj420p")
    picture.pts = 0
    packets = list(cover.encode(picture)) + list(cover.encode(None))
    _write_tone(container, audio, 1.0)
    for packet in packets:
        container.mux(packet)
    container.close()
    with av.open(str(path)) as check:
        assert check.streams.video  # FFmpeg lists the cover as a video stream
    with pytest.raises(InputError, match="audio-only"):
        open_source(str(path), IoSettings()).open()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"io.bogus": 1}, "io.bogus: unknown key"),
        ({"io.width": 640}, "io.width/height: give both"),
        ({"io.width": 641, "io.height": 480}, "io.width: must be even"),
        ({"io.on_loss": "black"}, "io.on_loss: must be one of repeat, no-signal"),
        ({"io.reconnect_max_s": 0.1}, "io.reconnect_max_s: must be ≥"),
        ({"io.encoder": "x265"}, "io.encoder: must be one of"),
    ],
)
def test_io_settings_errors_name_the_key(overrides, message):
    from streamswap.config import load_config
    from streamswap.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)
    assert load_config(overrides={"io.width": 1280, "io.height": 720}).io.width == 1280


def test_file_uri_scheme(media):
    source = open_source(f"file://{media['noaudio']}", IoSettings())
    assert len(drain(source)[1]) == 20


@pytest.mark.parametrize("live", [True, False])
def test_live_decoding_adds_no_frames_of_delay(media, live):
    # Frame threading would keep frames inside the decoder (one per thread): on a live
    # input each packet must come out as its frame at once (clip without B-frames).
    source = AvSource(OpenSpec(str(media["noaudio"]), "file"), live=live, pace=False)
    video_packets = []
    real_next_packet = source._next_packet

    def counting() -> object:
        packet = real_next_packet()
        if packet is not None and packet.stream.type == "video" and packet.size:
            video_packets.append(packet.pts)
        return packet

    source._next_packet = counting
    source.open()
    buf = np.empty((240, 320, 3), np.uint8)
    lag = []
    while (meta := source.read_into(buf)) is not None:
        lag.append(len(video_packets) - (meta.index + 1))
    source.close()
    assert len(lag) == 20
    if live:
        assert source._video.thread_type.name == "SLICE"
        assert max(lag) == 0, lag
