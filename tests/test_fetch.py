"""Model downloads against a real HTTP server on 127.0.0.1 that misbehaves on purpose.

Every failure case also checks the invariant that matters: nothing is left under the final
file name that `ModelStore.resolve` would accept.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from hostile_files import SCRFD_IO, onnx_bytes

from streamswap.errors import DownloadError, ModelError
from streamswap.models.catalogue import ModelSpec, build_catalogue
from streamswap.models.fetch import candidate_urls, fetch, part_path
from streamswap.models.progress import StreamProgress
from streamswap.models.settings import ModelsSettings
from streamswap.models.store import ModelStore

PAYLOAD = os.urandom(3 * 65536 + 123)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Behaviour:
    """How the server answers one path; `modes` is consumed one per request, last one sticks."""

    payload: bytes
    modes: list[str] = field(default_factory=lambda: ["ok"])
    cut_at: int = 65536
    requests: list[str | None] = field(default_factory=list)  # Range header of each request

    def next_mode(self) -> str:
        return self.modes.pop(0) if len(self.modes) > 1 else self.modes[0]


class Server:
    """A threading HTTP server whose per-path behaviour the test sets."""

    def __init__(self) -> None:
        self.routes: dict[str, Behaviour] = {}
        self.release = threading.Event()  # lets stalled handlers finish at teardown
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                behaviour = server.routes.get(self.path)
                if behaviour is None:
                    self.send_error(404, "Not Found")
                    return
                range_header = self.headers.get("Range")
                behaviour.requests.append(range_header)
                mode = behaviour.next_mode()
                if mode == "404":
                    self.send_error(404, "Not Found")
                    return
                if mode == "500":
                    self.send_error(500, "Internal Server Error")
                    return
                if mode == "no-length-endless":  # no Content-Length: the body ends when it closes
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        for _ in range(200):  # 200 × the payload unless the client hangs up
                            self.wfile.write(behaviour.payload)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                body = behaviour.payload
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if match and mode != "ignore-range":
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                rest = body[start:]
                if mode in ("ok", "ignore-range"):
                    self.wfile.write(rest)
                elif mode in ("cut", "truncate"):  # fewer bytes than announced, then close
                    self.wfile.write(rest[: behaviour.cut_at])
                    self.close_connection = True
                elif mode == "trickle":  # one byte at a time, never done
                    for byte in rest:
                        if server.release.wait(0.05):
                            break
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    self.close_connection = True
                elif mode == "stall":
                    self.wfile.write(rest[:1024])
                    self.wfile.flush()
                    server.release.wait(10)
                    self.close_connection = True
                else:
                    raise AssertionError(mode)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


def make_spec(url: str, *, sha: str | None = SHA, size: int | None = len(PAYLOAD)) -> ModelSpec:
    return ModelSpec(
        name="tiny",
        role="detector",
        file="tiny.onnx",
        urls=(url,),
        sha256=sha,
        size=size,
        license="MIT",
        commercial=True,
        contract="scrfd",
        inputs="x",
        outputs="y",
    )


def settings_for(tmp_path: Path, **kw: object) -> ModelsSettings:
    base = dict(dir=str(tmp_path / "models"), timeout_s=2.0, retries=2)
    base.update(kw)
    return ModelsSettings(**base)  # type: ignore[arg-type]


def store_for(settings: ModelsSettings, spec: ModelSpec) -> ModelStore:
    return ModelStore(settings, build_catalogue([spec]))


def assert_nothing_loads(settings: ModelsSettings, spec: ModelSpec) -> None:
    with pytest.raises(ModelError) as err:
        store_for(settings, spec).resolve(spec.name)
    assert "streamswap models fetch tiny" in str(err.value)


def test_success_installs_verified_file(server: Server, tmp_path: Path) -> None:
    server.routes["/tiny.onnx"] = Behaviour(PAYLOAD)
    settings = settings_for(tmp_path)
    spec = make_spec(server.url("/tiny.onnx"))
    out = io.StringIO()
    result = fetch(spec, Path(settings.dir), settings, progress=StreamProgress(out), backoff_s=0.01)
    assert result.path.read_bytes() == PAYLOAD
    assert result.sha256 == SHA and result.pinned
    assert not part_path(result.path).exists()
    assert "tiny.onnx: downloading 0.2 MB" in out.getvalue()
    assert "tiny.onnx: 0.2 MB in" in out.getvalue()
    resolved = store_for(settings, spec).resolve("tiny")
    assert resolved.path == result.path and resolved.verified and resolved.sha256 == SHA


def test_resume_after_server_cuts_connection(server: Server, tmp_path: Path) -> None:
    route = server.routes["/tiny.onnx"] = Behaviour(PAYLOAD, modes=["cut", "ok"], cut_at=70000)
    settings = settings_for(tmp_path)
    spec = make_spec(server.url("/tiny.onnx"))
    result = fetch(spec, Path(settings.dir), settings, backoff_s=0.01)
    assert result.path.read_bytes() == PAYLOAD
    # The retry asked only for the bytes it did not have yet.
    assert route.requests == [None, "bytes=70000-"]
    assert store_for(settings, spec).resolve("tiny").verified


def test_part_survives_failed_run_and_next_run_resumes(server: Server, tmp_path: Path) -> None:
    route = server.routes["/tiny.onnx"] = Behaviour(PAYLOAD, modes=["truncate"], cut_at=50000)
    settings = settings_for(tmp_path, retries=0)
    spec = make_spec(server.url("/tiny.onnx"))
    with pytest.raises(DownloadError, match="kept and resumes next time"):
        fetch(spec, Path(settings.dir), settings, backoff_s=0.01)
    part = part_path(Path(settings.dir) / "tiny.onnx")
    assert part.stat().st_size == 50000
    assert_nothing_loads(settings, spec)
    route.modes = ["ok"]
    fetch(spec, Path(settings.dir), settings, backoff_s=0.01)
    assert route.requests[-1] == "bytes=50000-"
    assert store_for(settings, spec).resolve("tiny").verified


def test_server_ignoring_range_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    route = server.routes["/tiny.onnx"] = Behaviour(PAYLOAD, modes=["cut", "ignore-range"])
    settings = settings_for(tmp_path)
    spec = make_spec(server.url("/tiny.onnx"))
    result = fetch(spec, Path(settings.dir), settings, backoff_s=0.01)
    assert result.path.read_bytes() == PAYLOAD  # not the first chunk twice
    assert len(route.requests) == 2


def test_sha256_mismatch_deletes_part_and_says_so(server: Server, tmp_path: Path) -> None:
    wrong = bytes(len(PAYLOAD))  # same size, other bytes
    server.routes["/tiny.onnx"] = Behaviour(wrong)
    settings = settings_for(tmp_path)
    spec = make_spec(server.url("/tiny.onnx"))
    with pytest.raises(DownloadError) as err:
        fetch(spec, Path(settings.dir), settings, backoff_s=0.01)
    message = str(err.value)
    assert "SHA-256 mismatch" in message and "deleted the partial file" in message
    assert hashlib.sha256(wrong).hexdigest() in message
    models = Path(settings.dir)
    assert not (models / "tiny.onnx").exists() and not part_path(models / "tiny.onnx").exists()
    assert_nothing_loads(settings, spec)


def test_wrong_advertised_size_is_refused_without_downloading(server: Server, tmp_path: Path) -> None:
    server.routes["/tiny.onnx"] = Behaviour(PAYLOAD + b"extra")
    settings = settings_for(tmp_path)
    spec = make_spec(server.url("/tiny.onnx"))
    with pytest.raises(DownloadError, match="a different file"):
        fetch(spec, Path(settings.dir), settings, backoff_s=0.01)
    assert list(Path(settings.dir).glob("tiny.onnx*")) == []
    assert_nothing_loads(settings, spec)


def test_404_fails_without_retrying(server: Server, tmp_path: Path) -> None:
    route = server.routes["/tiny.onnx"] = Behaviour(PAYLOAD, modes=["404"])
    settings = settings_for(tmp_path, retries=3)
    spec = make_spec(server.url("/tiny.onnx"))
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        fetch(spec, Path(settings.dir), settings, backoff_s=0.01)
    assert "models.mirror" in str(err.value)
    assert len(route.requests) == 1
    assert list(Path(settings.dir).glob("tiny.onnx*")) == []
    assert_nothing_loads(settings, spec)


def test_server_error_is_retried_with_backoff(server: Server, tmp_path: Path) -> None:
    route = server.routes["/tiny.onnx"] = Behaviour(PAYLOAD, modes=["500", "500", "ok"])
    settings = settings_for(tmp_path, retries=2)
    spec = make_spec(server.url("/tiny.onnx"))
    delays: list[float] = []
    result = fetch(spec, Path(settings.dir), settings, backoff_s=0.5, sleep=delays.append)
    assert result.path.read_bytes() == PAYLOAD
    assert delays == [0.5, 1.0]  # exponential
    assert len(route.requests) == 3


def test_stalled_server_hits_timeout(server: Server, tmp_path: Path) -> None:
    route = server.routes["/tiny.onnx"] = Behaviour(PAYLOAD, modes=["stall"])
    settings = settings_for(tmp_path, timeout_s=0.3, retries=1)
    spec = make_spec(server.url("/tiny.onnx"))
    with pytest.raises(DownloadError, match="timed out") as err:
        fetch(spec, Path(settings.dir), settings, backoff_s=0.01)
    assert "gave up after 2 attempts" in str(err.value)
    assert route.requests == [None, "bytes=1024-"]  # the retry resumed after the first KiB
    assert not (Path(settings.dir) / "tiny.onnx").exists()
    assert_nothing_loads(settings, spec)


def test_truncated_body_is_an_error_not_a_file(server: Server, tmp_path: Path) -> None:
    server.routes["/tiny.onnx"] = Behaviour(PAYLOAD, modes=["truncate"], cut_at=1000)
    settings = settings_for(tmp_path, retries=1)
    spec = make_spec(server.url("/tiny.onnx"), sha=None, size=None)  # only Content-Length to go by
    with pytest.raises(DownloadError, match=r"connection closed after \d+ of \d+ bytes"):
        fetch(spec, Path(settings.dir), settings, backoff_s=0.01)
    assert not (Path(settings.dir) / "tiny.onnx").exists()
    assert_nothing_loads(settings, spec)


def test_mirror_is_tried_first_then_catalogue_url(server: Server, tmp_path: Path) -> None:
    primary = server.routes["/primary/tiny.onnx"] = Behaviour(PAYLOAD)
    settings = settings_for(tmp_path, mirror=server.url("/mirror/"))
    spec = make_spec(server.url("/primary/tiny.onnx"))
    assert candidate_urls(spec, settings.mirror) == [
        server.url("/mirror/tiny.onnx"),
        server.url("/primary/tiny.onnx"),
    ]
    result = fetch(spec, Path(settings.dir), settings, backoff_s=0.01)  # mirror 404s
    assert result.url == server.url("/primary/tiny.onnx") and len(primary.requests) == 1
    # With the file on the mirror, the catalogue URL is not touched.
    mirrored = server.routes["/mirror/tiny.onnx"] = Behaviour(PAYLOAD)
    result = fetch(spec, Path(settings.dir), settings, backoff_s=0.01)
    assert result.url == server.url("/mirror/tiny.onnx")
    assert len(mirrored.requests) == 1 and len(primary.requests) == 1


def test_mismatching_source_falls_through_to_next_url(server: Server, tmp_path: Path) -> None:
    server.routes["/bad/tiny.onnx"] = Behaviour(bytes(len(PAYLOAD)))
    server.routes["/good/tiny.onnx"] = Behaviour(PAYLOAD)
    settings = settings_for(tmp_path)
    spec = replace(
        make_spec(server.url("/bad/tiny.onnx")), urls=(server.url("/bad/tiny.onnx"), server.url("/good/tiny.onnx"))
    )
    assert fetch(spec, Path(settings.dir), settings, backoff_s=0.01).url.endswith("/good/tiny.onnx")


def test_unpinned_model_warns_and_loads_unverified(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    graph = onnx_bytes(SCRFD_IO, outputs=9)  # no hash to check: the contract's I/O is
    server.routes["/tiny.onnx"] = Behaviour(graph)
    settings = settings_for(tmp_path)
    spec = make_spec(server.url("/tiny.onnx"), sha=None, size=None)
    store = store_for(settings, spec)
    with caplog.at_level(logging.WARNING):
        status, result = store.fetch("tiny", backoff_s=0.01)
    sha = hashlib.sha256(graph).hexdigest()
    assert result is not None and not result.pinned and result.sha256 == sha
    assert "no published SHA-256" in caplog.text
    resolved = store.resolve("tiny")
    assert resolved.sha256 == sha and not resolved.verified
    # A changed file is hashed again (its identity changed) and must still be the contract's graph.
    resolved.path.write_bytes(bytes(len(graph)))
    os.utime(resolved.path, ns=(1, 1))
    status = store.status("tiny", rehash=True)
    assert status.sha256 != sha and status.state == "mismatch" and "not a loadable ONNX" in status.reason
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        store.resolve("tiny")


def test_store_fetch_skips_a_present_verified_file(server: Server, tmp_path: Path) -> None:
    route = server.routes["/tiny.onnx"] = Behaviour(PAYLOAD)
    settings = settings_for(tmp_path)
    store = store_for(settings, make_spec(server.url("/tiny.onnx")))
    _, first = store.fetch("tiny", backoff_s=0.01)
    status, second = store.fetch("tiny", backoff_s=0.01)
    assert first is not None and second is None and status.state == "verified"
    assert len(route.requests) == 1


def test_progress_bar_on_a_terminal(server: Server, tmp_path: Path) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    server.routes["/tiny.onnx"] = Behaviour(PAYLOAD)
    settings = settings_for(tmp_path)
    out = Tty()
    fetch(
        make_spec(server.url("/tiny.onnx")),
        Path(settings.dir),
        settings,
        progress=StreamProgress(out, interval_s=0.0),
        backoff_s=0.01,
    )
    text = out.getvalue()
    assert "\r" in text and "[" + "#" * 28 + "]" in text and "100.0%" in text


def test_plain_folder_mirror_for_air_gapped_sites(tmp_path: Path) -> None:
    mirror = tmp_path / "usb stick"
    mirror.mkdir()
    (mirror / "tiny.onnx").write_bytes(PAYLOAD)
    settings = settings_for(tmp_path, mirror=str(mirror))
    spec = make_spec("http://127.0.0.1:9/unreachable/tiny.onnx")  # never needed
    assert candidate_urls(spec, settings.mirror)[0] == (mirror / "tiny.onnx").as_uri()
    result = fetch(spec, Path(settings.dir), settings, backoff_s=0.01)
    assert result.url.startswith("file://") and result.path.read_bytes() == PAYLOAD
    assert store_for(settings, spec).resolve("tiny").verified


def test_concurrent_download_of_the_same_dir_is_refused(server: Server, tmp_path: Path) -> None:
    import fcntl

    server.routes["/tiny.onnx"] = Behaviour(PAYLOAD)
    settings = settings_for(tmp_path)
    models = Path(settings.dir)
    models.mkdir(parents=True)
    with open(models / ".tiny.onnx.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(DownloadError, match="another process is downloading"):
            fetch(make_spec(server.url("/tiny.onnx")), models, settings, backoff_s=0.01)
    assert fetch(make_spec(server.url("/tiny.onnx")), models, settings, backoff_s=0.01).pinned


# --- hostile mirrors ------------------------------------------------------------------------


def test_a_mirror_without_content_length_cannot_overfill_the_part(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamswap.models.fetch as fetch_module

    server.routes["/tiny.onnx"] = Behaviour(PAYLOAD, modes=["no-length-endless"])
    written: list[int] = []
    real_open = open

    def watching_open(path, mode="r", *args, **kwargs):  # record the part's size as it grows
        handle = real_open(path, mode, *args, **kwargs)
        if str(path).endswith(".part"):
            write = handle.write
            handle.write = lambda b: written.append(len(b)) or write(b)  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr("builtins.open", watching_open)
    settings = settings_for(tmp_path, retries=0)
    with pytest.raises(DownloadError, match=f"sent more than {len(PAYLOAD)} bytes"):
        fetch(make_spec(server.url("/tiny.onnx")), tmp_path / "models", settings, backoff_s=0.01)
    assert sum(written) <= len(PAYLOAD)  # never more than the catalogue's size on disk
    assert not part_path(tmp_path / "models" / "tiny.onnx").exists()
    # No size in the catalogue either: capped at the largest model there can be.
    monkeypatch.setattr(fetch_module, "MAX_MODEL_BYTES", 5 * len(PAYLOAD))
    written.clear()
    server.routes["/tiny.onnx"] = Behaviour(PAYLOAD, modes=["no-length-endless"])
    with pytest.raises(DownloadError, match="largest model"):
        fetch(make_spec(server.url("/tiny.onnx"), sha=None, size=None), tmp_path / "models", settings, backoff_s=0.01)
    assert sum(written) <= 5 * len(PAYLOAD)


def test_a_trickling_mirror_is_cut_off_at_the_deadline(server: Server, tmp_path: Path) -> None:
    import time

    server.routes["/tiny.onnx"] = Behaviour(PAYLOAD, modes=["trickle"])
    settings = settings_for(tmp_path, deadline_s=1.0, timeout_s=5.0)
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"did not finish within models.deadline_s \(1 s\)"):
        fetch(make_spec(server.url("/tiny.onnx")), tmp_path / "models", settings, backoff_s=0.01)
    assert time.monotonic() - started < 4
    # The bytes that did arrive of a pinned file are kept, to resume.
    assert 0 < part_path(tmp_path / "models" / "tiny.onnx").stat().st_size < len(PAYLOAD)


def test_a_folder_mirror_without_the_file_is_not_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import time

    mirror = tmp_path / "usb"
    mirror.mkdir()
    spec = replace(make_spec("http://127.0.0.1:9/tiny.onnx"), urls=())
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(DownloadError, match="not in the mirror folder"):
        fetch(spec, tmp_path / "models", settings_for(tmp_path, mirror=str(mirror), retries=5), backoff_s=1.0)
    assert time.monotonic() - started < 1  # no back-off: a folder does not get the file by waiting
    assert "retrying" not in caplog.text


def test_unpinned_bytes_that_are_not_onnx_are_refused(server: Server, tmp_path: Path) -> None:
    server.routes["/tiny.onnx"] = Behaviour(b"<html>not a model</html>" * 100)
    store = store_for(settings_for(tmp_path), make_spec(server.url("/tiny.onnx"), sha=None, size=None))
    with pytest.raises(DownloadError, match="is not a loadable ONNX model"):
        store.fetch("tiny", backoff_s=0.01)
    assert not (tmp_path / "models" / "tiny.onnx").exists()
    assert not part_path(tmp_path / "models" / "tiny.onnx").exists()
    # Put there by hand, it is refused at load all the same.
    (tmp_path / "models" / "tiny.onnx").write_bytes(b"<html>not a model</html>")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        store.resolve("tiny")


def test_a_trickling_mirror_is_dropped_for_the_next_url(server: Server, tmp_path: Path) -> None:
    import time

    server.routes["/slow/tiny.onnx"] = Behaviour(PAYLOAD, modes=["trickle"])
    server.routes["/fast/tiny.onnx"] = Behaviour(PAYLOAD)
    spec = replace(
        make_spec(server.url("/slow/tiny.onnx")), urls=(server.url("/slow/tiny.onnx"), server.url("/fast/tiny.onnx"))
    )
    settings = settings_for(tmp_path, timeout_s=1.0, retries=1)
    started = time.monotonic()
    result = fetch(spec, tmp_path / "models", settings, backoff_s=0.01)
    assert result.url.endswith("/fast/tiny.onnx") and result.sha256 == SHA
    assert time.monotonic() - started < 6  # two ~1 s windows under 1 KiB/s, then the next URL


def test_a_builtin_entry_is_never_downloaded_even_with_a_mirror(tmp_path: Path) -> None:
    from streamswap.models.catalogue import get_spec

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with pytest.raises(ModelError, match="mesh is built in .* nothing to download"):
        fetch(get_spec("mesh"), tmp_path / "models", ModelsSettings(mirror=str(mirror)))
    store = ModelStore(ModelsSettings(dir=str(tmp_path / "models"), mirror=str(mirror)))
    status, result = store.fetch("mesh")
    assert status.builtin and result is None and not (tmp_path / "models").exists()
