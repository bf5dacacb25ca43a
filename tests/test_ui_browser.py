"""The control page in a real browser: Debian's chromium, headless, driven by Selenium
through Debian's chromium-driver, against a running `streamswap serve` that swaps a
face of insightface's group photo onto scikit-image's astronaut gliding through a clip (the
bundled models and the mesh swapper, on the CPU).

- the page renders: screenshots show the preview image, and it changes between two shots;
- a click on "Pause swapping" makes the next output frames unswapped (compared with the
  clip's own frame of the same index, which the preview names in X-Frame-Index);
- choosing a face photo in the page switches the identity (status and the swapped pixels).

STREAMSWAP_UI_SCREENSHOT=/path.png keeps a screenshot of the page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
from conftest import require
from swap_fixtures import sample_photo_paths

FPS = 10
CLIP_FRAMES = 40  # the clip loops (serve re-opens a file input when it ends)
SIZE = (640, 360)
# changed_fraction of a swapped frame against the clip's frame is above SWAPPED (measured
# 0.001-0.003: the face is ~2 % of the frame, the mesh swap changes part of it by over 30
# levels); of an unswapped one below UNSWAPPED (measured 0.0: only the preview's JPEG noise).
SWAPPED = 0.0004
UNSWAPPED = 0.0001
# Output frames that may already be past the swap stage when a change is made: one per ring
# entry and one per stage thread (3 × queue_size + 4 slots, queue_size 1); each preview
# frame is a later output frame than the one before.
IN_FLIGHT = 8


def _chromium() -> tuple[str | None, str | None]:
    return (
        shutil.which("chromium") or shutil.which("chromium-browser"),
        shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None),
    )


def make_clip(path: Path, photo: Path) -> list[np.ndarray]:
    """`photo` gliding left and right, CLIP_FRAMES frames; returns them as decoded."""
    import av

    img = cv2.imread(str(photo))
    width, height = SIZE
    scale = 0.9 * height / img.shape[0]
    img = cv2.resize(
        img, (int(img.shape[1] * scale) // 2 * 2, int(img.shape[0] * scale) // 2 * 2), interpolation=cv2.INTER_AREA
    )
    travel = width - img.shape[1]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "12"}
        for i in range(CLIP_FRAMES):
            frame = np.full((height, width, 3), 40, np.uint8)
            x = int(travel * (0.5 + 0.5 * np.sin(2 * np.pi * i / CLIP_FRAMES)))
            y = (height - img.shape[0]) // 2
            frame[y : y + img.shape[0], x : x + img.shape[1]] = img
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


class Serve:
    """`streamswap serve` in a child process; the API address is read from its log."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamswap", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        self._found = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"control API listening address=(\S+)", line)
            if m:
                self.url = f"http://{m.group(1)}"
                self._found.set()
        self._found.set()

    def wait_ready(self, timeout: float = 120) -> str:
        assert self._found.wait(timeout) and self.url, "".join(self.lines[-30:])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "".join(self.lines[-30:])
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError("serve never became ready:\n" + "".join(self.lines[-30:]))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def preview_frame(base: str, after: int = 0) -> tuple[np.ndarray, int, int]:
    """(BGR image, output frame index, preview seq) of the next preview frame."""
    with urllib.request.urlopen(f"{base}/preview.jpg?after={after}&timeout=20", timeout=30) as r:
        data = r.read()
        index, seq = int(r.headers["X-Frame-Index"]), int(r.headers["X-Preview-Seq"])
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return image, index, seq


def changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels whose colour differs by more than 30 levels once both are blurred
    (the preview's JPEG noise stays well below; a swapped face does not)."""
    if a.shape != b.shape:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    diff = cv2.absdiff(cv2.GaussianBlur(a, (5, 5), 0), cv2.GaussianBlur(b, (5, 5), 0)).max(axis=2)
    return float((diff > 30).mean())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, bundled_models_dir: Path) -> Iterator[dict[str, Any]]:
    astronaut, group, hanks = sample_photo_paths()
    tmp = tmp_path_factory.mktemp("ui")
    original = make_clip(tmp / "clip.mp4", astronaut)
    env = {k: v for k, v in os.environ.items() if k not in ("STREAMSWAP_CONFIG", "STREAMSWAP_API_TOKEN")}
    env["XDG_CACHE_HOME"] = str(tmp / "xdg")
    serve = Serve(
        [
            "serve",
            "-s",
            str(group),
            "-i",
            str(tmp / "clip.mp4"),
            "-o",
            "null://",
            "--api",
            "127.0.0.1:0",
            "--models-dir",
            str(bundled_models_dir),
        ],
        env,
    )
    try:
        base = serve.wait_ready()
        yield {"url": base, "original": original, "hanks": hanks, "serve": serve, "tmp": tmp}
    finally:
        serve.stop()


