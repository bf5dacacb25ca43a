"""`streamswap bench anchor`: the streamswap side of the comparison with Deep-Live-Cam and
FaceFusion on the same work, reproducible anywhere (issue 7/7's anchor).

The work (generated, deterministic: `anchor_media`): a 10 s 1280×720 30 fps H.264 + AAC clip
of a moving face photo; an SCRFD-shaped detector (≈2.19 G multiply-adds at 640²), an
inswapper-shaped swapper (≈2.78 G), an ArcFace-shaped recognizer. Each run is `streamswap
run` in a child process (the same wiring: CPU budget, models, pipeline, encoder), so its CPU
time and peak memory are its own:

- file → file, every frame and the audio kept, with the default encoder settings and with
  Deep-Live-Cam's (libx264 `medium`, CRF 18) — the comparison at equal encoder cost;
- live (`--live`: the file paced at 30 fps like a camera), both encoder settings;
- live with the bundled default models (BlazeFace + FaceMesh + mesh swapper);
- `--busy-core`: live again while another process keeps one core busy.

Printed per run: FPS out, CPU seconds per frame, latency p50/p95, drops, output size and
frames, per-call detect/swap ms. First, the model calls alone and two at once, with the CPU
budget's threads and with ONNX Runtime's defaults (one spinning thread per core each): the
measurement behind the budget. Every number comes with the load average, since other
processes slow everything down.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HELP = (
    "the anchor work (10 s 720p30 clip, SCRFD/inswapper-shaped models): file→file and live "
    "FPS, CPU s/frame, latency, drops, output size"
)

DLC_ENCODER = {"io.preset": "medium", "io.crf": 18}  # Deep-Live-Cam 2.1.5's ffmpeg settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        help="keep the generated clip, models and outputs here (default: a temporary folder)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every run this many times, interleaved; medians are printed (default: 1)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default: 10)")
    parser.add_argument(
        "--busy-core", action="store_true", help="add a live run while another process keeps one core busy"
    )
    parser.add_argument(
        "--compare-threads",
        action="store_true",
        help="add file → file and live runs with ONNX Runtime's thread defaults (a "
        "spinning thread per core per session) instead of the CPU budget",
    )
    parser.add_argument("--skip-live", action="store_true", help="only the file → file runs")
    parser.add_argument("--skip-bundled", action="store_true", help="skip the bundled-models live run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


# --- the model calls, alone and two at once -------------------------------------------------
def measure_model_calls(files: Any, threads: int, spinning: bool, calls: int = 12) -> dict[str, float]:
    """ms per call of detector and swapper alone, then both in two threads at once (as the
    detect and swap stages run), with `threads` intra-op threads (0 = ORT's default)."""
    import numpy as np
    import onnxruntime as ort

    def session(path: Path) -> Any:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        spin = "1" if spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(0)
    work = {
        "detect": (session(files.detector), {"input.1": rng.random((1, 3, 640, 640), np.float32)}),
        "swap": (
            session(files.swapper),
            {"target": rng.random((1, 3, 128, 128), np.float32), "source": rng.random((1, 512), np.float32)},
        ),
    }
    out: dict[str, float] = {}

    def loop(name: str, n: int) -> None:
        sess, feed = work[name]
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t0)
        out[name] = round(statistics.median(times) * 1000, 1)

    for name, (sess, feed) in work.items():
        sess.run(None, feed)
        loop(name, calls)
        out[f"{name}_alone"] = out.pop(name)
    pair = [threading.Thread(target=loop, args=(name, calls * 2)) for name in work]
    for t in pair:
        t.start()
    for t in pair:
        t.join()
    out["detect_concurrent"], out["swap_concurrent"] = out.pop("detect"), out.pop("swap")
    return out


