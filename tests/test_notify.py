"""systemd notify protocol and the daemon's READY/STATUS/WATCHDOG/STOPPING behaviour,
in-process with a fake runtime (test_serve.py runs the real `streamswap serve`)."""

from __future__ import annotations

import os
import threading
import time

import pytest
from service_fakes import FakePipeline, NotifyListener, RecordingStages

from streamswap.commands.serve import check_endpoints
from streamswap.config import load_config
from streamswap.service.daemon import Daemon
from streamswap.service.notify import SystemdNotifier, watchdog_interval


def no_api_config(**overrides):
    """A config without the control API. `service.api: None` as a load_config override
    would mean "not given" (the default 127.0.0.1:8008, which another process may hold),
    so the API is switched off on the loaded config, as `serve --no-api` does."""
    config = load_config(None, overrides)
    config.service.api = None
    return config


@pytest.fixture
def listener(tmp_path):
    lst = NotifyListener(str(tmp_path / "notify.sock"))
    yield lst
    lst.close()


def test_path_socket_gets_datagrams(listener):
    n = SystemdNotifier(listener.address)
    assert n.enabled
    assert n.ready("up") and n.watchdog() and n.extend_timeout(90) and n.stopping()
    assert listener.wait_for(lambda ls: "STOPPING=1" in ls, 5)
    lines = listener.lines()
    assert lines[:2] == ["READY=1", "STATUS=up"]
    assert "WATCHDOG=1" in lines and "EXTEND_TIMEOUT_USEC=90000000" in lines


def test_reloading_carries_the_monotonic_time(listener):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert SystemdNotifier(listener.address).reloading()
    assert listener.wait_for(lambda ls: any(l.startswith("MONOTONIC_USEC=") for l in ls), 5)
    lines = listener.lines()
    usec = int(next(l for l in lines if l.startswith("MONOTONIC_USEC=")).split("=", 1)[1])
    assert lines[0] == "RELOADING=1"
    assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_abstract_socket():
    lst = NotifyListener(abstract=True)
    try:
        assert lst.address.startswith("@")
        assert SystemdNotifier(lst.address).notify("READY=1", "STATUS=abstract ok")
        assert lst.wait_for(lambda ls: "STATUS=abstract ok" in ls, 5)
    finally:
        lst.close()


def test_without_systemd_is_a_noop(tmp_path):
    n = SystemdNotifier.from_env({})
    assert not n.enabled and n.ready() is False
    # A socket that vanished: the call reports failure and does not raise.
    assert SystemdNotifier(str(tmp_path / "gone.sock")).watchdog() is False


def test_watchdog_interval_parsing():
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "3000000"}) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}) is None


def _run_daemon(listener, stages, wd_usec=200_000, **runtime_kw):
    config = no_api_config(**{"service.status_interval_s": 0.1})
    env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": str(wd_usec)}

    def build(cfg, extend_timeout):
        extend_timeout(120)  # what an engine builder does
        return stages

    daemon = Daemon(
        config,
        lambda: config,
        build_stages=build,
        make_pipeline=lambda c, s, o: FakePipeline(c, s, o, **runtime_kw),
        check_endpoints=check_endpoints,
        environ=env,
    )
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", daemon.run()), daemon=True)
    thread.start()
    return daemon, thread, result


def test_ready_watchdog_only_while_frames_advance_and_stopping(listener):
    stages = RecordingStages()
    daemon, thread, result = _run_daemon(listener, stages)
    assert listener.wait_for(lambda ls: "READY=1" in ls), listener.lines()
    assert daemon.api is None  # no port was bound
    lines = listener.lines()
    assert "EXTEND_TIMEOUT_USEC=120000000" in lines
    assert lines.index("EXTEND_TIMEOUT_USEC=120000000") < lines.index("READY=1")
    assert "WATCHDOG=1" not in lines[: lines.index("READY=1")]
    # Periodic pings while frames flow.
    assert listener.wait_for(lambda ls: ls.count("WATCHDOG=1") >= 4), listener.lines()
    assert any(l.startswith("STATUS=") and "fps" in l for l in listener.lines())

    stages.hang.set()  # the detect stage now blocks forever
    frames = daemon.frames_out()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # until the last in-flight frame is out
        time.sleep(0.05)
        if daemon.frames_out() == frames:
            break
        frames = daemon.frames_out()
    hung_at = time.monotonic() + 0.25  # at most one ping for frames made before the hang
    # The loop keeps running (STATUS= keeps coming) but sends no WATCHDOG=1.
    assert listener.wait_for(lambda ls: sum(1 for l in listener.lines(hung_at) if l.startswith("STATUS=")) >= 8, 10)
    assert daemon.frames_out() == frames
    assert "WATCHDOG=1" not in listener.lines(hung_at)

    stages.release()
    daemon.request_stop()
    thread.join(10)
    assert not thread.is_alive() and result["rc"] == 0
    assert "STOPPING=1" in listener.lines()