@pytest.fixture(scope="module")
def browser(served: dict[str, Any]) -> Iterator[Any]:
    binary, driver_path = _chromium()
    require(
        binary is not None and driver_path is not None,
        "Debian's chromium and chromium-driver (scripts/install.sh --dev installs them)",
    )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "selenium (the dev extra: pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="streamswap-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(60)
    try:
        driver.get(served["url"] + "/")
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _preview_shot(driver: Any) -> np.ndarray:
    from selenium.webdriver.common.by import By

    png = driver.find_element(By.ID, "preview").screenshot_as_png
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def test_page_renders_a_live_preview(browser: Any, served: dict[str, Any]) -> None:
    _wait(
        lambda: browser.execute_script("return document.getElementById('preview').naturalWidth") > 0,
        60,
        "the preview image",
    )
    _wait(lambda: browser.find_element("id", "state").text in ("running", "degraded"), 30, "the state badge")
    first = _preview_shot(browser)
    assert first.std() > 20, "the preview area is blank"
    time.sleep(1.5)
    second = _preview_shot(browser)
    assert changed_fraction(first, second) > 0.01, "the preview did not change between two screenshots"
    # The page shows the pipeline's numbers, the identity and the output.
    page = browser.find_element("tag name", "body").text
    assert "t1.jpg" in browser.find_element("id", "identity").text
    assert "null://" in page and "→" in browser.find_element("id", "fps").text
    _wait(lambda: browser.find_elements("css selector", "#events li"), 10, "log events")
    shot = os.environ.get("STREAMSWAP_UI_SCREENSHOT")
    if shot:
        browser.save_screenshot(shot)


def test_pause_click_makes_the_next_frames_unswapped(browser: Any, served: dict[str, Any]) -> None:
    base, original = served["url"], served["original"]
    _wait(
        lambda: browser.execute_script("return document.getElementById('preview').naturalWidth") > 0,
        60,
        "the preview image",
    )
    # Swapped now: the faces differ from the clip's own frame.
    image, index, seq = preview_frame(base)
    swapped = changed_fraction(image, original[index % CLIP_FRAMES])
    # The face is ~2 % of the frame; the swap changes a part of it by more than 30 levels.
    assert swapped > SWAPPED, f"frames are not swapped before the pause ({swapped:.4f})"
    browser.find_element("id", "pause").click()
    _wait(lambda: get_json(f"{base}/status")["paused"], 10, "paused in /status")
    _wait(lambda: browser.find_element("id", "resume").is_displayed(), 10, "the resume button")
    # Frames already past the swap stage leave swapped (at most IN_FLIGHT); the next do not.
    paused_seq = preview_frame(base, seq)[2]
    checked = 0
    while checked < 3:
        image, index, seq = preview_frame(base, seq)
        if seq < paused_seq + IN_FLIGHT:
            continue
        plain = changed_fraction(image, original[index % CLIP_FRAMES])
        assert plain < UNSWAPPED and plain < swapped / 5, f"frame {index} still differs ({plain:.4f} vs {swapped:.4f})"
        checked += 1
    browser.find_element("id", "resume").click()
    _wait(lambda: not get_json(f"{base}/status")["paused"], 10, "resumed in /status")