# --- one run: `streamswap run` in a child process ---------------------------------------------
def _config_yaml(files: Any, bundled: bool, overrides: dict[str, Any]) -> str:
    """The run's config: the synthetic models (or the bundled defaults) and `overrides`
    (dotted keys); only what differs from the defaults, so the defaults under test are the
    shipped ones."""
    import yaml

    from streamswap.typedconfig import set_path

    data: dict[str, Any] = {"pipeline": {"stats_window": 2000}}  # percentiles over the whole run
    if not bundled:
        data["faces"] = {
            "detector": {"model": str(files.detector), "contract": "scrfd"},
            "landmarker": {"model": None},
            "recognizer": {"model": str(files.recognizer), "contract": "arcface"},
            "swapper": {"model": str(files.swapper), "contract": "inswapper"},
        }
    for dotted, value in overrides.items():
        set_path(data, dotted, value)
    return yaml.safe_dump(data, sort_keys=False)


def run_once(
    files: Any,
    workdir: Path,
    name: str,
    *,
    live: bool,
    overrides: dict[str, Any],
    bundled: bool = False,
    busy_core: bool = False,
) -> dict[str, Any]:
    cfg = workdir / f"{name}.yaml"
    cfg.write_text(_config_yaml(files, bundled, overrides))
    out = workdir / f"{name}.mp4"
    source = files.real_face if bundled else files.source_face
    args = [
        sys.executable,
        "-m",
        "streamswap.bench.anchor",
        "--worker",
        str(cfg),
        str(files.clip),
        str(source),
        str(out),
        "live" if live else "file",
        json.dumps(overrides),
    ]  # overrides: for the report
    hog = None
    if busy_core:  # another process keeps one core busy for the whole run
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    load = _load()
    try:
        proc = subprocess.run(args, capture_output=True, text=True)
        stdout, stderr = proc.stdout, proc.stderr
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if proc.returncode != 0 or not stdout.strip():
        raise RuntimeError(f"anchor run {name} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(name=name, load_before=load, load_after=_load())
    result["output_mb"] = round(out.stat().st_size / 1e6, 2)
    return result


def _worker(cfg: str, clip: str, face: str, out: str, mode: str, overrides_json: str) -> None:
    """In the child: build exactly what `streamswap run` builds, run it, print one JSON line."""
    from streamswap.commands.run import build_stages
    from streamswap.config import load_config
    from streamswap.logs import setup_logging
    from streamswap.wiring import FACE_COMPUTE_STAGES, apply_cpu_budget, build_pipeline, plan_endpoints

    setup_logging("warning")
    overrides = {"source": [face], "input": clip, "outputs": [out], "io.existing_output": "overwrite"}
    config = apply_cpu_budget(load_config(cfg, overrides), FACE_COMPUTE_STAGES)
    live = mode == "live"
    endpoints = plan_endpoints(config, live=live)
    face_stages = build_stages(config)
    stages, gpu = (face_stages.stages, face_stages.gpu) if face_stages else ([], None)
    runtime = build_pipeline(config, stages, source=endpoints.source, sinks=endpoints.sinks, gpu=gpu)
    cpu0, t0 = time.process_time(), time.perf_counter()
    runtime.start()
    runtime.wait()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    snap = runtime.status()
    usage = resource.getrusage(resource.RUSAGE_SELF)  # the whole process: imports, model loading
    frames, audio = _probe(Path(out))
    n = max(snap["frames_out"], 1)
    print(
        json.dumps(
            {
                "mode": mode,
                "overrides": json.loads(overrides_json),
                "fps": round(snap["frames_out"] / wall, 2),
                "frames_in": snap["frames_in"],
                "frames_out": snap["frames_out"],
                "dropped": snap["dropped"],
                "cpu_ms_per_frame": round(cpu / n * 1000, 1),
                "wall_s": round(wall, 2),
                "latency_ms_p50": snap["latency_ms_p50"],
                "latency_ms_p95": snap["latency_ms_p95"],
                "stage_ms": snap["stage_ms"],
                "file_frames": frames,
                "file_audio_s": audio,
                "errors": sum(snap["errors"].values()),
                "budget": _budget_line(config),
                "process_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                "detect_every": snap.get("detect_every"),
                **_detect_every(stages),
            }
        )
    )


def _detect_every(stages: list[Any]) -> dict[str, Any]:
    from streamswap.faces.stages import DetectStage

    detect = [s for s in stages if isinstance(s, DetectStage)]
    return {"detector_calls": detect[0].detector_calls} if detect else {}


def _budget_line(config: Any) -> str:
    return (
        f"ort {config.inference.threads} thread(s), spinning "
        f"{'on' if config.inference.allow_spinning else 'off'}, encoder {config.io.encoder_threads}"
    )


def _probe(path: Path) -> tuple[int, float]:
    """(video frames, seconds of audio) in a written file."""
    import av

    with av.open(str(path)) as container:
        frames = sum(1 for p in container.demux(video=0) if p.size)
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return frames, 0.0
        stream = container.streams.audio[0]
        end = 0.0
        for p in container.demux(stream):
            if p.pts is not None and p.duration:
                end = max(end, float((p.pts + p.duration) * stream.time_base))
    return frames, round(end, 2)


# --- the whole benchmark ----------------------------------------------------------------------
def _plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = [
        dict(name="file-default", live=False, overrides={}),
        dict(name="file-dlc-medium-crf18", live=False, overrides=DLC_ENCODER),
    ]
    if not args.skip_live:
        runs += [
            dict(name="live-default", live=True, overrides={}),
            dict(name="live-dlc-medium-crf18", live=True, overrides=DLC_ENCODER),
        ]
        if not args.skip_bundled:
            runs.append(dict(name="live-bundled-default", live=True, overrides={}, bundled=True))
        if args.busy_core:
            runs.append(dict(name="live-default-busy-core", live=True, overrides={}, busy_core=True))
    if args.compare_threads:
        ort_default = {"inference.threads": os.cpu_count() or 1, "inference.allow_spinning": True}
        runs.append(dict(name="file-ort-default-threads", live=False, overrides=ort_default))
        if not args.skip_live:
            runs.append(dict(name="live-ort-default-threads", live=True, overrides=ort_default))
    return runs


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median FPS of its rounds (numbers of one real run, not mixed)."""
    ordered = sorted(results, key=lambda r: r["fps"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["fps_rounds"] = [r["fps"] for r in results]
    return chosen


def run(args: argparse.Namespace, ctx: Any) -> int:
    from streamswap.bench.anchor_media import make_anchor
    from streamswap.pipeline.cpu_budget import plan_cpu_budget, usable_cores
    from streamswap.wiring import FACE_COMPUTE_STAGES

    temp = None
    if args.workdir:
        workdir = Path(args.workdir).expanduser()
    else:
        temp = workdir = Path(tempfile.mkdtemp(prefix="streamswap-anchor-"))
    try:
        t0 = time.perf_counter()
        files = make_anchor(workdir, seconds=args.seconds)
        results: dict[str, Any] = {
            "cores": usable_cores(),
            "load_average_1min": _load(),
            "generate_s": round(time.perf_counter() - t0, 1),
            "workdir": str(workdir),
        }
        budget = plan_cpu_budget(usable_cores(), FACE_COMPUTE_STAGES)
        _say(
            args,
            f"machine: {results['cores']} usable cores, load average {results['load_average_1min']} "
            f"(other processes slow every number down); CPU budget: {budget.describe()}",
        )
        _say(args, f"generated the clip and models in {results['generate_s']} s → {workdir}")
        results["model_calls_budget"] = measure_model_calls(files, budget.intra_op_threads, budget.spinning)
        results["model_calls_ort_default"] = measure_model_calls(files, 0, True)
        for key, label in (
            ("model_calls_budget", f"budget ({budget.intra_op_threads} thread(s), no spinning)"),
            ("model_calls_ort_default", "ORT default (a spinning thread per core)"),
        ):
            m = results[key]
            _say(
                args,
                f"model ms/call, {label}: alone detect {m['detect_alone']} swap {m['swap_alone']}; "
                f"both at once detect {m['detect_concurrent']} swap {m['swap_concurrent']} "
                f"(load {_load()})",
            )
        plan = _plan(args)
        collected: dict[str, list[dict[str, Any]]] = {r["name"]: [] for r in plan}
        for _ in range(max(args.rounds, 1)):
            for spec in plan:
                spec = dict(spec)
                name = spec.pop("name")
                result = run_once(files, workdir, name, **spec)
                collected[name].append(result)
                if args.rounds > 1:
                    _say(args, f"  {name}: {result['fps']} fps (load {result['load_before']})")
        results["runs"] = [_median(v) for v in collected.values()]
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            for r in results["runs"]:
                print(_line(r, args.seconds))
            _verdicts(results["runs"], args.seconds)
            print(
                f"reproduce one run: streamswap run -c {workdir}/<run>.yaml -s {files.source_face} "
                f"-i {files.clip} -o out.mp4 -y [--live]   (files kept with --workdir)"
            )
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    return 0


def _say(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


def _line(r: dict[str, Any], seconds: float) -> str:
    stages = " ".join(f"{k} {v:.1f}" for k, v in r["stage_ms"].items() if k in ("detect", "swap", "output"))
    expected = int(round(seconds * 30))
    kept = (
        "all frames + audio kept"
        if (r["file_frames"] == r["frames_out"] == expected and r["file_audio_s"] >= seconds - 0.1)
        else f"{r['file_frames']} frames in the file, {r['file_audio_s']} s audio"
    )
    extra = f", detector ran {r['detector_calls']}×" if "detector_calls" in r else ""
    if r.get("detect_every") and r["mode"] == "live":
        extra += f" (N at the end {r['detect_every']})"
    return (
        f"{r['name']:24s} {r['fps']:5.1f} fps | CPU {r['cpu_ms_per_frame']:.0f} ms/frame | latency p50 "
        f"{r['latency_ms_p50']} p95 {r['latency_ms_p95']} ms | dropped {r['dropped']}/{r['frames_in']} | "
        f"{r['output_mb']} MB, {kept}{extra} | ms/frame: {stages} | peak {r.get('peak_rss_mb', '?')} MB | "
        f"load {r['load_before']}→{r['load_after']}"
    )


def _verdicts(runs: list[dict[str, Any]], seconds: float) -> None:
    """The issue's targets next to the numbers (the targets hold on an idle 2-core machine)."""
    by = {r["name"]: r for r in runs}
    checks = [
        (
            "file-default",
            lambda r: r["fps"] >= 28.5 and r["cpu_ms_per_frame"] <= 65,
            "≥ 28.5 fps (3× Deep-Live-Cam's 9.5), CPU ≤ 65 ms/frame",
        ),
        ("file-dlc-medium-crf18", lambda r: r["fps"] >= 24, "≥ 24 fps at Deep-Live-Cam's encoder settings (2.5×)"),
        (
            "live-default",
            lambda r: r["fps"] >= 28 and (r["latency_ms_p95"] or 1e9) <= 150 and r["dropped"] <= 0.05 * r["frames_in"],
            "≥ 28 fps out, p95 ≤ 150 ms, drops ≤ 5 %",
        ),
        (
            "live-default-busy-core",
            lambda r: r["fps"] >= 15 and (r["latency_ms_p95"] or 1e9) <= 250,
            "one core busy elsewhere: ≥ 15 fps out, p95 ≤ 250 ms",
        ),
        (
            "live-bundled-default",
            lambda r: r["fps"] >= 29 and (r["latency_ms_p95"] or 1e9) <= 120,
            "bundled default at 720p live: 30 fps out, p95 ≤ 120 ms",
        ),
    ]
    for name, ok, target in checks:
        if name in by:
            print(f"target {name}: {'met' if ok(by[name]) else 'NOT met'} ({target})")


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--worker":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _worker(*sys.argv[2:])
    else:
        sys.exit("internal: the worker of `streamswap bench anchor`")
