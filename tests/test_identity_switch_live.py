"""The bundled models on the real pipeline inside the real daemon: a source switch by upload
and one by reload never stall the video — no gap between frames leaving the pipeline longer
than two frame intervals — and the frames that follow carry the new identity.

The identities are the astronaut tinted blue (the upload) and red (the reload); the mesh
swapper runs without colour matching so the tint shows on the swapped faces."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from swap_fixtures import sample_photo_paths

from streamswap.commands import serve
from streamswap.config import load_config
from streamswap.service.daemon import Daemon

FPS = 8  # a rate this (shared, 2-core) machine sustains with the bundled CPU models
INTERVAL = 1 / FPS


class Recorder:
    """A sink noting when each frame left and its tint (mean blue minus mean red)."""

    name = "recorder://"

    def __init__(self) -> None:
        self.counters: dict[str, int] = {"frames": 0}
        self.frames: list[tuple[float, float, float]] = []  # (written at, captured at, tint)

    def open(self, video: Any, audio: Any) -> None:
        pass

    def write(self, frame: np.ndarray, meta: Any) -> None:
        tint = float(frame[..., 0].mean()) - float(frame[..., 2].mean())
        self.frames.append((time.monotonic(), meta.capture_time, tint))
        self.counters["frames"] += 1

    def write_audio(self, packets: list[Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _tinted(image: np.ndarray, channel: int) -> np.ndarray:
    out = image.copy()
    out[..., channel] = np.clip(out[..., channel].astype(int) + 120, 0, 255).astype(np.uint8)
    return out


def test_upload_and_reload_switch_without_a_stall(bundled_models_dir: Path, tmp_path: Path) -> None:
    astronaut, group, _ = sample_photo_paths()
    photo = cv2.imread(str(astronaut))
    blue, red = _tinted(photo, 0), _tinted(photo, 2)
    red_path = tmp_path / "red.png"
    cv2.imwrite(str(red_path), red)
    config_file = tmp_path / "serve.yaml"
    settings = {
        "input": f"test://photo?path={group}&width=480&height=320&fps={FPS}",
        "outputs": ["null://"],
        "source": [str(astronaut)],
        "models": {"dir": str(bundled_models_dir)},
        "inference": {"provider": "cpu"},
        "faces": {"mesh": {"color_match": False, "relight": 0.0}},
        "service": {"api": None, "status_interval_s": 0.2},
    }
    config_file.write_text(yaml.safe_dump(settings))
    recorder = Recorder()

    def make_pipeline(config: Any, stages: Any, observers: Any) -> Any:
        from streamswap.wiring import build_pipeline, plan_endpoints

        endpoints = plan_endpoints(config, live=True, loop=True)
        return build_pipeline(config, stages.stages, source=endpoints.source, sinks=[recorder], observers=observers)

    load = lambda: load_config(config_file)  # noqa: E731
    daemon = Daemon(
        load(),
        load,
        build_stages=serve.build_stages,
        make_pipeline=make_pipeline,
        check_endpoints=serve.check_endpoints,
        environ={},
    )
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 90
        while len(recorder.frames) < 3 * FPS:  # models loaded, frames flowing
            assert time.monotonic() < deadline and runner.is_alive(), "no frames"
            time.sleep(0.05)
        start = len(recorder.frames)
        time.sleep(1.0)
        daemon.set_source_image(blue)  # POST /source
        uploaded = time.monotonic()
        time.sleep(1.5)
        settings["source"] = [str(red_path)]
        config_file.write_text(yaml.safe_dump(settings))
        assert daemon.reload()["applied"] == ["source"]  # SIGHUP / POST /reload
        reloaded = time.monotonic()
        time.sleep(1.5)
    finally:
        daemon.request_stop()
        runner.join(30)
    frames = recorder.frames[start:]
    written = np.array([f[0] for f in frames])
    gaps = np.diff(written)
    big = [
        (round(float(written[i] - uploaded), 3), round(float(written[i] - reloaded), 3), round(float(g), 3))
        for i, g in enumerate(gaps)
        if g > 2 * INTERVAL
    ]
    assert gaps.max() <= 2 * INTERVAL, (big, INTERVAL)  # the video never stalled

    def tints(after: float, before: float) -> np.ndarray:
        return np.array([tint for _, captured, tint in frames if after < captured < before])

    original = tints(0, uploaded - 0.5)
    as_blue = tints(uploaded, reloaded - 0.2)
    as_red = tints(reloaded, float("inf"))
    assert len(original) and len(as_blue) and len(as_red)
    # Every frame captured after the switch returned carries the new identity at once.
    assert as_blue.min() > original.max() + 0.5, (original.max(), as_blue.min())
    assert as_red.max() < original.min() - 0.5, (original.min(), as_red.max())
