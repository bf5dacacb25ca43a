"""inference.backend: triton against a real Triton Inference Server (PyTriton's tritonserver,
CPU): sessions equal to ONNX Runtime, `run` file → file equal to the ort backend, a server
lost and restarted mid-run, four runs batched together by the server, doctor's readiness.

One server for the whole module; it serves the bundled BlazeFace/FaceMesh and generated
inswapper/ArcFace-contract models under the names `streamswap triton export` gives them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from io_media import make_video
from swap_fixtures import astronaut, sample_photo_paths
from triton_fixtures import TritonServer, free_ports

from streamswap.errors import BackendUnavailable, ModelError
from streamswap.inference.ort import open_ort_session
from streamswap.inference.settings import InferenceSettings, TritonModelRef, TritonSettings
from streamswap.inference.triton import TritonConnection, TritonUnavailable, open_triton_session, triton_model_name

FPS = 10
SIZE = (320, 240)


@pytest.fixture(scope="module")
def model_files(bundled_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from streamswap.bench.synthetic import make_arcface_model, make_swapper_model

    d = tmp_path_factory.mktemp("triton-models")
    files = [
        bundled_models_dir / "blazeface_full_range.onnx",
        bundled_models_dir / "facemesh_468.onnx",
        make_swapper_model(d / "test_inswapper.onnx", size=128, mode="invert", batch_dynamic=True),
        make_arcface_model(d / "test_arcface.onnx"),
    ]
    return {triton_model_name(p): p for p in files}


@pytest.fixture(scope="module")
def server(model_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    srv = TritonServer(model_files, tmp_path_factory.mktemp("triton-server"))
    srv.start()
    yield srv
    srv.stop()


def _settings(url: str, **kw) -> TritonSettings:
    return TritonSettings(url=url, **{"wait_ready_s": 20.0, **kw})


def _feeds(session, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        i.name: rng.random([batch if not isinstance(d, int) else d for d in i.shape]).astype(i.dtype)
        for i in session.inputs
    }


@pytest.mark.parametrize("protocol,shm", [("grpc", "auto"), ("grpc", "off"), ("http", "auto")])
def test_sessions_answer_what_onnx_runtime_answers(server, model_files, protocol, shm) -> None:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    rng = np.random.default_rng(0)
    for name, path in model_files.items():
        session = open_triton_session(path, _settings(url, protocol=protocol, shared_memory=shm))
        local = open_ort_session(path, InferenceSettings(provider="cpu", threads=1))
        assert [(i.name, i.dtype) for i in session.inputs] == [(i.name, i.dtype) for i in local.inputs]
        assert [o.name for o in session.outputs] == [o.name for o in local.outputs]
        assert ("+shm" in session.backend) == (shm == "auto"), session.backend
        # 11 > the server's max_batch_size 8: sent in two chunks.
        batch = 11 if session.max_batch else 1
        feeds = _feeds(session, batch, rng)
        got, want = session.run(feeds), local.run(feeds)
        for key in want:
            assert got[key].shape == want[key].shape
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-4)
        session.close()


def test_a_model_the_server_lacks_and_an_absent_server_say_what_to_do(server, model_files, tmp_path) -> None:
    path = model_files["test_inswapper"]
    missing = _settings(server.grpc_url, wait_ready_s=0.0, models={"swapper": TritonModelRef(name="nope")})
    with pytest.raises(BackendUnavailable, match=r"no ready model 'nope'.*triton export"):
        open_triton_session(path, missing, role="swapper")
    (port,) = free_ports(1)
    with pytest.raises(BackendUnavailable, match=rf"127.0.0.1:{port} does not answer.*inference.triton.url"):
        open_triton_session(path, _settings(f"127.0.0.1:{port}", wait_ready_s=0.0))
    session = open_triton_session(path, _settings(server.grpc_url))
    with pytest.raises(Exception, match="triton-access-token"):  # statistics need the header...
        session.conn.statistics("test_inswapper")
    with_header = TritonConnection(_settings(server.grpc_url, headers=server.headers))
    assert with_header.statistics("test_inswapper")["model_stats"]  # ...which the config's headers carry
    with pytest.raises(ModelError, match="refused the request"):  # a bad request is not an outage
        session.run({"target": np.zeros((1, 3, 64, 64), np.float32), "source": np.zeros((1, 512), np.float32)})
    assert not session.down


def test_lost_server_fails_fast_and_is_retried_with_backoff(server, model_files) -> None:
    """Against a port nobody listens on: retries, then fail-fast until the back-off ends."""
    path = model_files["test_arcface"]
    session = open_triton_session(path, _settings(server.grpc_url, shared_memory="off"))
    (port,) = free_ports(1)
    clock = [100.0]
    sleeps: list[float] = []
    session.conn.settings = session.settings = _settings(
        f"127.0.0.1:{port}", retries=2, backoff_s=0.1, max_backoff_s=0.3, shared_memory="off"
    )
    session.conn._grpc = None  # a channel to the dead port
    session._clock, session._sleep = (lambda: clock[0]), sleeps.append
    feeds = {"input.1": np.zeros((1, 3, 112, 112), np.float32)}
    with pytest.raises(TritonUnavailable, match="did not answer"):
        session.run(feeds)
    assert sleeps == [0.1, 0.2]  # two retries, doubling
    with pytest.raises(TritonUnavailable, match="next try in"):
        session.run(feeds)  # fails at once while backing off
    assert sleeps == [0.1, 0.2]
    clock[0] += 0.3
    with pytest.raises(TritonUnavailable, match="did not answer"):
        session.run(feeds)  # one try when the back-off is over, no retries
    assert sleeps == [0.1, 0.2] and session.down


# -- runs through the CLI ---------------------------------------------------------------


def _picture(face: np.ndarray):
    def draw(i: int, width: int, height: int) -> np.ndarray:
        frame = np.full((height, width, 3), 60, np.uint8)
        side = height
        crop = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        x = (i * 2) % max(width - side, 1)
        frame[:, x : x + side] = crop
        return frame

    return draw


@pytest.fixture(scope="module")
def face_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    face = astronaut()
    assert face is not None
    return make_video(
        tmp_path_factory.mktemp("triton-media") / "face.mp4", frames=30, fps=FPS, size=SIZE, picture=_picture(face)
    )


def _config(path: Path, model_files: dict[str, Path], models_dir: Path, **inference) -> Path:
    import yaml

    data = {
        "models": {"dir": str(models_dir)},
        "inference": {"provider": "cpu", "threads": 1, **inference},
        "faces": {
            "swapper": {"model": str(model_files["test_inswapper"]), "contract": "inswapper"},
            "recognizer": {"model": str(model_files["test_arcface"]), "contract": "arcface"},
        },
    }
    path.write_text(yaml.safe_dump(data))
    return path


def _triton_config(path, model_files, models_dir, server, **triton) -> Path:
    return _config(
        path,
        model_files,
        models_dir,
        backend="triton",
        triton={"url": server.grpc_url, "wait_ready_s": 20, "headers": server.headers, **triton},
    )


def _run(config: Path, src: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "STREAMSWAP_CONFIG"}
    face = sample_photo_paths()[2]  # Tom Hanks: the identity put on the astronaut
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamswap",
            "-c",
            str(config),
            "run",
            "-s",
            str(face),
            "-i",
            str(src),
            "-o",
            str(out),
            "--quiet",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return err


def _frames(path: Path) -> tuple[list[float], list[np.ndarray]]:
    with av.open(str(path)) as c:
        frames = [(float(f.time), f.to_ndarray(format="bgr24")) for f in c.decode(video=0)]
    return [t for t, _ in frames], [f for _, f in frames]


def _changed(out: np.ndarray, src: np.ndarray) -> float:
    return float(np.abs(out.astype(np.int16) - src.astype(np.int16)).mean())


def test_run_with_triton_equals_run_with_ort(server, model_files, bundled_models_dir, face_video, tmp_path) -> None:
    ort_out, tri_out = tmp_path / "ort.mp4", tmp_path / "triton.mp4"
    ort_cfg = _config(tmp_path / "ort.yaml", model_files, bundled_models_dir, backend="ort")
    tri_cfg = _triton_config(tmp_path / "triton.yaml", model_files, bundled_models_dir, server)
    procs = [_run(ort_cfg, face_video, ort_out), _run(tri_cfg, face_video, tri_out)]
    err = [_finish(p) for p in procs][1]
    assert "30 frames out of 30 read, 0 dropped, 0 errors" in err
    src_t, src = _frames(face_video)
    ort_t, ort = _frames(ort_out)
    tri_t, tri = _frames(tri_out)
    assert tri_t == src_t == ort_t  # every frame, in order, at its time
    for s, o, t in zip(src, ort, tri):
        assert _changed(t, s) > 3  # the face changed (the generator inverts it)
        assert _changed(t, o) < 0.5  # and equals the ort run (both encoded the same way)


def test_server_lost_mid_run_frames_pass_and_swapping_resumes(
    server, model_files, bundled_models_dir, tmp_path
) -> None:
    import signal

    face = astronaut()
    # Long enough for any restart; the run is stopped once swapping has resumed.
    src = make_video(tmp_path / "long.mp4", frames=60 * FPS, fps=FPS, size=SIZE, picture=_picture(face))
    out = tmp_path / "out.mp4"
    cfg = _triton_config(
        tmp_path / "t.yaml",
        model_files,
        bundled_models_dir,
        server,
        timeout_s=1.0,
        retries=1,
        backoff_s=0.05,
        max_backoff_s=0.5,
    )
    before = server.counts("test_inswapper")[0]
    proc = _run(cfg, src, out, "--live")  # a paced "camera": the outage spans real seconds
    deadline = time.monotonic() + 60
    while server.counts("test_inswapper")[0] < before + 10:
        assert proc.poll() is None and time.monotonic() < deadline, "the run never swapped"
        time.sleep(0.2)
    server.kill()
    time.sleep(1.5)
    server.start()
    deadline = time.monotonic() + 60
    while server.counts("test_inswapper")[0] < 10:  # the new server's count: swapping resumed
        assert proc.poll() is None and time.monotonic() < deadline, "swapping never resumed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # stop reading, drain, finalise the file
    err = _finish(proc)
    errors = int(err.rsplit(" errors", 1)[0].rsplit(" ", 1)[1])
    assert errors > 0, err[-2000:]
    assert "Triton server answers again" in err
    assert "status degraded" in err and "stage recovered" in err  # /status said degraded meanwhile
    src_t, src_frames = _frames(src)
    out_t, out_frames = _frames(out)
    by_time = dict(zip(src_t, src_frames))
    swapped = [_changed(f, by_time[t]) > 3 for t, f in zip(out_t, out_frames)]
    assert out_t == sorted(out_t)  # in order
    # swapped, then an unswapped stretch (the outage), then swapped again to the end
    first_gap = swapped.index(False)
    assert first_gap > 0 and any(swapped[first_gap:]), swapped
    assert swapped[-1], swapped
    assert sum(not s for s in swapped) <= errors


def test_four_runs_share_the_server_and_get_batched(
    server, model_files, bundled_models_dir, face_video, tmp_path
) -> None:
    cfg = _triton_config(tmp_path / "t.yaml", model_files, bundled_models_dir, server)
    before = server.counts("test_inswapper")
    procs = [_run(cfg, face_video, tmp_path / f"out{i}.mp4") for i in range(4)]
    for proc in procs:
        assert "30 frames out of 30 read" in _finish(proc)
    after = server.counts("test_inswapper")
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 4 * 30  # one face per frame, every frame of every run
    assert inferences / executions > 1.0, (inferences, executions)


def test_doctor_checks_server_and_models(server, model_files, bundled_models_dir, tmp_path) -> None:
    import dataclasses

    from streamswap.config import load_config
    from streamswap.doctor import FAIL, OK, triton_checks
    from streamswap.faces.settings import SwapperSettings

    cfg = load_config(_triton_config(tmp_path / "t.yaml", model_files, bundled_models_dir, server))
    checks = triton_checks(cfg)
    assert [c.status for c in checks] == [OK] * len(checks) and len(checks) == 5, checks  # server + 4 models
    # the built-in mesh swapper is no server model: it runs in the daemon, which loads no recognizer then
    mesh = dataclasses.replace(cfg, faces=dataclasses.replace(cfg.faces, swapper=SwapperSettings(model="mesh")))
    checks = triton_checks(mesh)
    assert [c.status for c in checks] == [OK] * 4, checks  # server, detector, landmarker, mesh
    assert (checks[-1].name, checks[-1].detail) == ("triton swapper", "mesh is built in: it runs in this daemon")
    cfg.inference.triton.models["swapper"] = TritonModelRef(name="not_there")
    bad = [c for c in triton_checks(cfg) if c.status == FAIL]
    assert len(bad) == 1 and "not_there" in bad[0].detail and "triton export" in bad[0].fix
    (port,) = free_ports(1)
    cfg.inference.triton.url = f"127.0.0.1:{port}"
    checks = triton_checks(cfg)
    assert checks[0].status == FAIL and "does not answer" in checks[0].detail and checks[0].fix


def test_bench_triton_reports_streams_and_the_servers_batching(
    server, model_files, bundled_models_dir, tmp_path
) -> None:
    import json

    cfg = _triton_config(tmp_path / "t.yaml", model_files, bundled_models_dir, server)
    env = {k: v for k, v in os.environ.items() if k != "STREAMSWAP_CONFIG"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamswap",
            "-c",
            str(cfg),
            "bench",
            "triton",
            "--streams",
            "2",
            "--frames",
            "8",
            "--size",
            "320x240",
            "--roundtrip",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert [s["frames_out"] for s in data["per_stream"]] == [8, 8]
    assert all(s["fps"] > 0 and s["latency_ms_p95"] >= s["latency_ms_p50"] > 0 for s in data["per_stream"])
    swapper = data["server"]["swapper"]
    assert swapper["model"] == "test_inswapper" and swapper["inferences"] >= 16  # group photo: faces × frames
    assert swapper["mean_batch"] == pytest.approx(swapper["inferences"] / swapper["executions"], abs=0.01)
    # one call per frame (not batched), plus the source photo's unless its identity was cached
    assert 2 * 8 <= data["server"]["detector"]["inferences"] <= 2 * (8 + 1)
    trip = data["roundtrip"]["detector"]
    assert trip["grpc"]["client_ms"] > 0 and trip["grpc+shm"]["client_ms"] > 0
    assert trip["grpc"]["input_bytes"] == 3 * 192 * 192 * 4