def test_no_watchdog_without_watchdog_usec(listener):
    stages = RecordingStages()
    daemon, thread, result = _run_daemon(listener, stages, wd_usec=0)
    try:
        assert listener.wait_for(lambda ls: "READY=1" in ls)
        assert listener.wait_for(lambda ls: sum(l.startswith("STATUS=") for l in ls) >= 5)
        assert "WATCHDOG=1" not in listener.lines()
    finally:
        daemon.request_stop()
        thread.join(10)


def test_input_that_fails_to_open_is_retried(listener):
    stages = RecordingStages()
    config = no_api_config(**{"service.status_interval_s": 0.1, "service.restart_delay_s": 0.05})
    attempts = []

    def make(c, s, o):
        attempts.append(1)
        return FakePipeline(c, s, o, fail_start=len(attempts) < 3)

    daemon = Daemon(
        config,
        lambda: config,
        build_stages=lambda c, e: stages,
        make_pipeline=make,
        check_endpoints=check_endpoints,
        environ={"NOTIFY_SOCKET": listener.address},
    )
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert listener.wait_for(lambda ls: "READY=1" in ls), listener.lines()
        assert len(attempts) == 3 and daemon.status()["daemon"]["pipeline_restarts"] == 2
    finally:
        daemon.request_stop()
        thread.join(10)


def test_engine_build_progress_extends_the_start_timeout(listener, monkeypatch):
    import streamswap.wiring as wiring
    from streamswap.commands import serve
    from streamswap.inference.trt_build import BuildProgress

    def fake_build(config, store=None, pool=None, **kw):
        # What the TensorRT builder does while an engine builds: report progress.
        for i in range(3):
            pool.progress(BuildProgress("inswapper_128", "build", "building", i / 3, float(i)))
        return "stages"

    monkeypatch.setattr(wiring, "build_face_stages", fake_build)
    config = no_api_config()
    daemon = Daemon(
        config,
        lambda: config,
        build_stages=serve.build_stages,
        make_pipeline=serve.make_pipeline,
        check_endpoints=check_endpoints,
        environ={"NOTIFY_SOCKET": listener.address},
    )
    assert serve.build_stages(config, daemon.extend_timeout) == "stages"
    want = f"EXTEND_TIMEOUT_USEC={int(serve.ENGINE_BUILD_EXTEND_S * 1e6)}"
    assert listener.wait_for(lambda ls: ls.count(want) == 3, 5), listener.lines()
    assert "STATUS=building engines: inswapper_128 build" in listener.lines()
    daemon.ready = True  # after READY=1 the start timeout no longer applies
    daemon.extend_timeout(60)
    daemon.notifier.status("marker")  # datagrams arrive in order: after this, nothing more
    assert listener.wait_for(lambda ls: "STATUS=marker" in ls, 5)
    assert "EXTEND_TIMEOUT_USEC=60000000" not in listener.lines()


def test_pipeline_that_ends_is_reopened_and_frames_stay_monotonic(listener):
    stages = RecordingStages()
    config = no_api_config(**{"service.status_interval_s": 0.1})
    made = []

    def make(c, s, o):
        made.append(FakePipeline(c, s, o, max_frames=20))
        return made[-1]

    daemon = Daemon(
        config,
        lambda: config,
        build_stages=lambda c, e: stages,
        make_pipeline=make,
        check_endpoints=check_endpoints,
        environ={"NOTIFY_SOCKET": listener.address},
    )
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert listener.wait_for(lambda ls: len(made) >= 3, 20)
        assert all(r.finished for r in made[:2])
        deadline = time.monotonic() + 10
        while daemon.frames_out() <= 40:  # counts across re-opened pipelines
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert daemon.status()["daemon"]["pipeline_restarts"] >= 2
    finally:
        daemon.request_stop()
        thread.join(10)
