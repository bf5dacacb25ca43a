"""The control API against an attacker: malformed framing, deep JSON, slow-client floods,
DNS rebinding (Host), cross-site requests (Origin, form encodings), near-miss tokens,
secrets in what it shows, and the daemon's memory under hostile uploads."""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time

import pytest
from hostile_files import lying_tiff
from test_api import TOKEN, Running, _raw, _status_and_json, astronaut_png

from streamswap.errors import OutputError, StreamswapError
from streamswap.logs import KeyValueFormatter, kv
from streamswap.redact import redact_text, redact_uri
from streamswap.service.access import HostPolicy, bearer_matches
from streamswap.service.api import json_depth_ok

KEY = "live_0123456789_SECRETKEY"


@pytest.fixture
def running(tmp_path):
    r = Running(tmp_path)
    r.wait_ready()
    yield r
    r.stop()


def _addr(r: Running) -> tuple[str, int]:
    host, port = r.daemon.api.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


# -- framing -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        "Content-Length: \u00b2",  # a superscript two: not a digit to HTTP
        "Content-Length: 2\r\nContent-Length: 20",  # two that disagree
        "Content-Length: 2\r\ncontent-length: 2",  # two that agree: still ambiguous behind a proxy
        "Content-Length: -1",
        "Content-Length: 2, 3",
    ],
)
def test_malformed_content_length_is_a_json_400(running, headers):
    raw = _raw(running.daemon.api.url, f"POST /pause HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n\r\n{{}}".encode())
    code, body = _status_and_json(raw)
    assert code == 400 and "malformed" in body["error"], raw
    assert b"Traceback" not in raw
    assert running.daemon.status()["paused"] is False
    running.assert_streaming()


def test_deeply_nested_json_is_a_400(running):
    deep = b"[" * 30_000 + b"]" * 30_000
    code, body = running.client.json("POST", "/reload", body=deep, headers={"Content-Type": "application/json"})
    assert code == 400 and "nested deeper" in body["error"]
    code, body = running.client.json(
        "POST", "/pause", body=b'{"a": ' * 40 + b"1" + b"}" * 40, headers={"Content-Type": "application/json"}
    )
    assert code == 400
    # brackets inside strings are text, not nesting
    assert json_depth_ok(b'{"a": "' + b"[" * 100 + b'"}') and not json_depth_ok(b"[" * 33 + b"]" * 33)
    running.assert_streaming()


def test_a_header_block_over_the_limit_is_a_400(running):
    raw = _raw(
        running.daemon.api.url, b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    )
    assert _status_and_json(raw)[0] == 431


def test_a_chunked_upload_over_the_limit_is_refused_while_read(tmp_path):
    r = Running(tmp_path, max_upload_bytes=64 * 1024)
    try:
        r.wait_ready()
        chunk = b"\0" * 32768
        body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(4)) + b"0\r\n\r\n"
        raw = _raw(
            r.daemon.api.url,
            b"POST /source HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + body,
        )
        code, answer = _status_and_json(raw)
        assert code == 413 and "over the limit" in answer["error"]
        r.assert_streaming()
    finally:
        r.stop()


def test_a_crashing_handler_is_a_json_500_without_traceback(running, monkeypatch, caplog):
    def broken() -> dict:
        raise RuntimeError("a bug in status")

    monkeypatch.setattr(running.daemon, "status", broken)
    code, headers, data = running.client.request("GET", "/status")
    assert code == 500 and json.loads(data) == {"error": "internal error; see the daemon's log"}
    assert b"Traceback" not in data and b"a bug" not in data
    deadline = time.monotonic() + 5  # logged as the request ends, just after the answer went out
    while not any("a bug in status" in str(r.exc_info) for r in caplog.records if r.exc_info):
        assert time.monotonic() < deadline, caplog.records
        time.sleep(0.02)
    monkeypatch.undo()
    assert running.client.json("GET", "/status")[0] == 200
    running.assert_streaming()


