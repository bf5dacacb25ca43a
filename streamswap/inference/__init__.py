"""Runs ONNX graphs and knows nothing about faces: one small `base.Session` interface
(named inputs → named outputs, optionally on a given CUDA stream) with ONNX Runtime,
TensorRT (engine build, cache) and Triton backends, and `cuda` (streams, events, pinned and
device memory; CUDA failures are `errors.DeviceError`s).

May import: `errors`, `install`, `logs`, `safeyaml`, `typedconfig`. Nothing else of streamswap.
"""
