"""`streamswap run` end to end through the real io sources/sinks (PyAV files made here):
every frame in order, audio and timing preserved, SIGTERM leaves a playable file, bad
inputs give clear errors or are skipped and counted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from io_media import make_video

from streamswap.io.avsink import FLUSH_INTERVAL_S, file_lookahead

FPS = 30
SIZE = (320, 240)
BITS = 10  # frame index painted as 10 black/white blocks: up to 1023 frames


def paint_index(i: int, width: int, height: int) -> np.ndarray:
    img = np.full((height, width, 3), 96, np.uint8)
    block = width // BITS
    for b in range(BITS):
        if (i >> b) & 1:
            img[: height // 4, b * block : (b + 1) * block] = 255
        else:
            img[: height // 4, b * block : (b + 1) * block] = 0
    return img


def read_index(img: np.ndarray) -> int:
    h, w = img.shape[:2]
    block = w // BITS
    band = img[h // 16 : h // 4 - h // 16]
    value = 0
    for b in range(BITS):
        if band[:, b * block + block // 4 : (b + 1) * block - block // 4].mean() > 128:
            value |= 1 << b
    return value


def make_media(
    path: Path,
    *,
    frames: int = 300,
    audio: bool = True,
    video: bool = True,
    change_size_at: int | None = None,
    new_size: tuple[int, int] = (480, 360),
) -> Path:
    """H.264 (+ AAC tone) with the frame index painted into every picture."""
    return make_video(
        path,
        frames=frames,
        fps=FPS,
        size=SIZE,
        audio=audio,
        video=video,
        change_size_at=change_size_at,
        new_size=new_size,
        picture=paint_index,
    )


def probe(path: Path) -> dict:
    """Indices read back from the pictures, sizes, first/last times, audio facts."""
    out: dict = {"indices": [], "sizes": set(), "v_times": [], "a_times": [], "a_end": None}
    with av.open(str(path)) as c:
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        out["audio_codec"] = a.codec_context.name if a is not None else None
        streams = [s for s in (v, a) if s is not None]
        for packet in c.demux(*streams):
            if packet.stream is a and packet.pts is not None and packet.size:
                t0 = float(packet.pts * a.time_base)
                out["a_times"].append(t0)
                out["a_end"] = t0 + float((packet.duration or 0) * a.time_base)
            if packet.stream is v:
                for frame in packet.decode():
                    img = frame.to_ndarray(format="bgr24")
                    out["indices"].append(read_index(img))
                    out["sizes"].add((frame.width, frame.height))
                    out["v_times"].append(float(frame.pts * v.time_base))
    out["a_first_decoded"] = None
    if out["audio_codec"]:
        with av.open(str(path)) as c:  # decoders drop the priming samples the container marks
            first = next(c.decode(audio=0))
            out["a_first_decoded"] = float(first.pts * first.time_base)
    return out


def streamswap(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "STREAMSWAP_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "streamswap", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def ten_seconds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_media(tmp_path_factory.mktemp("media") / "in.mp4", frames=10 * FPS)


def test_file_to_file_keeps_every_frame_audio_and_timing(ten_seconds: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    result = streamswap("run", "--input", str(ten_seconds), "--output", str(out))
    assert result.returncode == 0, result.stderr
    src, dst = probe(ten_seconds), probe(out)
    assert src["indices"] == list(range(10 * FPS))
    assert dst["indices"] == list(range(10 * FPS))  # every frame, in order
    assert dst["sizes"] == {SIZE}
    frame = 1 / FPS
    # duration preserved (video span and audio span), within one frame
    assert abs((dst["v_times"][-1] - dst["v_times"][0]) - (src["v_times"][-1] - src["v_times"][0])) <= frame
    assert dst["audio_codec"] == "aac"
    assert abs(dst["a_end"] - src["a_end"]) <= frame
    assert abs(len(dst["a_times"]) - len(src["a_times"])) <= 1
    # audio/video start offset within one frame, as in the input
    assert abs(dst["v_times"][0] - dst["a_times"][0]) <= frame
    assert abs((dst["v_times"][0] - dst["a_times"][0]) - (src["v_times"][0] - src["a_times"][0])) <= frame
    # Exact timing: every frame keeps its source time (so the first one lasts one frame
    # interval too), the audio packets keep theirs (the AAC priming packet before 0
    # included), and the first audible sample starts with the first picture.
    tick = 0.001
    assert len(dst["v_times"]) == len(src["v_times"])
    assert max(abs(d - s) for d, s in zip(dst["v_times"], src["v_times"])) <= tick
    assert dst["a_times"][:50] == pytest.approx(src["a_times"][:50], abs=tick)
    assert dst["a_first_decoded"] == pytest.approx(src["a_first_decoded"], abs=tick)
    assert abs(dst["a_first_decoded"] - dst["v_times"][0]) <= tick
    assert "300 frames out of 300 read, 0 dropped" in result.stderr


def test_sigterm_during_file_run_leaves_playable_mp4(ten_seconds: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut.mp4"
    env = {k: v for k, v in os.environ.items() if k != "STREAMSWAP_CONFIG"}
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pipeline:\n  stats_interval: 0.1\n")
    # --live paces the file at its frame rate, so the run lasts ~10 s unless stopped.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamswap",
            "run",
            "--config",
            str(cfg),
            "--live",
            "--log-every",
            "0.1",
            "--input",
            str(ten_seconds),
            "--output",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    written = 0
    try:
        for line in proc.stderr:
            m = re.search(r"stats .*frames_out=(\d+)", line)
            if m and int(m.group(1)) >= 45:
                written = int(m.group(1))
                break
        assert written, "no stats line with frames written"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(60) == 0, rest
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = re.search(r"run: (\d+) frames out of (\d+) read, (\d+) dropped", rest)
    assert summary, rest
    frames_out = int(summary.group(1))
    assert written <= frames_out < 10 * FPS
    dst = probe(out)
    assert len(dst["indices"]) == frames_out  # plays to the last written frame
    assert dst["indices"] == sorted(dst["indices"]) and dst["indices"][0] == 0
    assert dst["audio_codec"] == "aac" and dst["a_times"]


def test_sigkill_loses_at_most_the_flush_interval_in_every_container(ten_seconds: Path, tmp_path: Path) -> None:
    outs = [tmp_path / f"killed{suffix}" for suffix in (".mp4", ".mov", ".mkv", ".flv")]
    env = {k: v for k, v in os.environ.items() if k != "STREAMSWAP_CONFIG"}
    cfg = tmp_path / "c.yaml"
    # One keyframe in 10 s: a container that waits for keyframes to write would lose it all.
    # Paced at the file's rate (so the kill lands mid-run) but lossless (--no-live): a loaded
    # machine makes a live run drop frames, which are no loss of the kill's.
    cfg.write_text("pipeline:\n  stats_interval: 0.1\nio:\n  keyframe_interval_s: 10\n  file_pacing: realtime\n")
    args = [
        sys.executable,
        "-m",
        "streamswap",
        "run",
        "--config",
        str(cfg),
        "--no-live",
        "--log-every",
        "0.1",
        "--input",
        str(ten_seconds),
    ]
    for out in outs:
        args += ["--output", str(out)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    written = 0
    try:
        for line in proc.stderr:
            m = re.search(r"progress .*frames=(\d+)/", line)  # frames out, as the file run shows them
            if m and int(m.group(1)) >= 45:
                written = int(m.group(1))
                break
        assert written, "no stats line with frames written"
        proc.kill()  # SIGKILL: no drain, no trailer
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # What avsink bounds a kill to: FLUSH_INTERVAL_S (7.5 frames at 30 fps) plus the
    # encoder's delay (its capped lookahead + 1); `written` was counted a moment before the kill.
    for out in outs:
        indices = probe(out)["indices"]
        assert indices == list(range(len(indices))), out.name
        assert written - len(indices) <= FLUSH_INTERVAL_S * FPS + file_lookahead(FPS) + 2, (
            out.name,
            written,
            len(indices),
        )


def test_nonexistent_input_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    result = streamswap("run", "--input", str(missing), "--output", str(tmp_path / "o.mp4"))
    assert result.returncode == 2
    assert "nope.mp4" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_audio_only_input_is_a_clear_error(tmp_path: Path) -> None:
    audio_only = make_media(tmp_path / "audio.m4a", frames=30, video=False)
    result = streamswap("run", "--input", str(audio_only), "--output", str(tmp_path / "o.mp4"))
    assert result.returncode == 2, result.stderr
    assert "audio.m4a" in result.stderr and "video" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_no_audio_input(tmp_path: Path) -> None:
    src = make_media(tmp_path / "silent.mp4", frames=60, audio=False)
    out = tmp_path / "o.mp4"
    result = streamswap("run", "--input", str(src), "--output", str(out))
    assert result.returncode == 0, result.stderr
    dst = probe(out)
    assert dst["indices"] == list(range(60)) and dst["audio_codec"] is None


def test_resolution_change_mid_stream(tmp_path: Path) -> None:
    # MKV keeps the second encoder's in-band SPS; the decoder sees the new size mid-stream
    src = make_media(tmp_path / "change.mkv", frames=90, change_size_at=45)
    assert probe(src)["sizes"] == {SIZE, (480, 360)}
    out = tmp_path / "o.mp4"
    result = streamswap("run", "--input", str(src), "--output", str(out))
    assert result.returncode == 0, result.stderr
    dst = probe(out)
    assert dst["sizes"] == {SIZE}  # the run's size is fixed; later frames are scaled to it
    assert dst["indices"] == list(range(90)) and dst["audio_codec"] == "aac"


def test_truncated_and_corrupt_input_continues_and_counts(tmp_path: Path) -> None:
    # MPEG-TS resyncs after damage. (No audio: AAC from TS is ADTS, which the MP4 sink
    # cannot pass through yet without the aac_adtstoasc filter.)
    src = make_media(tmp_path / "in.ts", frames=150, audio=False)
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(1)
    for start in (len(data) // 4, len(data) // 2):  # two damaged stretches mid-stream
        data[start : start + 6000] = rng.integers(0, 256, 6000, dtype=np.uint8).tobytes()
    broken = tmp_path / "broken.ts"
    broken.write_bytes(bytes(data[: int(len(data) * 0.8)]))  # and cut off the end
    out = tmp_path / "o.mp4"
    result = streamswap("run", "--input", str(broken), "--output", str(out))
    assert result.returncode == 0, result.stderr
    m = re.search(r"run: (\d+) frames out of (\d+) read, (\d+) dropped, (\d+) errors", result.stderr)
    assert m, result.stderr
    frames_out, errors = int(m.group(1)), int(m.group(4))
    assert 0 < frames_out < 150 and errors > 0
    dst = probe(out)
    assert len(dst["indices"]) == frames_out
    assert dst["indices"][0] == 0


def test_interrupts_answer_while_a_silent_server_is_being_opened(tmp_path: Path) -> None:
    # The input server accepts and never answers; the open would take io.open_timeout_s
    # (60 s here). Ctrl-C asks to stop, a second Ctrl-C quits at once.
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(60)
    port = listener.getsockname()[1]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("io:\n  open_timeout_s: 60\n  read_timeout_s: 60\n")
    env = {k: v for k, v in os.environ.items() if k != "STREAMSWAP_CONFIG"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamswap",
            "run",
            "--config",
            str(cfg),
            "--input",
            f"rtsp://127.0.0.1:{port}/cam",
            "--output",
            str(tmp_path / "o.mp4"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    try:
        conn, _ = listener.accept()  # the run is now opening the input
        proc.send_signal(signal.SIGINT)
        for line in proc.stderr:
            if "stopping once the input and outputs are open" in line:
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 130
        rest = proc.stderr.read()
        assert "exiting at once" in rest and "Traceback" not in rest
        conn.close()
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()


def test_unreachable_url_is_a_clear_error_without_reconnect(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("io:\n  reconnect: false\n  open_timeout_s: 2\n  read_timeout_s: 2\n")
    result = streamswap(
        "run", "--config", str(cfg), "--input", "rtmp://127.0.0.1:9/live/none", "--output", "null://", timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "rtmp://127.0.0.1:9/live/" in result.stderr  # the last path part is masked as a stream key
    assert "Traceback" not in result.stderr


def test_demo_swaps_faces_in_the_moving_photo(tmp_path: Path) -> None:
    from conftest import require

    from streamswap.commands.demo import demo_photos
    from streamswap.errors import InputError
    from streamswap.io.testsrc import PhotoSource

    try:
        camera, _face = demo_photos()
    except InputError:
        require(False, "demo photos (pip install 'streamswap[demo]')")
    out = tmp_path / "demo.mp4"
    result = streamswap("demo", "-o", str(out), "--seconds", "0.4", "--fps", "25", "--size", "480x360")
    assert result.returncode == 0, result.stderr
    assert "demo: wrote" in result.stderr
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 10
    # the same moving photo without swapping, frame 0
    plain = PhotoSource(str(camera), 480, 360, Fraction(25), False, 1)
    plain.open()
    ref = np.empty((360, 480, 3), np.uint8)
    plain.read_into(ref)
    diff = np.abs(frames[0].astype(np.int16) - ref.astype(np.int16)).max(axis=2)
    assert diff[:, :8].mean() < 6  # background untouched (only the coding noise of CRF 20)
    assert (diff > 40).sum() > 500  # faces were replaced


def test_demo_without_photo_packages_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from streamswap.commands import demo
    from streamswap.errors import InputError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        demo.importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a)
    )
    with pytest.raises(InputError, match=r"-m pip install -e '?\S+\[demo\]"):
        demo.demo_photos()


def test_run_with_a_source_photo_without_a_face_is_a_clear_error(tmp_path: Path) -> None:
    import cv2

    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((256, 256, 3), 128, np.uint8))
    result = streamswap("run", "--source", str(blank), "--input", "test://pattern?frames=3", "--output", "null://")
    assert result.returncode == 2, result.stderr
    assert "wall.png" in result.stderr and "face" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_interrupted_run_gives_up_draining_after_drain_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """After Ctrl-C the run waits pipeline.drain_timeout seconds of real (here: fake) time
    for the frames in flight, whatever the stats interval, then stops without draining."""
    from streamswap.commands import run as run_cmd
    from streamswap.pipeline.settings import PipelineSettings

    class Clock:
        now = 1000.0

        def monotonic(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr(run_cmd, "time", clock)

    class NeverDrains:  # a Pipeline whose frames in flight never reach the sinks
        settings = PipelineSettings(stats_interval=0.1, drain_timeout=2.0)
        input_error = None

        def __init__(self) -> None:
            self.calls: list[tuple[str, float]] = []
            self.interrupted_at: float | None = None

        def start(self) -> None:
            pass

        def wait(self, timeout: float) -> bool:
            clock.now += timeout
            if self.interrupted_at is None:
                self.interrupted_at = clock.now
                signal.raise_signal(signal.SIGINT)  # Ctrl-C once
            return any(call == "stop" for call, _ in self.calls)

        def request_stop(self) -> None:
            self.calls.append(("request_stop", clock.now))

        def stop(self, drain: bool = True) -> None:
            assert drain is False
            self.calls.append(("stop", clock.now))

        def status(self) -> dict:
            return {"frames_out": 0, "frames_in": 0, "dropped": 0, "errors": {}}

    runtime = NeverDrains()
    assert run_cmd.run_until_done(runtime, quiet=True) == 0  # type: ignore[arg-type]
    (first, asked_at), (last, stopped_at) = runtime.calls[0], runtime.calls[-1]
    assert first == "request_stop" and last == "stop"
    assert 2.0 <= stopped_at - asked_at <= 2.0 + 0.25  # the drain timeout, not a multiple of it


def test_first_sigterm_ends_a_run_whose_outputs_never_finish_opening() -> None:
    """An output whose open never returns (a device that does not answer) must not make
    the first SIGTERM wait for it: the run ends at the drain deadline, without a second."""
    import threading
    import time

    from streamswap.commands import run as run_cmd
    from streamswap.pipeline.settings import PipelineSettings

    release = threading.Event()

    class OpensForever:
        settings = PipelineSettings(stats_interval=0.1, drain_timeout=0.5)
        input_error = None
        stop_requested = False

        def start(self) -> None:
            release.wait(20)

        def request_stop(self) -> None:
            self.stop_requested = True

        def status(self) -> dict:
            return {"frames_out": 0, "frames_in": 0, "dropped": 0, "errors": {}}

    runtime = OpensForever()
    # From another thread: the handler runs only when the main thread next runs Python code.
    threading.Timer(0.2, signal.raise_signal, (signal.SIGTERM,)).start()
    start = time.monotonic()
    try:
        assert run_cmd.run_until_done(runtime, quiet=True) == 130  # type: ignore[arg-type]
    finally:
        release.set()
    assert runtime.stop_requested
    assert time.monotonic() - start < 0.2 + 0.5 + 2.0  # the signal, the deadline, slack
