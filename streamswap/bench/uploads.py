"""`streamswap bench uploads`: a burst of face uploads against a running daemon.

Starts `streamswap serve` as a subprocess (the config's face models — the bundled ones by
default —, a looping clip of insightface's group photo in, null:// out, the control API on
a free loopback port), waits until frames flow, then sends N `POST /source` at once with a
real face photo (scikit-image's astronaut) while `GET /status` is asked one request after
another. Reported: the answers by status code (200, or 503 "busy, retry"), `/status`
latency p50/max during the burst, the frames that left meanwhile, and the daemon's
resident memory (RSS) before, at its peak and `--settle` seconds after the last answer.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from streamswap.errors import InputError, StreamswapError

HELP = "N concurrent face uploads to a `serve` it starts: answers by status, /status latency, daemon memory"

_LISTENING = re.compile(r"control API listening.*address=\S*?:(\d+)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uploads", type=int, default=50, metavar="N", help="concurrent POST /source (default: 50)")
    parser.add_argument("-s", "--source", metavar="FACE", help="the uploaded photo (default: scikit-image's astronaut)")
    parser.add_argument(
        "--input", metavar="URI", help="what the daemon reads (default: a 4 s looping clip of a group photo, 640x480)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds after the burst before memory is read again (default: 30)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="bursts one after another, each followed by --settle (default: 1)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


@dataclass
class _Samples:
    """What the watcher threads saw while the uploads ran."""

    status_ms: list[float] = field(default_factory=list)
    status_failures: list[str] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)


class _Daemon:
    """`streamswap serve` in a subprocess, its log in a file, its API on a free port."""

    def __init__(self, config: Path, input_uri: str, workdir: Path) -> None:
        self.log_path = workdir / "serve.log"
        self._log = open(self.log_path, "w")
        cmd = [sys.executable, "-m", "streamswap", "-c", str(config), "serve"]
        cmd += ["--input", input_uri, "--output", "null://", "--api", "127.0.0.1:0"]
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        self.port = 0

    def log_tail(self, lines: int = 5) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise StreamswapError(f"streamswap serve exited ({self.proc.returncode}):\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until the API is bound (port read from the log) and /health says frames flow."""
        deadline = time.monotonic() + timeout
        while not self.port:
            self._alive()
            found = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if found:
                self.port = int(found.group(1))
            elif time.monotonic() > deadline:
                raise StreamswapError(f"streamswap serve did not open its API in {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.1)
        while self.request("GET", "/health")[0] != 200:
            self._alive()
            if time.monotonic() > deadline:
                raise StreamswapError(f"streamswap serve was not ready in {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = "", timeout: float = 120.0
    ) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": content_type} if content_type else {})
            response = conn.getresponse()
            data = response.read()
            try:
                parsed = json.loads(data) if data else {}
            except ValueError:
                parsed = {"text": data[:200].decode(errors="replace")}
            return response.status, parsed if isinstance(parsed, dict) else {"value": parsed}
        finally:
            conn.close()

    def frames_out(self) -> int:
        code, body = self.request("GET", "/health")
        return int(body.get("frames_out", 0)) if code in (200, 503) else 0

    def rss_mb(self) -> float | None:
        """Resident memory of the daemon process (Linux /proc), MB."""
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
        return round(int(found.group(1)) / 1024, 1) if found else None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc


def make_clip(path: Path, photo: Path, seconds: float = 4.0, size: tuple[int, int] = (640, 480), fps: int = 30) -> Path:
    """An H.264 clip of `photo` panning slowly (faces that move a little, as on a camera)."""
    import av

    image = cv2.imread(str(photo))
    if image is None:
        raise InputError(f"{photo}: not a readable image")
    width, height = size
    scale = max(width / image.shape[1], height / image.shape[0]) * 1.2
    big = cv2.resize(image, (int(image.shape[1] * scale) + 1, int(image.shape[0] * scale) + 1))
    room_x, room_y = big.shape[1] - width, big.shape[0] - height
    frames = max(int(seconds * fps), 1)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "23"}
        for i in range(frames):
            t = 0.5 - 0.5 * np.cos(2 * np.pi * i / frames)  # there and back: the loop has no jump
            x, y = int(room_x * t), int(room_y * t)
            crop = np.ascontiguousarray(big[y : y + height, x : x + width], dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(crop, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


def _watch(daemon: _Daemon, samples: _Samples, stop: threading.Event) -> list[threading.Thread]:
    """Threads that ask /status one request after another and read the daemon's RSS."""

    def status() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                code, _ = daemon.request("GET", "/status", timeout=60)
                if code != 200:
                    samples.status_failures.append(f"HTTP {code}")
            except OSError as exc:
                samples.status_failures.append(type(exc).__name__)
            samples.status_ms.append((time.perf_counter() - t0) * 1000)
            stop.wait(0.05)

    def memory() -> None:
        while not stop.is_set():
            rss = daemon.rss_mb()
            if rss is not None:
                samples.rss_mb.append(rss)
            stop.wait(0.1)

    threads = [threading.Thread(target=fn, name=f"bench-{fn.__name__}", daemon=True) for fn in (status, memory)]
    for t in threads:
        t.start()
    return threads


def burst(daemon: _Daemon, photo: bytes, content_type: str, n: int) -> tuple[Counter[str], list[float], float]:
    """N POST /source released together: (answers by status, seconds per answer, wall seconds)."""
    answers: Counter[str] = Counter()
    seconds: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(n)

    def upload() -> None:
        start.wait()
        t0 = time.perf_counter()
        try:
            code, _ = daemon.request("POST", "/source", body=photo, content_type=content_type)
            key = str(code)
        except OSError as exc:
            key = type(exc).__name__
        with lock:
            answers[key] += 1
            seconds.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=upload, name=f"bench-upload-{i}", daemon=True) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers, seconds, time.perf_counter() - t0


def one_round(daemon: _Daemon, photo: bytes, content_type: str, uploads: int, settle: float) -> dict[str, Any]:
    """One burst of `uploads` with /status and memory watched, then `settle` seconds' wait."""
    frames0 = daemon.frames_out()
    samples, stop = _Samples(), threading.Event()
    watchers = _watch(daemon, samples, stop)
    answers, seconds, wall = burst(daemon, photo, content_type, uploads)
    stop.set()
    for t in watchers:
        t.join()
    frames = daemon.frames_out() - frames0
    print(f"bench uploads: burst answered in {wall:.1f} s; waiting {settle:g} s for memory to settle…", file=sys.stderr)
    time.sleep(settle)
    return {
        "answers": dict(sorted(answers.items())),
        "burst_s": round(wall, 2),
        "upload_s_p50": round(statistics.median(seconds), 2),
        "upload_s_max": round(max(seconds), 2),
        "status_requests": len(samples.status_ms),
        "status_ms_p50": round(statistics.median(samples.status_ms), 1) if samples.status_ms else None,
        "status_ms_max": round(max(samples.status_ms), 1) if samples.status_ms else None,
        "status_failures": dict(Counter(samples.status_failures)),
        "frames_during_burst": frames,
        "fps_during_burst": round(frames / max(wall, 1e-3), 1),
        "rss_mb_peak": max(samples.rss_mb) if samples.rss_mb else None,
        "rss_mb_after": daemon.rss_mb(),
    }


def run(args: argparse.Namespace, ctx: Any) -> int:
    from streamswap.commands.demo import demo_photos
    from streamswap.config import dump_config

    if args.uploads < 1 or args.rounds < 1 or args.settle < 0:
        raise InputError("--uploads and --rounds must be 1 or more, --settle 0 or more")
    group, astronaut = demo_photos()
    face = Path(args.source) if args.source else astronaut
    try:
        photo = face.read_bytes()
    except OSError as exc:
        raise InputError(f"{face}: cannot read the face photo ({exc.strerror})") from None
    content_type = {".png": "image/png", ".webp": "image/webp"}.get(face.suffix.lower(), "image/jpeg")
    config = ctx.config()
    results: dict[str, Any] = {"uploads": args.uploads, "photo": str(face), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="streamswap-bench-uploads-") as tmp:
        workdir = Path(tmp)
        cfg = workdir / "config.yaml"
        cfg.write_text(dump_config(config))
        input_uri = args.input or str(make_clip(workdir / "group.mp4", group))
        results["input"] = args.input or "a 4 s 640x480 clip of insightface's t1.jpg, looping"
        print("bench uploads: starting streamswap serve…", file=sys.stderr)
        daemon = _Daemon(cfg, input_uri, workdir)
        try:
            daemon.wait_ready()
            time.sleep(2.0)  # past the first frames' one-off allocations
            results["rss_mb_before"] = daemon.rss_mb()
            # At rest, for comparison: frames out and /status latency without uploads.
            frames0, t0 = daemon.frames_out(), time.monotonic()
            rest, stop = _Samples(), threading.Event()
            watchers = _watch(daemon, rest, stop)
            time.sleep(5.0)
            stop.set()
            for t in watchers:
                t.join()
            results["fps_before"] = round((daemon.frames_out() - frames0) / (time.monotonic() - t0), 1)
            results["status_ms_p50_at_rest"] = round(statistics.median(rest.status_ms), 1)
            results["status_ms_max_at_rest"] = round(max(rest.status_ms), 1)
            results["rounds"] = []
            for i in range(args.rounds):
                print(f"bench uploads: round {i + 1}: {args.uploads} concurrent POST /source…", file=sys.stderr)
                results["rounds"].append(one_round(daemon, photo, content_type, args.uploads, args.settle))
            results["source_identity"] = daemon.request("GET", "/status")[1].get("source_identity")
            results["daemon_alive"] = daemon.proc.poll() is None
        finally:
            results["exit_code"] = daemon.stop()
    _report(results, args.json)
    return 0


def _report(results: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
        return
    print(f"uploads:     {results['uploads']} concurrent POST /source of {results['photo']}")
    print(
        f"at rest:     {results['rss_mb_before']} MB RSS, {results['fps_before']} fps out, /status p50 "
        f"{results['status_ms_p50_at_rest']} ms, max {results['status_ms_max_at_rest']} ms"
    )
    for i, r in enumerate(results["rounds"], 1):
        answers = ", ".join(f"{n}× {code}" for code, n in r["answers"].items())
        print(f"round {i}:")
        print(
            f"  answers:   {answers} in {r['burst_s']} s (per upload p50 {r['upload_s_p50']} s, max {r['upload_s_max']} s)"
        )
        print(
            f"  /status:   p50 {r['status_ms_p50']} ms, max {r['status_ms_max']} ms over "
            f"{r['status_requests']} requests; failures: {r['status_failures'] or 'none'}"
        )
        print(f"  frames:    {r['frames_during_burst']} out during the burst ({r['fps_during_burst']} fps)")
        print(f"  RSS:       {r['rss_mb_peak']} MB at peak, {r['rss_mb_after']} MB after settling")
    alive = "alive" if results["daemon_alive"] else "DEAD"
    print(f"daemon:      {alive} at the end, exit code {results['exit_code']} after SIGTERM")
