"""display://: the preview window runs in a child process, so that a window that hangs
(cv2.namedWindow against PyAV's libxcb) never blocks the pipeline or SIGTERM; under Xvfb
a real window shows the frames of a real run that the first SIGTERM ends."""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import display_fakes
import numpy as np
import pytest
from conftest import require

from streamswap.errors import OutputError
from streamswap.io.base import FrameMeta, VideoFormat
from streamswap.io.display import CLOSE_GRACE_S, DisplaySink

VIDEO = VideoFormat(64, 48, Fraction(30), Fraction(1, 30))


def display_children() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name == "streamswap-display"]


@pytest.fixture(autouse=True)
def a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", os.environ.get("DISPLAY", ":99"))


def test_window_that_never_opens_is_killed_and_reported() -> None:
    sink = DisplaySink(window=display_fakes.hangs_opening, open_timeout_s=1.0)
    with pytest.raises(OutputError, match="did not open within 1 s"):
        sink.open(VIDEO, None)
    assert not display_children()  # killed although it ignores SIGTERM


def test_window_stuck_holding_the_frame_slot_never_blocks_writes_or_close() -> None:
    sink = DisplaySink(window=display_fakes.hangs_holding_the_slot)
    sink.open(VIDEO, None)
    frame = np.zeros((48, 64, 3), np.uint8)
    start = time.monotonic()
    for i in range(300):
        sink.write(frame, FrameMeta(i, i, 0.0))
    writes = time.monotonic() - start
    assert sink.counters == {"frames": 300, "dropped": 300}
    assert writes < 2.0  # each a failed try-lock: nothing waits for the window
    start = time.monotonic()
    sink.close()
    assert time.monotonic() - start < 2 * CLOSE_GRACE_S + 2.0
    assert not display_children()


def test_window_that_cannot_open_is_a_clear_error() -> None:
    with pytest.raises(OutputError, match=r"display://: cannot open a window \(qt.qpa.xcb: could not connect"):
        DisplaySink(window=display_fakes.refuses).open(VIDEO, None)
    assert not display_children()


def test_window_process_that_aborts_is_an_error_naming_the_display(monkeypatch: pytest.MonkeyPatch) -> None:
    """Qt aborts a process it cannot give a window (DISPLAY set, no X server there): that
    used to take the whole run down, files half written."""
    monkeypatch.setenv("DISPLAY", ":55")
    with pytest.raises(OutputError, match=r"exit code -6; is :55 a display this user may open windows on"):
        DisplaySink(window=display_fakes.aborts).open(VIDEO, None)
    assert not display_children()


def test_window_closed_by_the_user_ends_the_preview_only(caplog: pytest.LogCaptureFixture) -> None:
    sink = DisplaySink(window=display_fakes.closed_by_the_user)
    sink.open(VIDEO, None)
    frame = np.zeros((48, 64, 3), np.uint8)
    with caplog.at_level(logging.WARNING, "streamswap.io.display"):
        deadline = time.monotonic() + 10
        while "preview window gone" not in caplog.text and time.monotonic() < deadline:
            sink.write(frame, FrameMeta(0, 0, 0.0))  # never raises: the other outputs go on
            time.sleep(0.01)
    assert "preview window gone" in caplog.text
    sink.close()
    assert not display_children()


LEFT_OPEN = """
import sys
from fractions import Fraction
import display_fakes
from streamswap.io.base import VideoFormat
from streamswap.io.display import DisplaySink
sink = DisplaySink(window=display_fakes.hangs_holding_the_slot)
sink.open(VideoFormat(64, 48, Fraction(30), Fraction(1, 30)), None)
print(sink._process.pid, flush=True)
sys.exit(0)  # no close(): an output thread that never got to it
"""


def test_a_run_that_ends_without_close_leaves_no_hung_window() -> None:
    """multiprocessing waits for its children at exit; a hung window (SIGTERM ignored)
    must not keep the run from ending."""
    tests = Path(__file__).resolve().parent
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}
    done = subprocess.run([sys.executable, "-c", LEFT_OPEN], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    child = int(done.stdout)
    deadline = time.monotonic() + 5
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child)


def test_the_window_child_never_imports_pyav() -> None:
    """PyAV's bundled libxcb is what hangs HighGUI: the child imports this module, so it
    must not pull PyAV in (the parent has it loaded; the spawned child starts clean)."""
    code = "import sys, streamswap.io.display; print('av' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.strip() == "False", out.stderr


# --- a real window under Xvfb -------------------------------------------------------------


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    """A virtual X server on a display number it picks itself (-displayfd)."""
    require(shutil.which("Xvfb") is not None, "Xvfb (apt install xvfb; scripts/install.sh --dev)")
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as numbers:
        number = numbers.readline().strip()
    try:
        assert number.isdigit(), "Xvfb did not start"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


def test_real_window_shows_frames_with_pyav_loaded(xvfb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import av  # noqa: F401  (loaded in this process, as in every run: the window must not care)

    monkeypatch.setenv("DISPLAY", xvfb)
    sink = DisplaySink()
    sink.open(VIDEO, None)
    os.kill(sink._process.pid, signal.SIGINT)  # Ctrl-C reaches the window's process too
    frame = np.zeros((48, 64, 3), np.uint8)
    for i in range(60):
        frame[:] = i
        sink.write(frame, FrameMeta(i, i, 0.0))
        time.sleep(0.01)
    shown = sink.counters["frames"] - sink.counters["dropped"]
    sink.close()
    assert shown > 10
    assert not display_children()


ORPHAN = """
import os, sys, time
from fractions import Fraction
from streamswap.io.base import VideoFormat
from streamswap.io.display import DisplaySink
sink = DisplaySink()
sink.open(VideoFormat(64, 48, Fraction(30), Fraction(1, 30)), None)
print(sink._process.pid, flush=True)
time.sleep(120)
"""


def test_window_closes_when_its_process_is_killed(xvfb: str) -> None:
    env = os.environ | {"DISPLAY": xvfb}
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()  # SIGKILL: no close(), no atexit
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(child), "the window outlived the run"
    finally:
        if parent.poll() is None:
            parent.kill()


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (its parent is gone: init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_first_sigterm_ends_a_run_with_a_window(xvfb: str, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pipeline:\n  stats_interval: 0.1\n  drain_timeout: 3\n")
    env = {k: v for k, v in os.environ.items() if k != "STREAMSWAP_CONFIG"} | {"DISPLAY": xvfb}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamswap",
            "run",
            "--config",
            str(cfg),
            "--input",
            "test://?fps=30",
            "--output",
            "display://",
            "--output",
            "null://",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    # HighGUI hung before the first frame when it shared the process with PyAV: a watchdog
    # ends such a run, so the loop below sees the end of its output instead of waiting.
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        for line in proc.stderr:
            m = re.search(r"stats .*frames_out=(\d+)", line)
            if m and int(m.group(1)) >= 30:
                break
        else:
            pytest.fail("the run showed no 30 frames within 60 s")
        watchdog.cancel()
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        rc = proc.wait(3 + 5 + 5)  # the drain deadline, the runtime's own stop, the window's grace
        rest = proc.stderr.read()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, rest
    assert time.monotonic() - start < 8
    closed = re.search(r"output closed output=display:// frames=(\d+) dropped=(\d+)", rest)
    assert closed and int(closed.group(1)) - int(closed.group(2)) >= 10, rest  # the window took frames