def test_405_names_every_method_of_nested_routers(running):
    """Allow lists what every route on the path takes (GET and HEAD are registered apart;
    the page's router nests others)."""
    for method, path, allow in (
        ("POST", "/preview.jpg", "GET, HEAD"),
        ("DELETE", "/faces/selection", "GET, POST"),
        ("PUT", "/status", "GET, HEAD"),
        ("GET", "/reload", "POST"),
    ):
        code, headers, data = running.client.request(method, path)
        assert code == 405 and headers["Allow"] == allow, (path, headers["Allow"], data)
        assert allow in json.loads(data)["error"]


# -- slow clients ----------------------------------------------------------------------
def test_health_answers_within_a_second_during_a_slow_client_flood(tmp_path):
    """100 connections each sending one byte every 2 s (slowloris) hold no slot: the
    probes answer within 1 s throughout, before any authentication, and the trickling
    clients are cut off after service.client_timeout_s."""
    r = Running(tmp_path, client_timeout_s=3.0)
    try:
        r.wait_ready()
        addr = _addr(r)
        flood = [socket.create_connection(addr, timeout=5) for _ in range(100)]
        request = b"POST /pause HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        stop = threading.Event()

        def trickle() -> None:
            sent = 0
            while not stop.is_set() and sent < len(request):
                for s in flood:
                    try:
                        s.send(request[sent : sent + 1])
                    except OSError:
                        pass
                sent += 1
                stop.wait(2.0)

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            worst = 0.0
            end = time.monotonic() + 5.0
            while time.monotonic() < end:
                t0 = time.monotonic()
                code, body = r.client.json("GET", "/health")
                worst = max(worst, time.monotonic() - t0)
                assert code == 200 and body["ready"] is True
                assert r.client.json("GET", "/health/live")[0] == 200
                time.sleep(0.2)
            assert worst < 1.0, worst
            assert r.client.json("GET", "/status")[0] == 200  # the flood holds no request slot
            # Past client_timeout_s every trickling connection has been closed by the server.
            time.sleep(0.5)
            readable, _, _ = select.select(flood, [], [], 2.0)
            closed = sum(1 for s in readable if _eof(s))
            assert closed == 100, closed
        finally:
            stop.set()
            thread.join(5)
            for s in flood:
                s.close()
        assert r.daemon.status()["paused"] is False
        r.assert_streaming()
    finally:
        r.stop()


def _eof(s: socket.socket) -> bool:
    try:
        return s.recv(1024) == b""
    except (ConnectionResetError, BlockingIOError):
        return True


