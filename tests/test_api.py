"""The control API against a running daemon (in-process, fake runtime making frames):
health/ready, metrics, status, source switch, pause/resume, reload, and refusals that
leave the stream running. test_serve.py repeats the key paths on `streamswap serve`."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from service_fakes import FakePipeline, RecordingStages, identity_of

from streamswap.commands.serve import check_endpoints
from streamswap.config import load_config
from streamswap.errors import Busy, ConfigError
from streamswap.service.daemon import Daemon
from streamswap.service.settings import needs_token, parse_bind

TOKEN = "t0ken-for-the-tests-0123456789"


def astronaut_png() -> bytes:
    import skimage.data

    ok, buf = cv2.imencode(".png", cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def flat_png(value: int = 128) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((64, 64, 3), value, np.uint8))
    return buf.tobytes()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose header claims width×height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")
    )


class Client:
    def __init__(self, url: str, token: str | None = None) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.token = host, int(port), token

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = "default",
    ) -> tuple[int, Any, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        hdrs = dict(headers or {})
        tok = self.token if token == "default" else token
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.headers, data  # case-insensitive names

    def json(self, method: str, path: str, **kw) -> tuple[int, dict]:
        code, _, data = self.request(method, path, **kw)
        return code, json.loads(data)


class Running:
    def __init__(
        self, tmp_path: Path, api: str = "127.0.0.1:0", token: str | None = None, hold_loading: bool = False, **service
    ) -> None:
        self.config_file = tmp_path / "serve.yaml"
        self.write_config(
            {
                "service": {
                    "api": api,
                    "token": token,
                    "status_interval_s": 0.1,
                    "stall_s": 0.5,
                    "client_timeout_s": 2.0,
                    **service,
                }
            }
        )
        self.stages = RecordingStages()
        self.loading = threading.Event()
        if not hold_loading:
            self.loading.set()

        def build(cfg, extend_timeout):
            self.loading.wait(20)
            return self.stages

        load = lambda: load_config(self.config_file)  # noqa: E731
        self.daemon = Daemon(
            load(), load, build_stages=build, make_pipeline=FakePipeline, check_endpoints=check_endpoints, environ={}
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self.thread.start()
        deadline = time.monotonic() + 10
        while (self.daemon.api is None or self.daemon.api._server is None) and self.error is None:
            assert time.monotonic() < deadline, "API did not start"
            time.sleep(0.01)
        if self.error is None:
            self.client = Client(self.daemon.api.url, token)

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:
            self.error = exc

    def write_config(self, data: dict) -> None:
        self.config_file.write_text(yaml.safe_dump(data))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while not self.daemon.health()[0]:
            assert time.monotonic() < deadline, "daemon never became ready"
            time.sleep(0.02)

    def assert_streaming(self) -> None:
        """The daemon still runs and frames still come out."""
        assert self.thread.is_alive()
        before = self.daemon.frames_out()
        deadline = time.monotonic() + 5
        while self.daemon.frames_out() <= before + 2:
            assert time.monotonic() < deadline, "frames stopped"
            time.sleep(0.01)

    def stop(self) -> None:
        self.stages.release()
        self.daemon.request_stop()
        self.thread.join(10)


@pytest.fixture
def running(tmp_path):
    r = Running(tmp_path)
    r.wait_ready()
    yield r
    r.stop()


def test_health_turns_ready_after_loading_and_first_frame(tmp_path):
    r = Running(tmp_path, hold_loading=True)
    try:
        code, body = r.client.json("GET", "/health")
        assert code == 503 and body["ready"] is False and body["live"] is True
        assert body["state"] == "loading"
        # Liveness and readiness apart: alive while loading, not ready.
        assert r.client.json("GET", "/health/live")[0] == 200
        assert r.client.json("GET", "/health/ready")[0] == 503
        r.loading.set()
        r.wait_ready()
        code, body = r.client.json("GET", "/health")
        assert code == 200 and body["ready"] is True and body["frames_out"] > 0
        assert body["pipeline"] == "running" and body["degraded_stages"] == []
        assert r.client.json("GET", "/health/ready")[0] == 200
        # A hung stage: frames stop, readiness goes after stall_s (0.5 s).
        r.stages.hang.set()
        deadline = time.monotonic() + 10
        while r.client.json("GET", "/health")[0] != 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert r.client.json("GET", "/health/live")[0] == 200  # the daemon itself still turns
    finally:
        r.stop()
    assert r.daemon.health()[1]["live"] is False  # stopped


def test_metrics_parse(running):
    code, headers, data = running.client.request("GET", "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(data.decode())}
    frames_out = [s.value for s in families["streamswap_frames_out"].samples if s.name.endswith("_total")]
    assert frames_out and frames_out[0] > 0
    g2g = families["streamswap_glass_to_glass_seconds"]
    count = [s.value for s in g2g.samples if s.name.endswith("_count")]
    assert count[0] > 0
    stage = families["streamswap_stage_seconds"]
    assert {s.labels.get("stage") for s in stage.samples} >= {"swap"}
    for name in (
        "streamswap_frames_in",
        "streamswap_frames_dropped",
        "streamswap_reconnects",
        "streamswap_stage_errors",
        "streamswap_ready",
    ):
        assert name in families
    assert [s.value for s in families["streamswap_ready"].samples] == [1.0]


def test_status_json(running):
    code, body = running.client.json("GET", "/status")
    assert code == 200
    assert body["state"] == "running" and body["frames_out"] > 0 and body["paused"] is False
    assert body["daemon"]["ready"] is True and body["daemon"]["config"]["service"]["token"] is None
    assert body["daemon"]["config"]["source"] == [] and body["source_identity"] is None


def test_source_switch_changes_identity_of_next_frames(running):
    assert running.stages.identity is None
    code, body = running.client.json("POST", "/source", body=astronaut_png(), headers={"Content-Type": "image/png"})
    assert code == 200 and body["ok"] and (body["width"], body["height"]) == (512, 512)
    first = identity_of(running.client.json("GET", "/status")[1])
    assert first[0] is not None
    running.assert_streaming()
    assert identity_of(running.client.json("GET", "/status")[1])[1] > 0
    # Another face image: another identity, used by the frames that follow.
    face = cv2.imdecode(np.frombuffer(astronaut_png(), np.uint8), cv2.IMREAD_COLOR)
    ok, jpg = cv2.imencode(".jpg", face[:256, 128:384])
    code, _ = running.client.json("POST", "/source", body=jpg.tobytes(), headers={"Content-Type": "image/jpeg"})
    assert code == 200
    second = identity_of(running.client.json("GET", "/status")[1])
    assert second[0] != first[0]
    running.assert_streaming()
    assert identity_of(running.client.json("GET", "/status")[1])[1] > 0


def test_pause_resume(running):
    running.client.json("POST", "/source", body=astronaut_png(), headers={"Content-Type": "image/png"})
    code, body = running.client.json("POST", "/pause")
    assert code == 200 and body["paused"] is True
    swapped = running.stages.swapped
    running.assert_streaming()  # frames keep flowing…
    assert running.stages.swapped <= swapped + 1  # …unswapped (one may have been in flight)
    assert running.client.json("GET", "/status")[1]["paused"] is True
    code, body = running.client.json("POST", "/resume", body=b"{}", headers={"Content-Type": "application/json"})
    assert code == 200 and body["paused"] is False
    running.assert_streaming()
    assert running.stages.swapped > swapped + 1


def test_reload_applies_new_source_and_refuses_bad_config(running, tmp_path):
    face = tmp_path / "face.png"
    face.write_bytes(astronaut_png())
    cfg = yaml.safe_load(running.config_file.read_text())
    running.write_config({**cfg, "source": [str(face)]})
    code, body = running.client.json("POST", "/reload")
    assert code == 200 and body["applied"] == ["source"], body
    assert running.stages.identity is not None
    running.assert_streaming()
    # A broken config file: 400 naming the key, the old config keeps running.
    running.write_config({**cfg, "service": {**cfg["service"], "stall_s": -1}})
    code, body = running.client.json("POST", "/reload")
    assert code == 400 and "service.stall_s" in body["error"]
    running.assert_streaming()
    # The daemon's reload (SIGHUP path) logs and keeps going as well.
    running.daemon.request_reload()
    running.assert_streaming()


def test_reload_while_identities_are_busy_is_a_retry_later(running, tmp_path):
    """A reload whose source face cannot be queued (the identity worker is full) is a 503
    with Retry-After, and nothing of the new config is applied: a retry applies all of it."""
    face = tmp_path / "face.png"
    face.write_bytes(astronaut_png())
    cfg = yaml.safe_load(running.config_file.read_text())
    running.write_config({**cfg, "source": [str(face)]})
    take = running.stages.set_source_images

    def full(images):
        raise Busy("busy preparing other source faces; try again in a moment")

    running.stages.set_source_images = full
    code, headers, data = running.client.request("POST", "/reload")
    assert code == 503 and headers["Retry-After"] == "1", data
    assert "running configuration is kept" in json.loads(data)["error"]
    assert running.stages.identity is None and running.daemon.config.source == []
    running.stages.set_source_images = take
    code, body = running.client.json("POST", "/reload")
    assert code == 200 and body["applied"] == ["source"], body
    running.assert_streaming()


def _raw(url: str, payload: bytes, read_timeout: float = 10) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=read_timeout) as s:
        s.sendall(payload)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data


def _status_and_json(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_refusals_are_4xx_with_a_message_and_the_stream_goes_on(running):
    c = running.client
    cases = []
    # Not an image type at all.
    cases.append(c.json("POST", "/source", body=b"hello", headers={"Content-Type": "text/plain"}))
    # Says PNG, is text.
    cases.append(
        c.json("POST", "/source", body=b"just some text, not a picture", headers={"Content-Type": "image/png"})
    )
    # Decompression bomb: tiny file, header claims 100000×100000.
    bomb = bomb_png()
    assert len(bomb) < 200
    cases.append(c.json("POST", "/source", body=bomb, headers={"Content-Type": "image/png"}))
    # A photo without a face.
    cases.append(c.json("POST", "/source", body=flat_png(), headers={"Content-Type": "image/png"}))
    # Malformed JSON.
    cases.append(c.json("POST", "/pause", body=b"{not json", headers={"Content-Type": "application/json"}))
    cases.append(c.json("POST", "/reload", body=b"[1, 2]", headers={"Content-Type": "application/json"}))
    cases.append(c.json("GET", "/nope"))
    cases.append(c.json("DELETE", "/source"))
    codes = [code for code, _ in cases]
    assert codes == [415, 415, 413, 422, 400, 400, 404, 405], cases
    for code, body in cases:
        assert isinstance(body["error"], str) and len(body["error"]) > 10
    assert "megapixels" in cases[2][1]["error"] or "pixels" in cases[2][1]["error"]
    code, headers, _ = c.request("POST", "/status")
    assert code == 405 and headers["Allow"] == "GET, HEAD"
    code, headers, _ = c.request("PUT", "/pause")
    assert code == 405 and headers["Allow"] == "POST"
    assert running.daemon.status()["paused"] is False  # the malformed request did nothing
    running.assert_streaming()


def test_a_burst_of_uploads_is_answered_busy_while_the_stream_and_status_go_on(tmp_path):
    """20 concurrent POST /source (`streamswap bench uploads` measures 50 on the real
    daemon): uploads are taken one at a time, and those that cannot get their turn within
    service.request_timeout_s are answered 503 with Retry-After instead of piling up.
    Meanwhile /status answers, frames keep leaving, and afterwards an upload goes through."""
    r = Running(tmp_path, request_timeout_s=1.0)
    try:
        r.wait_ready()
        take = r.stages.set_source_images

        def slow(images):  # a source face takes a while to prepare (detector, identity)
            time.sleep(0.2)
            return take(images)

        r.stages.set_source_images = slow
        photo = astronaut_png()
        answers: list[tuple[int, Any, bytes]] = []
        start, done = threading.Barrier(20), threading.Event()

        def upload() -> None:
            start.wait()
            answers.append(r.client.request("POST", "/source", body=photo, headers={"Content-Type": "image/png"}))

        statuses: list[int] = []

        def poll_status() -> None:
            while not done.is_set():
                statuses.append(r.client.json("GET", "/status")[0])

        poller = threading.Thread(target=poll_status)
        poller.start()
        uploads = [threading.Thread(target=upload) for _ in range(20)]
        for t in uploads:
            t.start()
        for t in uploads:
            t.join(30)
        done.set()
        poller.join(10)
        codes = sorted(code for code, _, _ in answers)
        assert len(codes) == 20 and set(codes) <= {200, 503}, codes
        assert 200 in codes and 503 in codes, codes
        for code, headers, data in answers:
            if code == 503:
                assert headers["Retry-After"] == "1" and "retry" in json.loads(data)["error"]
        # Answered throughout (a 503 only if a starved CI machine passes the 1 s deadline).
        assert 200 in statuses and set(statuses) <= {200, 503}, statuses
        r.assert_streaming()
        code, _ = r.client.json("POST", "/source", body=photo, headers={"Content-Type": "image/png"})
        assert code == 200
        assert identity_of(r.client.json("GET", "/status")[1])[0] is not None
    finally:
        r.stop()


def test_50_mb_upload_is_refused_before_it_is_read(running):
    url = running.daemon.api.url
    size = 50 * 1024 * 1024
    head = (
        f"POST /source HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: {size}\r\n"
    ).encode()
    # As curl sends it: waits for 100 Continue, gets 413 instead and never sends the body.
    code, body = _status_and_json(_raw(url, head + b"Expect: 100-continue\r\n\r\n"))
    assert code == 413 and "over the limit" in body["error"]
    # A client that just starts sending: 413 after the headers, the connection closed.
    code, body = _status_and_json(_raw(url, head + b"\r\n" + b"\0" * 65536))
    assert code == 413
    running.assert_streaming()


def test_a_refused_requests_body_is_never_read_as_a_request(running):
    """A request refused before its body is read ends its connection: the body (here a
    complete POST /pause) must not be taken for the next request on a kept-alive one."""
    url = running.daemon.api.url
    inner = b"POST /pause HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    for method, path, code in (("POST", "/nope", 404), ("PUT", "/pause", 405), ("PATCH", "/nope", 404)):
        raw = _raw(
            url, f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(inner)}\r\n\r\n".encode() + inner
        )
        assert raw.count(b"HTTP/1.1 ") == 1 and _status_and_json(raw)[0] == code, raw
        assert b"connection: close" in raw.lower()
    assert running.daemon.status()["paused"] is False
    # Without a body the connection stays open for the next request.
    raw = _raw(
        url,
        b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    assert raw.count(b"HTTP/1.1 404") == 2, raw


def test_slow_client_is_cut_off(tmp_path):
    r = Running(tmp_path, client_timeout_s=0.3)
    try:
        r.wait_ready()
        host, port = r.daemon.api.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /pause HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # … and nothing more
            t0 = time.monotonic()
            assert s.recv(1024) == b""  # the server hung up
            assert time.monotonic() - t0 < 9
        assert r.client.json("GET", "/health")[0] == 200
    finally:
        r.stop()


def test_bind_policy():
    assert parse_bind("127.0.0.1:8008") == ("127.0.0.1", 8008)
    assert parse_bind("[::1]:9000") == ("::1", 9000)
    assert parse_bind(":8008") == ("127.0.0.1", 8008)
    for bad in ("8008", "host:port", "::1:80", "1.2.3.4:99999"):
        with pytest.raises(ConfigError):
            parse_bind(bad)
    assert not needs_token("127.0.0.1") and not needs_token("::1") and not needs_token("localhost")
    for host in ("0.0.0.0", "::", "192.168.1.20", "127.0.0.2", "example.org"):
        assert needs_token(host)


def test_non_loopback_bind_without_token_refuses_to_start(tmp_path):
    r = Running(tmp_path, api="127.0.0.2:0")
    r.thread.join(10)
    assert isinstance(r.error, ConfigError) and "token" in str(r.error)


def test_non_loopback_bind_needs_the_right_token(tmp_path):
    r = Running(tmp_path, api="127.0.0.2:0", token=TOKEN)
    try:
        assert r.error is None
        r.wait_ready()
        c = r.client
        code, headers, body = c.request("GET", "/status", token=None)
        assert code == 401 and "Bearer" in headers["WWW-Authenticate"] and json.loads(body)["error"]
        assert c.json("GET", "/status", token="wrong-token-0123456789")[0] == 401
        assert c.json("POST", "/pause", token=None)[0] == 401
        assert (
            c.json("POST", "/source", body=astronaut_png(), headers={"Content-Type": "image/png"}, token="wrong")[0]
            == 401
        )
        assert r.stages.identity is None and r.daemon.status()["paused"] is False
        assert c.json("GET", "/status")[0] == 200
        assert c.request("GET", "/metrics")[0] == 200
        assert c.json("GET", "/health", token=None)[0] == 200  # probes need no token
        r.assert_streaming()
    finally:
        r.stop()


def test_reload_with_new_input_reopens_the_pipeline(running):
    first = running.daemon.pipeline
    cfg = yaml.safe_load(running.config_file.read_text())
    running.write_config({**cfg, "input": "test://?size=320x240", "outputs": ["null://", "null://"]})
    code, body = running.client.json("POST", "/reload")
    assert code == 200 and body["applied"] == ["input", "outputs"], body
    assert running.daemon.pipeline is not first and first.finished
    assert running.daemon.pipeline.config.input == "test://?size=320x240"
    running.assert_streaming()
    # Model settings cannot change live: reported, not applied.
    running.write_config({**cfg, "faces": {"detector": {"size": 320}}})
    code, body = running.client.json("POST", "/reload")
    assert code == 200 and "faces" in body["restart_required"], body


def test_reload_with_a_bad_uri_is_refused_and_the_pipeline_kept(running):
    first = running.daemon.pipeline
    cfg = yaml.safe_load(running.config_file.read_text())
    running.write_config({**cfg, "input": "tset://typo"})
    code, body = running.client.json("POST", "/reload")
    assert code == 400 and "unknown input scheme 'tset'" in body["error"], body
    running.write_config({**cfg, "outputs": ["out.avi"]})
    code, body = running.client.json("POST", "/reload")
    assert code == 400 and "unsupported output file type '.avi'" in body["error"], body
    assert running.daemon.pipeline is first and not first.finished
    assert running.daemon.config.input == "test://"
    running.assert_streaming()


def test_short_token_from_the_environment_is_refused():
    from streamswap.service.api import ControlApi
    from streamswap.service.metrics import Metrics
    from streamswap.service.settings import ServiceSettings

    with pytest.raises(ConfigError, match="at least 16 characters"):
        ControlApi(ServiceSettings(api="0.0.0.0:0"), None, Metrics(gpu=False), "short")  # type: ignore[arg-type]
    config = load_config(None, {"service.api": "0.0.0.0:0"})
    daemon = Daemon(
        config,
        lambda: config,
        build_stages=lambda c, e: RecordingStages(),
        make_pipeline=FakePipeline,
        check_endpoints=check_endpoints,
        environ={"STREAMSWAP_API_TOKEN": "abc"},
    )
    with pytest.raises(ConfigError, match="STREAMSWAP_API_TOKEN"):
        daemon.run()


def test_gpu_memory_only_when_the_process_uses_cuda(monkeypatch):
    import sys
    import types

    from streamswap.service.metrics import Metrics

    def names(metrics: Metrics) -> dict:
        return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}

    for module in ("cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert "streamswap_gpu_memory_used_bytes" not in names(Metrics())

    fake = types.ModuleType("cuda.bindings.runtime")
    fake.cudaGetDevice = lambda: (0, 1)  # type: ignore[attr-defined]
    fake.cudaMemGetInfo = lambda: (0, 3 << 30, 8 << 30)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", fake)
    families = names(Metrics())
    used = families["streamswap_gpu_memory_used_bytes"].samples
    total = families["streamswap_gpu_memory_total_bytes"].samples
    assert [(x.labels, x.value) for x in used] == [({"device": "1"}, float(5 << 30))]
    assert [(x.labels, x.value) for x in total] == [({"device": "1"}, float(8 << 30))]
    # A failing probe leaves the scrape working, without the GPU lines.
    fake.cudaMemGetInfo = lambda: (2, 0, 0)  # type: ignore[attr-defined]
    families = names(Metrics())
    assert "streamswap_gpu_memory_used_bytes" not in families and "streamswap_frames_out" in families


def test_a_flood_of_idle_connections_is_bounded(tmp_path):
    """Past service.max_connections only the probes are answered: anything else gets a
    JSON 503 with Connection: close, read in full (no reset), and service comes back."""
    r = Running(tmp_path, max_connections=8, client_timeout_s=20.0)
    try:
        r.wait_ready()
        host, port = r.daemon.api.url.removeprefix("http://").rsplit(":", 1)
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(8)]
        try:
            raw = _raw(r.daemon.api.url, b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            code, body = _status_and_json(raw)
            assert code == 503 and "too many connections" in body["error"], raw
            assert b"connection: close" in raw.lower() and b"retry-after: 1" in raw.lower()
            assert r.client.json("GET", "/health")[0] == 200  # probes still answered
        finally:
            for s in idle:
                s.close()
        deadline = time.monotonic() + 10
        while r.client.json("GET", "/status")[0] != 200:  # slots come back as they close
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r.assert_streaming()
    finally:
        r.stop()
