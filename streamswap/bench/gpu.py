"""`streamswap bench gpu`: the GPU frame path measured on the device.

Two stage threads as in the pipeline — detect on the "detect" stream, swap on the "swap"
stream — run the device frame path at 1080p: one upload of the pinned slot, letterbox into
the detector input, the detector, crop warp + normalise, the generator, crops back,
paste-back, one download. The networks are stand-in kernels of a fixed cost (TensorRT
engines are measured by `bench engines`); everything around them is the product's code.

Printed: per-stage device time from CUDA events, host CPU ms per frame (the process's CPU
time ÷ frames), bytes copied host→device and device→host per frame, and whether the two
streams overlap (the share of each swap interval during which the next frame's detect
was also running, from event timestamps).
"""

from __future__ import annotations

import argparse
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HELP = "the GPU frame path: device time per stage, host CPU per frame, bytes copied, stream overlap"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=200, help="frames to run (default 200)")
    parser.add_argument("--size", default="1920x1080", help="frame size WxH (default 1920x1080)")
    parser.add_argument("--faces", type=int, default=1, help="faces per frame (default 1)")
    parser.add_argument(
        "--network-ms", type=float, default=3.0, help="device time of each stand-in network (default 3 ms)"
    )


@dataclass
class StageTimes:
    """Start/end events of one stage per frame (timing events), read after the run."""

    starts: list[Any] = field(default_factory=list)
    ends: list[Any] = field(default_factory=list)


@dataclass
class GpuFrameReport:
    frames: int
    detect_ms: float
    swap_ms: float
    host_cpu_ms: float
    h2d_bytes: float
    d2h_bytes: float
    overlap: float  # share of swap time during which a detect also ran
    wall_s: float