def test_busy_and_host_refusals_of_an_upload_are_read_not_reset(tmp_path):
    """A refusal sent before the app reads the body (over the connection cap, unknown Host)
    reads and drops that body first: the client gets the answer, not a reset."""
    r = Running(tmp_path, max_connections=4, client_timeout_s=20.0)
    try:
        r.wait_ready()
        body = b"\xff\xd8" + b"\0" * 8_000_000
        head = (
            f"POST /source HTTP/1.1\r\nHost: {{host}}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        raw = _raw(r.daemon.api.url, head.format(host="evil.example").encode() + body)
        assert _status_and_json(raw)[0] == 403, raw[:300]
        idle = [socket.create_connection(_addr(r), timeout=10) for _ in range(4)]
        try:
            raw = _raw(r.daemon.api.url, head.format(host="127.0.0.1").encode() + body)
            code, answer = _status_and_json(raw)
            assert code == 503 and "too many connections" in answer["error"]
        finally:
            for s in idle:
                s.close()
    finally:
        r.stop()


def test_the_server_stops_with_the_daemon(tmp_path):
    r = Running(tmp_path)
    r.wait_ready()
    addr = _addr(r)
    kept = socket.create_connection(addr, timeout=5)  # an idle keep-alive client does not hold the stop
    t0 = time.monotonic()
    r.stop()
    assert not r.thread.is_alive() and time.monotonic() - t0 < 8
    assert r.daemon.api is not None and not r.daemon.api.running
    assert not any(t.name == "streamswap-api" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(OSError):
        socket.create_connection(addr, timeout=2).close()
    assert _eof(kept)
    kept.close()


# -- DNS rebinding and cross-site requests ------------------------------------------------
def test_unknown_host_names_are_refused_on_every_endpoint(tmp_path):
    r = Running(tmp_path, allowed_hosts=["streamswap.lan"])
    try:
        r.wait_ready()
        for path in ("/status", "/health", "/metrics"):
            code, body = r.client.json("GET", path, headers={"Host": "evil.example"})
            assert code == 403 and "service.allowed_hosts" in body["error"], (path, body)
        code, _, data = r.client.request("GET", "/status", headers={"Host": f"evil.example:{_addr(r)[1]}"})
        assert code == 403 and b"config" not in data
        for host in ("streamswap.lan", f"streamswap.lan:{_addr(r)[1]}", "localhost", "127.0.0.1:1", "[::1]:80"):
            assert r.client.json("GET", "/status", headers={"Host": host})[0] == 200, host
    finally:
        r.stop()


def test_host_policy():
    loop = HostPolicy("127.0.0.1", [])
    assert loop.allows("127.0.0.1:8008") and loop.allows("localhost") and loop.allows("[::1]:8008")
    assert not loop.allows("evil.example") and not loop.allows("192.168.1.9") and not loop.allows("127.0.0.1.nip.io")
    anywhere = HostPolicy("0.0.0.0", ["Cam.Example."])
    assert anywhere.allows("192.168.1.9:8008") and anywhere.allows("cam.example") and anywhere.allows("[fe80::1]")
    assert not anywhere.allows("evil.example:8008")
    assert HostPolicy("127.0.0.1", ["*"]).allows("anything.example")
    # Origin: the API's own page, or a configured host; never another site or "null".
    assert loop.allows_origin(None, "127.0.0.1:8008")
    assert loop.allows_origin("http://127.0.0.1:8008", "127.0.0.1:8008")
    assert not loop.allows_origin("http://127.0.0.1:3000", "127.0.0.1:8008")
    assert not loop.allows_origin("https://evil.example", "127.0.0.1:8008")
    assert not loop.allows_origin("null", "127.0.0.1:8008")
    assert anywhere.allows_origin("https://cam.example", "10.0.0.2:8008")


def test_cross_site_requests_change_nothing(running):
    c = running.client
    # What an HTML form on another site sends: a form encoding, the other site's Origin.
    for path in ("/pause", "/reload", "/resume"):
        code, body = c.json(
            "POST",
            path,
            body=b"",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"},
        )
        assert code == 403 and "cross-site" in body["error"], (path, body)
        for ctype in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"):
            code, body = c.json("POST", path, body=b"", headers={"Content-Type": ctype})
            assert code == 415, (path, ctype, body)
    code, _ = c.json(
        "POST", "/source", body=astronaut_png(), headers={"Content-Type": "image/png", "Origin": "https://evil.example"}
    )
    assert code == 403 and running.stages.identity is None
    assert running.daemon.status()["paused"] is False
    # The API's own origin (a page it serves), and curl (no Origin, no body) still work.
    own = running.daemon.api.url
    code, body = c.json("POST", "/pause", body=b"{}", headers={"Content-Type": "application/json", "Origin": own})
    assert code == 200 and body["paused"] is True
    assert c.json("POST", "/resume")[0] == 200
    running.assert_streaming()


# -- the token ----------------------------------------------------------------------------
def test_bearer_must_be_exactly_the_token():
    assert bearer_matches(f"Bearer {TOKEN}", TOKEN) and bearer_matches(f"bearer {TOKEN}", TOKEN)
    for header in (
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN[:8]}",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        f"Token {TOKEN}",
        TOKEN,
        f"Bearer{TOKEN}",
        "Bearer ",
        "",
        None,
    ):
        assert not bearer_matches(header, TOKEN), header


def test_near_miss_tokens_and_other_schemes_are_401_and_a_session_cookie_works(tmp_path):
    r = Running(tmp_path, token=TOKEN)
    try:
        r.wait_ready()
        c = r.client
        for header in (
            f"Bearer {TOKEN[:-1]}",
            f"Bearer {TOKEN[:4]}",
            f"Bearer {TOKEN}0",
            f"Basic {TOKEN}",
            f"Token {TOKEN}",
        ):
            for method, path in (("GET", "/status"), ("POST", "/pause"), ("GET", "/openapi.json")):
                code, body = c.json(method, path, token=None, headers={"Authorization": header})
                assert code == 401 and body["error"], (header, path)
        assert r.daemon.status()["paused"] is False
        assert c.json("GET", "/health", token=None)[0] == 200
        # A browser page: /login trades the token for a cookie (HttpOnly, SameSite=Strict).
        assert (
            c.json(
                "POST",
                "/login",
                token=None,
                body=b'{"token": "wrong-token-0123456789"}',
                headers={"Content-Type": "application/json"},
            )[0]
            == 401
        )
        code, headers, _ = c.request(
            "POST",
            "/login",
            token=None,
            body=json.dumps({"token": TOKEN}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert code == 200
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        pair = cookie.split(";", 1)[0]
        assert c.json("GET", "/status", token=None, headers={"Cookie": pair})[0] == 200
        assert c.json("GET", "/status", token=None, headers={"Cookie": pair[:-2] + "xx"})[0] == 401
        assert c.json("POST", "/logout", token=None, headers={"Cookie": pair})[0] == 200
        assert c.json("GET", "/status", token=None, headers={"Cookie": pair})[0] == 401
    finally:
        r.stop()


def test_openapi_describes_every_endpoint(running):
    code, spec = running.client.json("GET", "/openapi.json")
    assert code == 200 and spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in (
        "/health",
        "/health/live",
        "/metrics",
        "/status",
        "/source",
        "/pause",
        "/resume",
        "/reload",
        "/login",
        "/logout",
    ):
        assert path in paths, path
    assert "image/jpeg" in paths["/source"]["post"]["requestBody"]["content"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


# -- secrets --------------------------------------------------------------------------------
def test_redact_uri():
    cases = {
        f"rtmp://a.rtmp.youtube.com/live2/{KEY}": "rtmp://a.rtmp.youtube.com/live2/***",
        f"rtmps://user:pw@live.example:443/app/{KEY}?x=1": "rtmps://user:***@live.example:443/app/***?x=1",
        "rtmp://host/app": "rtmp://host/app",
        "rtsp://admin:hunter2@cam.lan/stream1": "rtsp://admin:***@cam.lan/stream1",
        "https://tok3n@mirror.example/m/?token=abc&v=2": "https://***@mirror.example/m/?token=***&v=2",
        "srt://h:9000?passphrase=longsecret&latency=20&streamid=#!::r=live/k,m=publish": "srt://h:9000?passphrase=***&latency=20&streamid=***",
        "/dev/video0": "/dev/video0",
        "test://": "test://",
        "out.mp4": "out.mp4",
    }
    for uri, want in cases.items():
        assert redact_uri(uri) == want, uri
    text = redact_text(f"rtmp://h/app/{KEY}: refused (see rtsp://u:p@c/s).")
    assert text == "rtmp://h/app/***: refused (see rtsp://u:***@c/s)."
    assert KEY not in str(OutputError(f"rtmp://h/app/{KEY}: cannot open output"))
    assert "hunter2" not in str(StreamswapError("rtsp://admin:hunter2@cam/s is down"))


def test_secrets_never_shown_in_status_metrics_or_logs(tmp_path, caplog):
    from streamswap.io.avsink import AvSink
    from streamswap.io.settings import IoSettings

    out = f"rtmp://pub:pw1234@127.0.0.1:1/live/{KEY}"
    r = Running(tmp_path)
    try:
        r.wait_ready()
        r.daemon.config.input = "rtsp://admin:hunter2@cam.lan/stream1"
        r.daemon.config.outputs = ["null://", out]
        r.daemon.metrics.reconnect(out)  # the runtime labels reconnects with a sink's name
        config = r.daemon.status()["daemon"]["config"]  # in-process callers get masked addresses too
        assert config["input"] == "rtsp://admin:***@cam.lan/stream1" and KEY not in str(config["outputs"])
        code, _, data = r.client.request("GET", "/status")
        assert code == 200 and b"cam.lan" in data and b"live/***" in data
        code, _, metrics = r.client.request("GET", "/metrics")
        for shown in (data, metrics):
            for secret in (KEY, "pw1234", "hunter2"):
                assert secret.encode() not in shown, secret
    finally:
        r.stop()
    # A sink's display name, and every formatted log line (ours and libraries').
    assert KEY not in AvSink(out, "flv", IoSettings(), network=True).name
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, f"cannot open {out}", None, None)
    record.kv = kv(output=out, mirror="https://u:tok@mirror.example/m")["kv"]  # type: ignore[attr-defined]
    line = KeyValueFormatter(colour=False, timestamps=False).format(record)
    assert KEY not in line and "pw1234" not in line and "u:tok@" not in line and "live/***" in line


def test_fetch_never_names_a_mirrors_credentials(tmp_path):
    from streamswap.models.fetch import _host

    assert _host("https://user:pass@mirror.example:8443/m/x.onnx") == "mirror.example:8443"
    assert _host("https://tok@mirror.example/x") == "mirror.example"


# -- memory under hostile uploads ---------------------------------------------------------
def test_daemon_memory_stays_bounded_under_hostile_uploads(tmp_path):
    from test_serve import Serve

    s = Serve(tmp_path, service={"max_upload_bytes": 16 * 1024 * 1024})
    try:
        s.wait_api()
        s.wait_ready()
        jpeg_bomb = (
            b"\xff\xd8\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
            + b"\0" * 1024
            + b"\xff\xd9"
        )
        garbage = b"\x89PNG\r\n\x1a\n" + b"\xa5" * (15 * 1024 * 1024)
        uploads = [
            (lying_tiff(real=(20000, 20000), claimed=(64, 64)), "image/tiff"),
            (jpeg_bomb, "image/jpeg"),
            (garbage, "image/png"),
            (b"GIF89a\xff\xff\xff\xff" + b"\0" * 4096, "image/gif"),
        ]
        results = []
        for body, ctype in uploads * 2:
            results.append(s.client.json("POST", "/source", body=body, headers={"Content-Type": ctype})[0])
        # A 300 MB upload announced honestly and one sent without waiting.
        head = b"POST /source HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 300000000\r\n"
        results.append(
            _status_and_json(_raw(f"http://{s.client.host}:{s.client.port}", head + b"Expect: 100-continue\r\n\r\n"))[0]
        )
        results.append(
            _status_and_json(_raw(f"http://{s.client.host}:{s.client.port}", head + b"\r\n" + b"\0" * 2_000_000))[0]
        )
        # Several large uploads at once: one is decoded at a time, the others wait their turn or get 503.
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    s.client.json("POST", "/source", body=garbage, headers={"Content-Type": "image/png"})[0]
                )
            )
            for _ in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(400 <= code < 600 and code != 500 for code in results), results
        s.assert_streaming()
        peak_kb = _peak_rss_kb(s.proc.pid)
        print(f"daemon peak RSS {peak_kb / 1024:.0f} MB")
        assert peak_kb < 400 * 1024, f"peak memory {peak_kb / 1024:.0f} MB"
    finally:
        s.stop()


def _peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")