def test_choosing_a_face_in_the_page_switches_the_identity(browser: Any, served: dict[str, Any]) -> None:
    base, original = served["url"], served["original"]
    _wait(lambda: not get_json(f"{base}/status")["paused"], 10, "swapping on")
    # Swapped frames with the astronaut, by clip frame index.
    before: dict[int, np.ndarray] = {}
    seq = 0
    deadline = time.monotonic() + 20
    while len(before) < 8 and time.monotonic() < deadline:
        image, index, seq = preview_frame(base, seq)
        before[index % CLIP_FRAMES] = image
    identity = get_json(f"{base}/status")["source_identity"]
    browser.find_element("id", "face-file").send_keys(str(served["hanks"]))
    _wait(
        lambda: (
            "face switched" in browser.find_element("id", "action-result").text
            or "failed" in browser.find_element("id", "action-result").text
        ),
        60,
        "the upload's answer",
    )
    assert "face switched" in browser.find_element("id", "action-result").text, browser.find_element(
        "id", "action-result"
    ).text
    _wait(lambda: get_json(f"{base}/status")["source_identity"] != identity, 10, "the new identity in /status")
    switched_seq = preview_frame(base, seq)[2]
    compared = 0
    deadline = time.monotonic() + 40
    while compared < 3 and time.monotonic() < deadline:
        image, index, seq = preview_frame(base, seq)
        key = index % CLIP_FRAMES
        if seq < switched_seq + IN_FLIGHT or key not in before:
            continue
        assert changed_fraction(image, original[key]) > SWAPPED, "frames are no longer swapped"
        assert changed_fraction(image, before[key]) > SWAPPED, f"frame {index}: the face did not change"
        compared += 1
    assert compared == 3, "too few frames to compare"


def test_selection_controls_change_which_faces_are_swapped(browser: Any, served: dict[str, Any]) -> None:
    from selenium.webdriver.support.ui import Select

    base = served["url"]
    _wait(lambda: browser.find_element("id", "selection-card").is_displayed(), 30, "the selection card")
    assert Select(browser.find_element("id", "sel-mode")).first_selected_option.get_attribute("value") == "all"
    Select(browser.find_element("id", "sel-mode")).select_by_value("one")
    Select(browser.find_element("id", "sel-order")).select_by_value("large-small")
    browser.find_element("id", "sel-apply").click()
    _wait(
        lambda: (
            browser.find_element("id", "selection-result").text in ("applied",)
            or "refused" in browser.find_element("id", "selection-result").text
        ),
        20,
        "the answer",
    )
    assert browser.find_element("id", "selection-result").text == "applied"
    rules = get_json(f"{base}/faces/selection")
    assert (rules["mode"], rules["order"]) == ("one", "large-small")
    # A mapping to a photo that is not there is refused with the daemon's reason.
    browser.find_element("id", "map-reference").send_keys("/nonexistent/person.jpg")
    browser.find_element("id", "map-source").send_keys(str(served["hanks"]))
    browser.find_element("id", "map-add").click()
    _wait(lambda: "refused" in browser.find_element("id", "selection-result").text, 20, "the refusal")
    Select(browser.find_element("id", "sel-mode")).select_by_value("all")
    browser.find_element("id", "sel-apply").click()
    _wait(lambda: get_json(f"{base}/faces/selection")["mode"] == "all", 20, "mode all again")


def test_with_a_token_the_page_asks_for_it_then_works(browser: Any, tmp_path: Path) -> None:
    """`run --ui` with $STREAMSWAP_API_TOKEN: a sign-in prompt; a wrong token is refused."""
    token = "ui-test-token-0123456789abcdef"
    env = {k: v for k, v in os.environ.items() if k not in ("STREAMSWAP_CONFIG",)}
    env["STREAMSWAP_API_TOKEN"] = token
    run = Serve(
        ["run", "-i", "test://?width=320&height=240&fps=15", "-o", "null://", "--ui", "--api", "127.0.0.1:0"], env
    )
    try:
        base = run.wait_ready()
        browser.get(base + "/")
        _wait(lambda: browser.execute_script("return document.getElementById('login').open"), 20, "the sign-in prompt")
        assert not browser.execute_script("return document.getElementById('preview').getAttribute('src')")
        browser.find_element("id", "token").send_keys("not-the-token-at-all")
        browser.find_element("id", "login-submit").click()
        _wait(lambda: "wrong token" in browser.find_element("id", "login-error").text, 10, "the refusal")
        field = browser.find_element("id", "token")
        field.clear()
        field.send_keys(token)
        browser.find_element("id", "login-submit").click()
        _wait(
            lambda: not browser.execute_script("return document.getElementById('login').open"),
            10,
            "the prompt to close",
        )
        _wait(
            lambda: browser.execute_script("return document.getElementById('preview').naturalWidth") > 0,
            30,
            "the preview after signing in",
        )
        _wait(lambda: browser.find_element("id", "state").text == "running", 10, "the state")
    finally:
        run.stop()
