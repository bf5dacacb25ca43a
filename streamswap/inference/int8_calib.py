"""INT8 calibration for TensorRT 8.5-10.x: batches of real model inputs fed to an
IInt8EntropyCalibrator2, with the calibration cache saved so rebuilds skip calibration.

This module knows tensors, not faces: the caller (the `engines build` command, through
`streamswap.faces.calibration`) turns face images into preprocessed model inputs and
saves them with `save_calibration_data`; the builder child loads them back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from streamswap.errors import ModelError
from streamswap.logs import kv

log = logging.getLogger(__name__)


def save_calibration_data(arrays: Mapping[str, np.ndarray], path: Path) -> Path:
    """Save one batch-major array per model input (all with the same number of samples)."""
    counts = {name: len(a) for name, a in arrays.items()}
    if not arrays or len(set(counts.values())) != 1 or 0 in counts.values():
        raise ModelError(f"calibration data needs the same, non-zero number of samples per input; got {counts}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        # Any: numpy's stub gives savez a keyword `allow_pickle: bool` beside **arrays, so a
        # ** of str → ndarray does not type-check against it although it is the documented use.
        named: dict[str, Any] = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in arrays.items()}
        np.savez(f, **named)
    return path


class CalibrationBatches:
    """Fixed-size batches over calibration samples (a partial last batch is dropped,
    because TensorRT calibrates at one batch size)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be ≥ 1")
        counts = {len(a) for a in arrays.values()}
        if len(counts) != 1:
            raise ModelError("calibration inputs have different sample counts")
        self.arrays = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in arrays.items()}
        self.batch_size = batch_size
        self.samples = counts.pop()
        if self.samples < batch_size:
            raise ModelError(
                f"only {self.samples} calibration samples for batch size {batch_size}; "
                "add face images to the calibration folder (a few hundred work best)"
            )

    @classmethod
    def load(cls, path: Path, batch_size: int) -> "CalibrationBatches":
        with np.load(path) as data:
            return cls({name: data[name] for name in data.files}, batch_size)

    def __len__(self) -> int:
        return self.samples // self.batch_size

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            lo = i * self.batch_size
            yield {name: a[lo : lo + self.batch_size] for name, a in self.arrays.items()}


class _Uploads:
    """The calibration batches, copied one at a time into device buffers sized for one batch."""

    def __init__(self, batches: CalibrationBatches) -> None:
        from streamswap.inference.cuda import open_cuda

        self.cuda = open_cuda()
        self.stream = self.cuda.stream()
        self.device = {
            name: self.cuda.device_buffer(a[: batches.batch_size].nbytes) for name, a in batches.arrays.items()
        }
        self.total = len(batches)
        self.sent = 0
        self._iter = iter(batches)

    def next(self, names: list[str]) -> list[int] | None:
        """Device pointers of the next batch, one per input name; None when all were sent."""
        try:
            batch = next(self._iter)
        except StopIteration:
            return None
        pointers = []
        for name in names:
            if name not in batch:
                raise ModelError(f"calibration data has no input {name!r} (has {', '.join(batch)})")
            self.cuda.copy_htod_async(self.device[name], batch[name], self.stream)
            pointers.append(self.device[name].ptr)
        self.stream.synchronize()
        self.sent += 1
        log.info("calibration batch", extra=kv(batch=self.sent, of=self.total))
        return pointers


def make_calibrator(trt: Any, data_path: Path | None, batch_size: int, cache_path: Path | None) -> Any:
    """An IInt8EntropyCalibrator2 over the saved batches, using a calibration cache when
    one exists (then TensorRT does not ask for batches at all; `data_path` may be None)."""
    batches = CalibrationBatches.load(data_path, batch_size) if data_path is not None else None

    # tensorrt ships no type information, so its calibrator interface is Any to mypy.
    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._uploads = _Uploads(batches) if batches is not None else None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str], *args: Any) -> list[int] | None:
            return self._uploads.next(names) if self._uploads is not None else None

        def read_calibration_cache(self) -> bytes | None:
            if cache_path is not None and cache_path.exists():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is not None:
                from streamswap.inference.engine_cache import write_atomic

                write_atomic(cache_path, bytes(memoryview(cache)))

    return Calibrator()
