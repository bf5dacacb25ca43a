"""ONNX Runtime's CUDA/TensorRT provider on the GPU frame path: the `DeviceSession` calls
(device buffers at a maximum shape, enqueue, fetch) over I/O binding on our own buffers.

A session opened on the owning stage's stream (`user_compute_stream`) gets, the first time a
device stage asks (when the stage is built, never per frame): one device buffer per input
and output at its maximum shape, allocated through the process's GPU context, pinned
staging for the outputs, one `IOBinding` and one `RunOptions`, all reused for every run. A
dynamic leading input dimension is the batch, 1..`max_batch` (inference.max_batch, as for
TensorRT's optimisation profiles); any other dynamic dimension takes `size` (a detector's
input side). Two warm-up runs at load, at batch 1 and at the maximum, tell how each output's
shape follows the batch (fixed, or `n` times its batch-1 size) and grow ONNX Runtime's own
memory arena to its peak (its TensorRT provider already has the batch range as explicit
profiles, `ort._trt_profile_options`); after that a run binds views of the same buffers and
allocates nothing.

What ONNX Runtime synchronises, and what we do about it (ORT >= 1.14; microsoft/onnxruntime
PR #14088, issues #12216 and #28539):
- By default `run_with_iobinding` returns only after a cudaStreamSynchronize on its compute
  stream (the providers' OnRunEnd, and the run's stream collection clean-up). Every run here
  passes the run option `disable_synchronize_execution_providers=1`, which turns both off:
  the call returns once the kernels are queued on the stage's stream, and the host waits
  only for the small outputs `fetch` copies, on one event.
- `IOBinding.synchronize_inputs/outputs` wait for ORT's own cross-device copies (a device-
  wide wait on the CUDA provider). Our inputs are already on the device, written by kernels
  on the very stream ORT computes on, so ordering is the stream's; they are never called.
- Nodes ONNX Runtime places on the CPU (no CUDA kernel for an operator, some shape
  arithmetic) get Memcpy nodes: ORT copies to the host and waits mid-graph. Nothing outside
  the model can prevent that; ORT names them in its log ("Memcpy nodes are added") at
  warning level.
- The compute stream is fixed when the session is created: `enqueue`/`fetch` refuse another
  stream rather than race it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from streamswap.errors import BackendUnavailable, DeviceError, ModelError
from streamswap.inference.base import TensorInfo
from streamswap.inference.cuda import Cuda, DeviceArray, DeviceBuffer, PendingRun, PinnedBuffer, Stream, _handle
from streamswap.logs import kv

log = logging.getLogger(__name__)

# The run option that stops ONNX Runtime from waiting for its compute stream after a run.
NO_SYNC = "disable_synchronize_execution_providers"


@dataclass
class _Buffer:
    """One input or output: device memory at its maximum shape (+ pinned staging for outputs)."""

    info: TensorInfo
    max_shape: tuple[int, ...]
    device: DeviceBuffer
    host: PinnedBuffer | None = None


class OrtDeviceIO:
    """The device buffers, binding and run options of one ONNX Runtime session on the GPU
    (see the module doc); made by `OrtSession` the first time a device stage asks."""

    def __init__(
        self,
        ort: Any,
        session: Any,
        path: Path,
        inputs: Sequence[TensorInfo],
        outputs: Sequence[TensorInfo],
        *,
        cuda: Cuda,
        stream: Stream,
        device_id: int,
        max_batch: int,
        size: int | None,
        device_type: str = "cuda",
    ) -> None:
        from streamswap.inference.engine_cache import profile_from_inputs

        self._session = session
        self._path = path
        self._cuda = cuda
        self.stream = stream
        self._device_id = device_id
        self._device_type = device_type
        self.max_batch = max_batch
        try:
            profile = profile_from_inputs([(i.name, list(i.shape)) for i in inputs], max_batch, size)
        except BackendUnavailable as exc:
            raise ModelError(f"{path.name}: the GPU frame path sizes its buffers when it loads, but {exc}") from None
        self._low = {p.name: tuple(p.min) for p in profile}
        self._inputs: dict[str, _Buffer] = {}
        for info, p in zip(inputs, profile):
            self._inputs[info.name] = _Buffer(info, tuple(p.max), cuda.device_buffer(_nbytes(p.max, info.dtype)))
        self._batched = [name for name, low in self._low.items() if low and low[0] != self._inputs[name].max_shape[0]]
        self._binding = session.io_binding()  # one binding object for the life of the session
        self._run_options = ort.RunOptions()
        self._run_options.add_run_config_entry(NO_SYNC, "1")
        self._bound: dict[str, tuple[int, ...]] = {}  # what the binding holds now, by name
        self._output_names = [o.name for o in outputs]
        highest = self._warm_up({name: b.max_shape for name, b in self._inputs.items()})
        lowest = highest if not self._batched else self._warm_up(self._low)
        self._outputs: dict[str, _Buffer] = {}
        self._per_item: dict[str, tuple[int | None, ...]] = {}  # batch-1 size of dims that follow the batch
        for info in outputs:
            self._per_item[info.name] = self._follows_batch(info.name, lowest[info.name], highest[info.name])
            nbytes = _nbytes(highest[info.name], info.dtype)
            self._outputs[info.name] = _Buffer(
                info, highest[info.name], cuda.device_buffer(nbytes), cuda.pinned_buffer(nbytes)
            )
        self._current = {name: b.max_shape for name, b in self._outputs.items()}
        self._event = cuda.event()
        self._in_flight = False
        log.info(
            "ONNX Runtime device I/O ready",
            extra=kv(model=path.name, max_batch=max_batch if self._batched else 1, stream=stream.handle),
        )

    # -- load time --------------------------------------------------------------------------
    def _warm_up(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """One run at these input shapes, outputs placed by ONNX Runtime (at load only):
        their shapes, and ORT's arena/engines ready for this size."""
        for name, shape in shapes.items():
            self._bind_input(name, shape)
        names = self._output_names
        for name in names:
            self._binding.bind_output(name, self._device_type, self._device_id)
        try:
            self._session.run_with_iobinding(self._binding)  # waits: it is load time
        except Exception as exc:
            raise ModelError(
                f"{self._path.name}: ONNX Runtime cannot run this model on its device buffers at input "
                f"shapes {dict(shapes)} ({_first_line(exc)}); lower inference.max_batch or use the host path "
                "(inference.provider: cpu)"
            ) from None
        found = {name: tuple(int(d) for d in value.shape()) for name, value in zip(names, self._binding.get_outputs())}
        self._binding.clear_binding_outputs()
        for name in names:
            self._bound.pop(name, None)
        return found

    def _follows_batch(self, name: str, low: tuple[int, ...], high: tuple[int, ...]) -> tuple[int | None, ...]:
        """Per dim: None when fixed, else its size at batch 1 (the dim is n × that)."""
        if len(low) != len(high):
            raise ModelError(f"{self._path.name}: output {name!r} changes rank with the batch ({low} → {high})")
        per_item: list[int | None] = []
        for a, b in zip(low, high):
            if a == b:
                per_item.append(None)
            elif b == a * self.max_batch:
                per_item.append(a)
            else:
                raise ModelError(
                    f"{self._path.name}: output {name!r} does not follow the batch ({low} at 1, {high} at "
                    f"{self.max_batch}): the GPU frame path needs output shapes known before a run"
                )
        return tuple(per_item)

    # -- DeviceSession ------------------------------------------------------------------------
    def max_shape(self, name: str) -> tuple[int, ...]:
        return self._buffer(name).max_shape

    def device_input(self, name: str) -> DeviceArray:
        buffer = self._inputs.get(name)
        if buffer is None:
            raise KeyError(f"{self._path.name} has no input {name!r}")
        return buffer.device.array(buffer.max_shape, buffer.info.dtype)

    def device_output(self, name: str, shape: Sequence[int] | None = None) -> DeviceArray:
        buffer = self._outputs.get(name)
        if buffer is None:
            raise KeyError(f"{self._path.name} has no output {name!r}")
        return buffer.device.array(self._current[name] if shape is None else tuple(shape), buffer.info.dtype)

    def enqueue(self, shapes: Mapping[str, Sequence[int]], stream: Stream | int | None = None) -> None:
        """Bind the inputs at `shapes` (views of their buffers) and the outputs at the shapes
        that follow, rebinding only what changed, and queue the run on the session's stream."""
        self._check_stream(stream)
        for name, shape in shapes.items():
            self._bind_input(name, tuple(int(d) for d in shape))
        batch = self._batch()
        for name, buffer in self._outputs.items():
            shape = tuple(d if n is None else n * batch for d, n in zip(buffer.max_shape, self._per_item[name]))
            self._current[name] = shape
            if self._bound.get(name) != shape:
                self._binding.bind_output(
                    name, self._device_type, self._device_id, buffer.info.dtype, list(shape), buffer.device.ptr
                )
                self._bound[name] = shape
        try:
            self._session.run_with_iobinding(self._binding, self._run_options)
        except Exception as exc:
            raise DeviceError(f"{self._path.name}: ONNX Runtime run failed ({_first_line(exc)})") from None

    def fetch(self, stream: Stream | int | None = None) -> PendingRun:
        """Queue copies of the last run's outputs into pinned memory and an event, on the
        session's stream; `result()` waits for that event only."""
        self._check_stream(stream)
        if self._in_flight:
            raise RuntimeError(f"{self._path.name}: a fetch is already in flight; take its result() first")
        outputs: dict[str, np.ndarray] = {}
        for name, buffer in self._outputs.items():
            assert buffer.host is not None
            outputs[name] = host = buffer.host.array(self._current[name], buffer.info.dtype)
            self._cuda.copy_dtoh_async(host, buffer.device, self.stream)
        self._event.record(self.stream)
        self._in_flight = True
        return PendingRun(self._event, outputs, self._finish)

    def close(self) -> None:
        for buffer in [*self._inputs.values(), *self._outputs.values()]:
            buffer.device.free()
            if buffer.host is not None:
                buffer.host.free()
        self._event.close()

    # -- helpers ------------------------------------------------------------------------------
    def _finish(self) -> None:
        self._in_flight = False

    def _buffer(self, name: str) -> _Buffer:
        buffer = self._inputs.get(name) or self._outputs.get(name)
        if buffer is None:
            raise KeyError(f"{self._path.name} has no tensor {name!r}")
        return buffer

    def _bind_input(self, name: str, shape: tuple[int, ...]) -> None:
        buffer = self._inputs.get(name)
        if buffer is None:
            raise ModelError(f"{self._path.name}: the model has no input {name!r}")
        low, high = self._low[name], buffer.max_shape
        if len(shape) != len(high) or not all(a <= s <= b for a, s, b in zip(low, shape, high)):
            raise ModelError(
                f"{self._path.name}: input {name!r} shape {shape} is outside what its device buffer "
                f"holds ({low} to {high}); raise inference.max_batch"
            )
        if self._bound.get(name) != shape:
            self._binding.bind_input(
                name, self._device_type, self._device_id, buffer.info.dtype, list(shape), buffer.device.ptr
            )
            self._bound[name] = shape

    def _batch(self) -> int:
        """The batch of the bound inputs (every batched input must agree)."""
        sizes = {self._bound[name][0] for name in self._batched}
        if len(sizes) > 1:
            raise ModelError(f"{self._path.name}: inputs bound with different batch sizes {sorted(sizes)}")
        return sizes.pop() if sizes else 1

    def _check_stream(self, stream: Stream | int | None) -> None:
        if stream is not None and _handle(stream) != self.stream.handle:
            raise ValueError(
                f"{self._path.name}: ONNX Runtime computes on the stream its session was opened with "
                f"({self.stream.handle}, user_compute_stream), not on {_handle(stream)}"
            )


def _nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
