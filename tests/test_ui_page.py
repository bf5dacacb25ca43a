"""The control page's server side: the preview tap (nothing taken or encoded without a
viewer, rate-bounded, never blocking the output stage), the page's routes behind the API's
token and session cookie, the MJPEG stream, the log events, and `run --ui`."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from test_api import TOKEN, Running

from streamswap.service.preview import PreviewTap
from streamswap.service.ui import STATIC_FILES, static_file


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frame(value: int, width: int = 1280, height: int = 720) -> np.ndarray:
    img = np.full((height, width, 3), value, np.uint8)
    cv2.putText(img, str(value), (50, 300), cv2.FONT_HERSHEY_SIMPLEX, 8, (255, 255, 255), 12)
    return img


def test_nothing_is_taken_or_encoded_while_nobody_watches() -> None:
    clock = Clock()
    tap = PreviewTap(fps=10, max_width=640, clock=clock)
    for i in range(20):
        clock.now += 0.1
        tap.output_frame(frame(i), SimpleNamespace(index=i))
    assert tap.frames_taken == 0 and tap.latest() is None and tap.frames_encoded == 0


def test_a_viewer_gets_rate_bounded_scaled_frames_encoded_once() -> None:
    clock = Clock()
    tap = PreviewTap(fps=10, max_width=640, clock=clock)
    with tap.watch():
        for i in range(10):  # 40 fps for a quarter second: at most 10 fps are taken
            clock.now += 0.025
            tap.output_frame(frame(i), SimpleNamespace(index=i))
        assert tap.frames_taken == 3  # at 0, 0.1, 0.2 s (rounding: 0.1 after the first)
        first = tap.latest()
        assert first is not None and first.index == 8 and first.seq == 3
        again = tap.latest()
        assert again is first and tap.frames_encoded == 1  # viewers share one JPEG
        assert tap.latest(after=first.seq) is None  # nothing newer
        image = cv2.imdecode(np.frombuffer(first.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (360, 640, 3)
        assert abs(int(image[10, 10, 0]) - 8) <= 3
    clock.now += 1
    tap.output_frame(frame(99), SimpleNamespace(index=99))
    assert tap.frames_taken == 3  # the viewer left


def test_the_output_stage_never_waits_for_an_encoder() -> None:
    clock = Clock()
    tap = PreviewTap(fps=1000, clock=clock)
    with tap.watch():
        tap.output_frame(frame(1, 64, 48), SimpleNamespace(index=1))
        with tap._buffer_lock:  # a viewer encoding right now
            clock.now += 1
            started = time.monotonic()
            tap.output_frame(frame(2, 64, 48), SimpleNamespace(index=2))
            assert time.monotonic() - started < 0.05
        assert tap.frames_taken == 1  # skipped, not waited for
        clock.now += 1
        tap.output_frame(frame(3, 64, 48), SimpleNamespace(index=3))
        latest = tap.latest()
        assert latest is not None and latest.index == 3


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """Works offline: every URL in the page's files is relative (no CDN, no fonts)."""
    for name in STATIC_FILES:
        text = static_file(name).decode()
        assert not re.search(r"(https?:)?//[a-z0-9]", text.replace("://", "")), name
        assert "http://" not in text and "https://" not in text, name
    html = static_file("index.html").decode()
    assert 'src="ui/app.js"' in html and 'href="ui/style.css"' in html
    assert "<script>" not in html  # no inline script: the page's CSP forbids it


@pytest.fixture
def guarded(tmp_path):
    r = Running(tmp_path, token=TOKEN)
    r.wait_ready()
    stop = threading.Event()

    def frames() -> None:  # the fake runtime's output, through the daemon's tap
        i = 0
        while not stop.is_set():
            r.daemon.page.tap.output_frame(frame(i % 200, 320, 240), SimpleNamespace(index=i))
            i += 1
            time.sleep(0.02)

    feeder = threading.Thread(target=frames, daemon=True)
    feeder.start()
    yield r
    stop.set()
    feeder.join(5)
    r.stop()


