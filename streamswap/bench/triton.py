"""`streamswap bench triton`: many daemons, one Triton server.

N `streamswap run` processes (one per "camera", each reading the same clip and writing to
null://) run the config's models on one Triton server at the same time. Reported: each
stream's frames/s and glass-to-glass latency p50/p95 (from its own statistics), and the
server's own statistics per model over the run: inferences (batch items) ÷ executions =
the mean batch the server formed from the streams' requests, and its queue and compute
time per execution.

`--roundtrip N` also times N single calls of each model from this process, over gRPC,
gRPC + system shared memory (server on this host) and HTTP: client time minus the
server's own time per call is what the transport costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from streamswap.errors import BackendUnavailable, InputError

HELP = "N `run` processes against one Triton server: per-stream fps, latency, the server's batching"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--streams",
        type=int,
        default=4,
        metavar="N",
        help="concurrent run processes (default: 4; 0 with --roundtrip: only time calls)",
    )
    parser.add_argument("--url", help="the server, host:port (default: inference.triton.url)")
    parser.add_argument("--protocol", choices=("grpc", "http"), help="default: inference.triton.protocol")
    parser.add_argument(
        "--input", metavar="URI", help="what every stream reads (default: a moving group photo, --size at --fps)"
    )
    parser.add_argument("--frames", type=int, default=150, help="frames of the default input (default: 150)")
    parser.add_argument("--fps", type=int, default=30, help="frame rate of the default input (default: 30)")
    parser.add_argument("--size", default="640x480", help="size of the default input (default: 640x480)")
    parser.add_argument("-s", "--source", metavar="FACE", help="face photo (default: scikit-image's astronaut)")
    parser.add_argument(
        "--live",
        action="store_true",
        help="pace each stream at the input's frame rate, like cameras (default: as fast as the server answers)",
    )
    parser.add_argument(
        "--roundtrip",
        type=int,
        default=0,
        metavar="N",
        help="also time N single calls per model and transport (default: 0, skip)",
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        dest="roundtrip_models",
        help="a server model to time with --roundtrip (repeatable; default: the config's)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace, ctx: Any) -> int:
    from streamswap.config import dump_config
    from streamswap.inference.triton import TritonConnection, model_not_ready

    if args.streams < 0 or args.frames < 1 or args.fps < 1 or args.roundtrip < 0:
        raise InputError("--frames and --fps must be 1 or more, --streams and --roundtrip 0 or more")
    if args.streams == 0 and not args.roundtrip:
        raise InputError("--streams 0 runs no stream: give --roundtrip N to time single calls")
    overrides: dict[str, Any] = {"inference.backend": "triton"}
    if args.url:
        overrides["inference.triton.url"] = args.url
    if args.protocol:
        overrides["inference.triton.protocol"] = args.protocol
    config = ctx.config(**overrides)
    settings = config.inference.triton
    conn = TritonConnection(settings)
    models = served_models(config)
    timed = {name: name for name in args.roundtrip_models} if args.roundtrip_models else models
    for role, name in {**models, **timed}.items():
        why = model_not_ready(conn, name)
        if why is not None:
            raise BackendUnavailable(f"{role}: {why}")
    source = args.input or _default_input(args)

    results: dict[str, Any] = {
        "url": conn.where,
        "streams": args.streams,
        "input": source,
        "live": args.live,
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="streamswap-bench-triton-") as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(dump_config(config))
        if args.streams == 0:
            results["roundtrip"] = roundtrip(config, timed, args.roundtrip)
            _report(results, args.json)
            return 0
        face = Path(args.source) if args.source else _default_face()
        before = {name: _stats(conn, name) for name in models.values()}
        t0 = time.monotonic()
        procs = []
        for i in range(args.streams):
            cmd = [
                sys.executable,
                "-m",
                "streamswap",
                "-c",
                str(cfg),
                "run",
                "-s",
                str(face),
                "-i",
                source,
                "-o",
                "null://",
                "--quiet",
                "--stats-json",
                str(Path(tmp) / f"stream{i}.json"),
            ]
            cmd.append("--live" if args.live else "--no-live")  # test:// is live by default
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        print(f"bench triton: {args.streams} stream(s) against {conn.where}…", file=sys.stderr)
        streams = []
        for i, proc in enumerate(procs):
            _, err = proc.communicate()
            path = Path(tmp) / f"stream{i}.json"
            if proc.returncode != 0 or not path.exists():
                raise BackendUnavailable(f"stream {i} failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
            snap = json.loads(path.read_text())
            streams.append(
                {
                    "frames_out": snap["frames_out"],
                    "dropped": snap["dropped"],
                    "errors": sum(snap["errors"].values()),
                    "fps": round(snap["frames_out"] / max(snap["uptime_s"], 1e-3), 2),
                    "latency_ms_p50": snap["latency_ms_p50"],
                    "latency_ms_p95": snap["latency_ms_p95"],
                }
            )
        results["wall_s"] = round(time.monotonic() - t0, 2)
        after = {name: _stats(conn, name) for name in models.values()}
    results["per_stream"] = streams
    results["total_fps"] = round(sum(s["fps"] for s in streams), 2)
    results["server"] = {role: _delta(before[name], after[name]) | {"model": name} for role, name in models.items()}
    if args.roundtrip:
        results["roundtrip"] = roundtrip(config, timed, args.roundtrip)
    _report(results, args.json)
    return 0


def _report(results: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        _print(results)


def served_models(config: Any) -> dict[str, str]:
    """role → the server's model name, for the models the config's face stages load."""
    from streamswap.inference.triton import triton_model_name
    from streamswap.models.store import role_models

    out = {}
    for used in role_models(config.faces):
        ref = config.inference.triton.models.get(used.role)
        out[used.role] = (ref.name if ref and ref.name else "") or triton_model_name(Path(used.file_name))
    return out


def _default_face() -> Path:
    from streamswap.commands.demo import demo_photos

    return demo_photos()[1]


def _default_input(args: argparse.Namespace) -> str:
    from streamswap.commands.demo import demo_photos

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    return (
        f"test://photo?path={quote(str(demo_photos()[0]))}&width={width}&height={height}"
        f"&fps={args.fps}&frames={args.frames}"
    )


def _stats(conn: Any, model: str) -> dict[str, int]:
    stats = conn.statistics(model)["model_stats"]
    total = {"inferences": 0, "executions": 0, "queue_ns": 0, "compute_ns": 0, "requests": 0}
    for s in stats:
        inf = s.get("inference_stats", {})
        total["inferences"] += int(s.get("inference_count", 0))
        total["executions"] += int(s.get("execution_count", 0))
        total["requests"] += int(inf.get("success", {}).get("count", 0))
        total["queue_ns"] += int(inf.get("queue", {}).get("ns", 0))
        total["compute_ns"] += sum(
            int(inf.get(k, {}).get("ns", 0)) for k in ("compute_input", "compute_infer", "compute_output")
        )
    return total


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    d = {k: after[k] - before[k] for k in before}
    executions, requests = max(d["executions"], 1), max(d["requests"], 1)
    return {
        "inferences": d["inferences"],
        "executions": d["executions"],
        "requests": d["requests"],
        "mean_batch": round(d["inferences"] / executions, 2) if d["executions"] else None,
        # > 1: the server merged requests (of different streams) into one execution
        "requests_per_execution": round(d["requests"] / executions, 2) if d["executions"] else None,
        "queue_ms_per_request": round(d["queue_ns"] / requests / 1e6, 2),
        "compute_ms_per_request": round(d["compute_ns"] / requests / 1e6, 2),
    }


def roundtrip(config: Any, models: dict[str, str], calls: int) -> dict[str, Any]:
    """Per model and transport: client ms per call, server ms per call, the difference."""
    from streamswap.inference.triton import TritonConnection, is_local_url, open_triton_session

    base = replace(config.inference.triton, wait_ready_s=0.0)
    transports = {
        "grpc": replace(base, protocol="grpc", shared_memory="off"),
        "grpc+shm": replace(base, protocol="grpc", shared_memory="on"),
    }
    out: dict[str, Any] = {}
    for role, name in models.items():
        rows: dict[str, dict[str, Any]] = {}
        for label, settings in transports.items():
            if label == "grpc+shm" and not is_local_url(settings.url):
                continue
            conn = TritonConnection(settings)
            try:
                session = open_triton_session(Path(name), settings, conn=conn, name=name)
            except BackendUnavailable as exc:
                rows[label] = {"error": str(exc)}
                continue
            rng = np.random.default_rng(0)
            feeds = {
                i.name: rng.random([1 if not isinstance(d, int) else d for d in i.shape]).astype(i.dtype)
                for i in session.inputs
            }
            session.run(feeds)  # warm-up
            before = _stats(conn, name)
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                session.run(feeds)
                times.append(time.perf_counter() - t)
            d = _delta(before, _stats(conn, name))
            client = statistics.mean(times) * 1000
            server = d["queue_ms_per_request"] + d["compute_ms_per_request"]
            rows[label] = {
                "input_bytes": int(sum(v.nbytes for v in feeds.values())),
                "client_ms": round(client, 3),
                "server_ms": round(server, 3),
                "overhead_ms": round(client - server, 3),
            }
            session.close()
        out[role] = {"model": name, **rows}
    return out


def _print(r: dict[str, Any]) -> None:
    if not r.get("per_stream"):
        _print_roundtrip(r)
        return
    print(
        f"{r['streams']} stream(s) through the Triton server at {r['url']}, input {r['input'][:60]}{'…' if len(r['input']) > 60 else ''}"
        f"{' (paced, live)' if r['live'] else ' (as fast as possible)'}"
    )
    print(f"{'stream':>6} {'frames':>7} {'fps':>7} {'p50 ms':>8} {'p95 ms':>8} {'dropped':>8} {'errors':>7}")
    for i, s in enumerate(r["per_stream"]):
        print(
            f"{i:>6} {s['frames_out']:>7} {s['fps']:>7.1f} {s['latency_ms_p50'] or 0:>8.1f} "
            f"{s['latency_ms_p95'] or 0:>8.1f} {s['dropped']:>8} {s['errors']:>7}"
        )
    print(f"all streams: {r['total_fps']:.1f} frames/s in {r['wall_s']} s")
    print("server statistics over the run (inferences ÷ executions = mean batch the server formed):")
    print(
        f"{'role':>20} {'model':>24} {'inferences':>10} {'executions':>10} {'mean batch':>10} "
        f"{'requests/exec':>13} {'queue ms':>9} {'compute ms':>10}"
    )
    for role, s in r["server"].items():
        if not s["executions"]:  # not called during the run (e.g. the identity was cached)
            print(f"{role:>20} {s['model'][:24]:>24} {0:>10} {0:>10} {'–':>10} {'–':>13} {'–':>9} {'–':>10}")
            continue
        print(
            f"{role:>20} {s['model'][:24]:>24} {s['inferences']:>10} {s['executions']:>10} "
            f"{s['mean_batch']:>10.2f} {s['requests_per_execution']:>13.2f} "
            f"{s['queue_ms_per_request']:>9.2f} {s['compute_ms_per_request']:>10.2f}"
        )
    _print_roundtrip(r)


def _print_roundtrip(r: dict[str, Any]) -> None:
    for role, rows in r.get("roundtrip", {}).items():
        for label, row in rows.items():
            if label == "model":
                continue
            if "error" in row:
                print(f"round trip {role} over {label}: {row['error']}")
                continue
            print(
                f"round trip {role} ({rows['model']}, {row['input_bytes']} B in) over {label}: "
                f"{row['client_ms']:.2f} ms per call, server {row['server_ms']:.2f} ms, "
                f"transport {row['overhead_ms']:.2f} ms"
            )
    print(f"machine: {r['cpus']} CPUs, load average {r['load_average_1min']} (before the run)")