def run_frame_path(
    cuda: Any,
    *,
    frames: int,
    width: int,
    height: int,
    faces: int = 1,
    iterations: int = 2000,
    detector_size: int = 640,
    crop: int = 128,
) -> GpuFrameReport:
    """Run the device frame path on `cuda` (a `streamswap.inference.cuda.Cuda`)."""
    from streamswap.faces.align import invert_affine, source_roi
    from streamswap.faces.device import DeviceFrames
    from streamswap.faces.paste import box_mask
    from streamswap.inference.cuda import GpuContext
    from streamswap.ops import cuda as ops

    gpu = GpuContext(cuda)
    detect_stream, swap_stream = gpu.stream("detect"), gpu.stream("swap")
    device_frames = DeviceFrames(cuda)
    slots = [device_frames.alloc((height, width, 3), np.uint8) for _ in range(4)]
    source = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    det_in = cuda.device_buffer(3 * detector_size**2 * 4).array((1, 3, detector_size, detector_size), np.float32)
    det_out_dev = cuda.device_buffer(4096)
    det_out_host = cuda.pinned_buffer(4096).array((1024,), np.float32)
    crops = cuda.device_buffer(faces * crop * crop * 3).array((faces, crop, crop, 3), np.uint8)
    tensor = cuda.device_buffer(faces * 3 * crop * crop * 4).array((faces, 3, crop, crop), np.float32)
    mask_host = box_mask(crop, 0.3, 0.0)
    mask = cuda.device_buffer(mask_host.nbytes).array(mask_host.shape, np.float32)
    mask_pinned = cuda.pinned_buffer(mask_host.nbytes).array(mask_host.shape, np.float32)
    mask_pinned[...] = mask_host
    cuda.copy_htod_async(mask.ptr, mask_pinned, swap_stream)
    params = ops.CropParams(faces)
    from streamswap.bench.gpu_kernels import spin

    side = min(width, height) / 4
    matrices = []
    for i in range(faces):
        scale = crop / side
        tx = -(width * (i + 1) / (faces + 1) - side / 2) * scale
        matrices.append(np.array([[scale, 0.0, tx], [0.0, scale, -(height / 2 - side / 2) * scale]]))
    inverses = [invert_affine(m) for m in matrices]
    boxes = [source_roi(inv, crop, crop, (height, width)) for inv in inverses]
    paste_boxes = [source_roi(inv, crop, crop, (height, width), margin=1) for inv in inverses]
    det_flat = ops.as_device(det_in.view((3 * detector_size**2,)))
    gen_flat = ops.as_device(tensor.view((faces * 3 * crop * crop,)))
    times = {"detect": StageTimes(), "swap": StageTimes()}
    handoff: queue.Queue = queue.Queue(maxsize=2)
    free: queue.Queue = queue.Queue()
    for slot in range(len(slots)):
        free.put(slot)

    def launch(flat: Any, stream: Any) -> None:
        with ops._host.launch:  # turns are taken only under the simulator
            spin[math.ceil(flat.shape[0] / 256), 256, ops.as_stream(stream)](flat, iterations)

    errors: list[BaseException] = []

    def detect_loop() -> None:
        try:
            gpu.bind_thread()
            for _ in range(frames):
                if errors:
                    break
                slot = free.get()
                detect_one(slot)
        except BaseException as exc:  # reported by run_frame_path after both threads end
            errors.append(exc)
        finally:
            handoff.put(None)

    def detect_one(slot: int) -> None:
        np.copyto(slots[slot], source)  # the decoder's write into the pinned slot
        start, end = cuda.event(timing=True), cuda.event(timing=True)
        start.record(detect_stream)
        frame = device_frames.upload(slots[slot], detect_stream)
        ops.letterbox(frame.array, det_in, 127.5, 1 / 128, True, stream=detect_stream)
        launch(det_flat, detect_stream)
        cuda.copy_dtoh_async(det_out_host, det_out_dev, detect_stream)  # raw detections
        end.record(detect_stream)
        end.synchronize()  # the host decodes the detections
        times["detect"].starts.append(start)
        times["detect"].ends.append(end)
        handoff.put(slot)

    def swap_loop() -> None:
        try:
            gpu.bind_thread()
        except BaseException as exc:
            errors.append(exc)
        while (slot := handoff.get()) is not None:
            if not errors:
                try:
                    swap_one(slot)
                except BaseException as exc:
                    errors.append(exc)
            free.put(slot)

    def swap_one(slot: int) -> None:
        start, end = cuda.event(timing=True), cuda.event(timing=True)
        frame = device_frames.frame(slots[slot], swap_stream)
        start.record(swap_stream)
        ops.warp_crops(frame.array, inverses, boxes, crops, stream=swap_stream, params=params)
        ops.crops_to_tensor(
            crops, tensor, np.full(3, 1 / 127.5, np.float32), np.full(3, -1.0, np.float32), True, stream=swap_stream
        )
        launch(gen_flat, swap_stream)
        ops.tensor_to_crops(tensor, crops, 0.5, 0.5, True, stream=swap_stream)
        for i, matrix in enumerate(matrices):
            ops.paste(frame.array, crops[i], mask, matrix, paste_boxes[i], stream=swap_stream)
        end.record(swap_stream)
        device_frames.download(slots[slot], swap_stream)
        times["swap"].starts.append(start)
        times["swap"].ends.append(end)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    threads = [
        threading.Thread(target=detect_loop, name="bench-detect"),
        threading.Thread(target=swap_loop, name="bench-swap"),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if errors:
        raise errors[0]
    base = times["detect"].starts[0]
    intervals = {
        name: [(s.elapsed_ms(base), e.elapsed_ms(base)) for s, e in zip(t.starts, t.ends)] for name, t in times.items()
    }
    report = GpuFrameReport(
        frames=frames,
        detect_ms=float(np.median([e - s for s, e in intervals["detect"]])),
        swap_ms=float(np.median([e - s for s, e in intervals["swap"]])),
        host_cpu_ms=1000.0 * cpu / frames,
        h2d_bytes=device_frames.bytes_up / frames,
        d2h_bytes=device_frames.bytes_down / frames,
        overlap=_overlap(intervals["swap"], intervals["detect"]),
        wall_s=wall,
    )
    device_frames.close()
    gpu.close()
    return report


def _overlap(swaps: list[tuple[float, float]], detects: list[tuple[float, float]]) -> float:
    """Share of the total swap time during which some detect interval was also running."""
    total = sum(e - s for s, e in swaps)
    if total <= 0:
        return 0.0
    shared = 0.0
    for s0, s1 in swaps:
        for d0, d1 in detects:
            shared += max(0.0, min(s1, d1) - max(s0, d0))
    return min(1.0, shared / total)


def _iterations_for(cuda: Any, network_ms: float) -> int:
    """Calibrate the stand-in network to about `network_ms` of device time."""
    from streamswap.ops import cuda as ops

    buf = cuda.device_buffer(3 * 640 * 640 * 4).array((3 * 640 * 640,), np.float32)
    flat = ops.as_device(buf)
    from streamswap.bench.gpu_kernels import spin

    stream = cuda.stream()
    start, end = cuda.event(timing=True), cuda.event(timing=True)
    iterations = 200
    spin[math.ceil(flat.shape[0] / 256), 256, ops.as_stream(stream)](flat, iterations)  # compile
    start.record(stream)
    spin[math.ceil(flat.shape[0] / 256), 256, ops.as_stream(stream)](flat, iterations)
    end.record(stream)
    end.synchronize()
    per = max(end.elapsed_ms(start), 1e-3) / iterations
    return max(1, int(network_ms / per))


def run(args: argparse.Namespace, ctx: Any) -> int:
    from streamswap.errors import ConfigError
    from streamswap.inference.cuda import open_cuda

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size: expected WxH (e.g. 1920x1080), got {args.size!r}") from None
    cuda = open_cuda(0)  # BackendUnavailable: one line saying what is missing
    iterations = _iterations_for(cuda, args.network_ms)
    report = run_frame_path(
        cuda, frames=args.frames, width=width, height=height, faces=args.faces, iterations=iterations
    )
    name = cuda.info().name
    print(
        f"GPU frame path on {name}, {width}x{height}, {args.faces} face(s), {report.frames} frames, "
        f"stand-in networks of ~{args.network_ms:g} ms each"
    )
    print(f"  device time per frame: detect {report.detect_ms:.2f} ms, swap {report.swap_ms:.2f} ms (events)")
    print(f"  host CPU per frame: {report.host_cpu_ms:.2f} ms (target ≤ 6 ms at 1080p, one face)")
    frame_bytes = width * height * 3
    print(
        f"  copied per frame: host→device {report.h2d_bytes / 1e6:.2f} MB ({report.h2d_bytes / frame_bytes:.2f} "
        f"frames), device→host {report.d2h_bytes / 1e6:.2f} MB ({report.d2h_bytes / frame_bytes:.2f} frames)"
    )
    print(
        f"  streams overlap: {100 * report.overlap:.0f}% of swap time had a detect running "
        f"({'overlapping' if report.overlap > 0.2 else 'NOT overlapping'})"
    )
    print(f"  throughput: {report.frames / report.wall_s:.1f} fps")
    return 0