def test_page_routes_need_the_token_or_the_login_cookie(guarded: Running) -> None:
    client = guarded.client
    code, headers, body = client.request("GET", "/", token=None)
    assert code == 200 and headers["Content-Type"].startswith("text/html") and b"streamswap" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    code, headers, _ = client.request("GET", "/ui/app.js", token=None)
    assert code == 200 and headers["Content-Type"].startswith("text/javascript")
    assert client.request("GET", "/ui/secrets.txt", token=None)[0] == 404
    for path in ("/preview.jpg", "/preview.mjpg", "/events", "/status"):
        assert client.request("GET", path, token=None)[0] == 401, path
    # The page signs in with the token and then uses the cookie.
    code, _, _ = client.request(
        "POST",
        "/login",
        body=b'{"token": "wrong-token-wrong-token"}',
        headers={"Content-Type": "application/json"},
        token=None,
    )
    assert code == 401
    code, headers, _ = client.request(
        "POST",
        "/login",
        body=json.dumps({"token": TOKEN}).encode(),
        headers={"Content-Type": "application/json"},
        token=None,
    )
    assert code == 200
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    code, headers, body = client.request("GET", "/preview.jpg?timeout=10", headers={"Cookie": cookie}, token=None)
    assert code == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    assert int(headers["X-Frame-Index"]) >= 0 and int(headers["X-Preview-Seq"]) >= 1
    code, events = client.json("GET", "/events", headers={"Cookie": cookie}, token=None)
    assert code == 200 and events["seq"] >= 1
    # The refusals above, as the journal has them (the root level here is WARNING).
    assert any(
        e["level"] == "WARNING" and e["text"].startswith("api request refused") and "code=401" in e["text"]
        for e in events["events"]
    ), events
    assert all(set(e) == {"seq", "time", "level", "logger", "text"} for e in events["events"])
    later = client.json("GET", f"/events?after={events['seq']}", headers={"Cookie": cookie}, token=None)[1]
    assert all(e["seq"] > events["seq"] for e in later["events"])


def test_mjpeg_stream_parts_and_no_encoding_after_the_viewer_leaves(guarded: Running) -> None:
    tap = guarded.daemon.page.tap
    conn = http.client.HTTPConnection(guarded.client.host, guarded.client.port, timeout=10)
    conn.request("GET", "/preview.mjpg", headers={"Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    assert resp.status == 200
    boundary = resp.headers["Content-Type"].split("boundary=", 1)[1]
    assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
    seen = []
    for _ in range(3):
        line = resp.readline()
        while not line.strip():
            line = resp.readline()
        assert line.strip() == f"--{boundary}".encode()
        headers = {}
        while True:
            line = resp.readline().strip()
            if not line:
                break
            key, _, value = line.decode().partition(": ")
            headers[key.lower()] = value
        data = resp.read(int(headers["content-length"]))
        assert headers["content-type"] == "image/jpeg" and data[:2] == b"\xff\xd8"
        seen.append(int(headers["x-frame-index"]))
    assert seen == sorted(seen) and len(set(seen)) == 3
    assert tap.viewers == 1
    conn.close()
    deadline = time.monotonic() + 10
    while tap.viewers:
        assert time.monotonic() < deadline, "the viewer was never let go"
        time.sleep(0.05)
    taken, encoded = tap.frames_taken, tap.frames_encoded
    time.sleep(0.5)
    assert (tap.frames_taken, tap.frames_encoded) == (taken, encoded)


def test_run_ui_serves_the_page_for_one_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("STREAMSWAP_CONFIG", "STREAMSWAP_API_TOKEN")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamswap",
            "run",
            "-i",
            "test://?width=320&height=240",
            "-o",
            "null://",
            "--ui",
            "--api",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stderr is not None
        address = None
        for line in proc.stderr:
            m = re.search(r"control API listening address=(\S+)", line)
            if m:
                address = m.group(1)
                break
        assert address, "no API address logged"
        host, port = address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=20)
        conn.request("GET", "/")
        assert conn.getresponse().read().startswith(b"<!doctype html>")
        conn.request("GET", "/preview.jpg?timeout=15")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read()[:2] == b"\xff\xd8"
        conn.request("POST", "/pause")
        assert json.loads(conn.getresponse().read()) == {"ok": True, "paused": True}
        conn.request("GET", "/status")
        status = json.loads(conn.getresponse().read())
        assert status["paused"] is True and status["output_states"][0]["name"] == "null://"
        conn.request("GET", "/faces/selection")  # nothing is swapped: no selection routes
        resp = conn.getresponse()
        assert resp.status == 404, resp.read()
        resp.read()
        conn.request("POST", "/reload")
        resp = conn.getresponse()
        assert resp.status == 400 and b"no config reload" in resp.read()
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_run_page_hands_an_upload_to_the_face_stages_or_says_there_is_no_swapper() -> None:
    """`run --ui`: an uploaded face goes to the face stages' identity worker (was the
    Runtime's set_source_image); a run without --source has no swapper and says so."""
    import numpy as np

    from streamswap.errors import StreamswapError
    from streamswap.service.ui import RunControl

    class Pipeline:
        def status(self) -> dict:
            return {"state": "running", "source_identity": None}

    class Stages:
        def __init__(self) -> None:
            self.images: list = []

        def set_source_images(self, images: list) -> tuple[str, ...]:
            self.images.extend(images)
            return ("source image #1",)

    image = np.zeros((4, 4, 3), np.uint8)
    stages = Stages()
    RunControl(Pipeline(), stages).set_source_image(image)
    assert stages.images == [image]
    control = RunControl(Pipeline(), None)
    with pytest.raises(StreamswapError, match="--source"):
        control.set_source_image(image)
    assert control.status()["source_identity"] is None
