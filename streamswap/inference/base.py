"""The one small interface every inference backend implements. Knows nothing about faces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence, TypeGuard, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from streamswap.inference.cuda import DeviceArray, Stream

# A dimension is a fixed size, or a symbolic/unknown one (str name or None).
Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and element type of one model input or output."""

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype

    @property
    def fixed_shape(self) -> tuple[int, ...] | None:
        """The shape when every dimension is a fixed size; None when one is symbolic or unknown."""
        fixed = tuple(d for d in self.shape if isinstance(d, int) and d >= 0)
        return fixed if len(fixed) == len(self.shape) else None

    @property
    def is_dynamic(self) -> bool:
        return self.fixed_shape is None


@runtime_checkable
class Session(Protocol):
    """A loaded model: named inputs in, named outputs out."""

    @property
    def inputs(self) -> Sequence[TensorInfo]: ...

    @property
    def outputs(self) -> Sequence[TensorInfo]: ...

    @property
    def backend(self) -> str:
        """What actually runs it, e.g. 'ort:CPUExecutionProvider' or 'tensorrt'."""
        ...

    def run(self, feeds: Mapping[str, np.ndarray], stream: int | None = None) -> dict[str, np.ndarray]:
        """Run once. `stream` is a CUDA stream handle for GPU backends; CPU backends ignore it."""
        ...


@runtime_checkable
class LoadedFromFile(Protocol):
    """A session that knows the file it was loaded from (ONNX Runtime's model, TensorRT's
    engine); a remote one (Triton) does not."""

    @property
    def path(self) -> Path: ...


def model_file(session: Session) -> Path | None:
    """The file `session` was loaded from, for messages; None where the backend has none."""
    return session.path if isinstance(session, LoadedFromFile) else None


class PendingOutputs(Protocol):
    """Outputs on their way to the host: `result()` waits for this run only."""

    def done(self) -> bool: ...

    def result(self) -> dict[str, np.ndarray]: ...


@runtime_checkable
class DeviceSession(Session, Protocol):
    """A session that also runs on device buffers of its own: the GPU frame path's stages
    write its inputs with their kernels and read its outputs on the device, on the stage's
    stream, and only small outputs come to the host (`fetch`). Implemented by our TensorRT
    engines (`TrtSession`) and by ONNX Runtime on its CUDA/TensorRT provider (`OrtSession`,
    I/O binding on these buffers). Buffers are allocated once, at `max_shape`; running any
    smaller shape allocates nothing."""

    @property
    def device_io(self) -> bool:
        """Whether the device-buffer calls below work here (a GPU session on the process's
        GPU context); False for e.g. ONNX Runtime on the CPU."""
        ...

    def max_shape(self, name: str) -> tuple[int, ...]:
        """The largest shape of tensor `name` (its device buffer's size)."""
        ...

    def device_input(self, name: str) -> DeviceArray:
        """Input `name`'s device buffer at its maximum shape; view a smaller shape of it."""
        ...

    def device_output(self, name: str, shape: Sequence[int] | None = None) -> DeviceArray:
        """Output `name`'s device buffer, viewed at `shape` (default: the last run's)."""
        ...

    def enqueue(self, shapes: Mapping[str, Sequence[int]], stream: Stream | int | None = None) -> None:
        """Queue a run on the inputs already in the device buffers, at these input shapes,
        on `stream` (default: the owning stage's); the host does not wait."""
        ...

    def fetch(self, stream: Stream | int | None = None) -> PendingOutputs:
        """Queue copies of the last run's outputs into pinned memory; `result()` waits for them."""
        ...


def runs_on_device(session: object) -> TypeGuard[DeviceSession]:
    """Whether `session` takes the GPU frame path's device buffers (see `DeviceSession`)."""
    return isinstance(session, DeviceSession) and bool(session.device_io)


def input_named(session: Session, name: str) -> TensorInfo:
    for info in session.inputs:
        if info.name == name:
            return info
    raise KeyError(name)
