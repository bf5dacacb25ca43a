"""The one small interface every inference backend implements. Knows nothing about faces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

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


def input_named(session: Session, name: str) -> TensorInfo:
    for info in session.inputs:
        if info.name == name:
            return info
    raise KeyError(name)
