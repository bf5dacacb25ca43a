"""Stand-ins for onnxruntime-gpu builds on a machine without a GPU (tests only): one whose
CUDA provider cannot start, one whose CUDA provider "runs" on the recording CUDA fake."""

from __future__ import annotations

import numpy as np


class GpuBuildWithoutGpu:
    """The real onnxruntime, dressed as an onnxruntime-gpu build on a machine where the
    CUDA provider cannot start: it is offered, and then either fails to start (`raises`) or
    is quietly left out of the session (ORT's behaviour when CUDA libraries do not load)."""

    def __init__(self, raises: bool) -> None:
        import onnxruntime

        self._ort = onnxruntime
        self.raises = raises
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str):
        return getattr(self._ort, name)

    def get_available_providers(self) -> list[str]:
        return ["CUDAExecutionProvider", *self._ort.get_available_providers()]

    def InferenceSession(self, path, sess_options=None, providers=(), provider_options=None, **kwargs):
        self.calls.append(list(providers))
        if "CUDAExecutionProvider" in providers:
            if self.raises:
                raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
            keep = [i for i, p in enumerate(providers) if p != "CUDAExecutionProvider"]
            providers = [providers[i] for i in keep]
            provider_options = [provider_options[i] for i in keep] if provider_options else None
        return self._ort.InferenceSession(
            path, sess_options=sess_options, providers=providers, provider_options=provider_options, **kwargs
        )


class FakeOrtValue:
    """What IOBinding.get_outputs() hands back: here only its shape is read."""

    def __init__(self, value) -> None:
        self.value = value

    def shape(self) -> list[int]:
        return list(self.value.shape)


class RecordingBinding:
    """An IOBinding that records every bind and keeps what is bound, as ONNX Runtime does
    (a name bound again replaces its earlier binding)."""

    def __init__(self, rt) -> None:
        self._rt = rt
        self.inputs: dict[str, tuple] = {}  # name -> (device_type, device_id, dtype, shape, ptr)
        self.outputs: dict[str, tuple] = {}  # the same; dtype/shape/ptr None: ORT allocates
        self.values: dict = {}
        self.calls: list[tuple] = []

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr) -> None:
        bound = (device_type, device_id, np.dtype(element_type), tuple(int(d) for d in shape), int(buffer_ptr))
        self.calls.append(("bind_input", name, *bound))
        self.inputs[name] = bound

    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None, buffer_ptr=None) -> None:
        if buffer_ptr is None:
            bound = (device_type, device_id, None, None, None)
        else:
            bound = (device_type, device_id, np.dtype(element_type), tuple(int(d) for d in shape), int(buffer_ptr))
        self.calls.append(("bind_output", name, *bound))
        self.outputs[name] = bound

    def get_outputs(self) -> list[FakeOrtValue]:
        return [self.values[name] for name in self.outputs]

    def clear_binding_outputs(self) -> None:
        self.calls.append(("clear_binding_outputs",))
        self.outputs.clear()
        self.values.clear()

    def clear_binding_inputs(self) -> None:
        self.calls.append(("clear_binding_inputs",))
        self.inputs.clear()

    # The CUDA provider's Sync(): a wait for the whole device.
    def synchronize_inputs(self) -> None:
        self.calls.append(("synchronize_inputs",))
        self._rt.sync.append(("cudaDeviceSynchronize", None))

    def synchronize_outputs(self) -> None:
        self.calls.append(("synchronize_outputs",))
        self._rt.sync.append(("cudaDeviceSynchronize", None))


class RecordingCudaSession:
    """An InferenceSession "on the CUDA provider" of the recording CUDA fake: bound device
    pointers are host memory there, so the real onnxruntime computes the real outputs on the
    CPU from them and writes them back through the bound output pointers."""

    def __init__(self, ort, rt, path, sess_options, providers, provider_options) -> None:
        self._ort = ort
        self._rt = rt
        self.real = ort.InferenceSession(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
        self.providers = list(providers)
        self.options = dict(zip(self.providers, provider_options or [{} for _ in self.providers]))
        gpu = self.options.get("TensorrtExecutionProvider") or self.options.get("CUDAExecutionProvider") or {}
        self.stream = int(gpu["user_compute_stream"]) if "user_compute_stream" in gpu else None
        self.device_id = int(gpu.get("device_id", 0))
        self.bindings: list[RecordingBinding] = []
        self.runs: list[dict] = []  # one per run_with_iobinding: stream, bound shapes/pointers, synchronised

    def disable_fallback(self) -> None:
        pass

    def get_providers(self) -> list[str]:
        return self.providers

    def get_inputs(self):
        return self.real.get_inputs()

    def get_outputs(self):
        return self.real.get_outputs()

    def run(self, output_names, feeds):
        return self.real.run(output_names, feeds)

    def io_binding(self) -> RecordingBinding:
        binding = RecordingBinding(self._rt)
        self.bindings.append(binding)
        return binding

    def run_with_iobinding(self, binding: RecordingBinding, run_options=None) -> None:
        from test_trt_fake import _view

        assert binding in self.bindings, "a binding of another session"
        feeds = {}
        for arg in self.real.get_inputs():
            if arg.name not in binding.inputs:
                raise RuntimeError(f"input {arg.name!r} is not bound")
            device_type, device_id, dtype, shape, ptr = binding.inputs[arg.name]
            if (device_type, device_id) != ("cuda", self.device_id):
                raise RuntimeError(f"input {arg.name!r} bound on {device_type}:{device_id}, not cuda:{self.device_id}")
            feeds[arg.name] = _view(ptr, shape, dtype).copy()
        names = list(binding.outputs)
        for name, value in zip(names, self.real.run(names, feeds)):
            device_type, device_id, dtype, shape, ptr = binding.outputs[name]
            if (device_type, device_id) != ("cuda", self.device_id):
                raise RuntimeError(f"output {name!r} bound on {device_type}:{device_id}, not cuda:{self.device_id}")
            if ptr is None:
                binding.values[name] = FakeOrtValue(value)
                continue
            if tuple(value.shape) != shape:  # ORT's own refusal of a pre-allocated output
                raise RuntimeError(f"Shape mismatch attempting to re-use buffer. {shape} != {tuple(value.shape)}")
            _view(ptr, shape, np.dtype(dtype))[...] = value
            binding.values[name] = FakeOrtValue(value)
        try:
            synchronised = run_options.get_run_config_entry("disable_synchronize_execution_providers") != "1"
        except (AttributeError, RuntimeError):  # no run options, or the entry is not set
            synchronised = True
        self.runs.append(
            {
                "stream": self.stream,
                "inputs": {n: (b[3], b[4]) for n, b in binding.inputs.items()},
                "outputs": {n: (b[3], b[4]) for n, b in binding.outputs.items()},
                "synchronised": synchronised,
            }
        )
        if synchronised:  # the providers' OnRunEnd: the host waits for the compute stream
            self._rt.sync.append(("cudaStreamSynchronize", self.stream))


class CudaBuildOnFakeDevice:
    """The real onnxruntime dressed as an onnxruntime-gpu build whose CUDA provider starts,
    over the recording CUDA fake `rt` (tests/test_trt_fake.FakeCudart): every session is a
    `RecordingCudaSession` (providers and options as asked, I/O binding recorded, real
    results); what real ONNX Runtime waits for is recorded in `rt.sync` (a run without
    `disable_synchronize_execution_providers` synchronises its stream; IOBinding's
    synchronize_* the device)."""

    def __init__(self, rt) -> None:
        import onnxruntime

        self._ort = onnxruntime
        self._rt = rt
        self.sessions: list[RecordingCudaSession] = []

    def __getattr__(self, name: str):
        return getattr(self._ort, name)

    def get_available_providers(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def InferenceSession(self, path, sess_options=None, providers=(), provider_options=None, **kwargs):
        session = RecordingCudaSession(self._ort, self._rt, path, sess_options, providers, provider_options)
        self.sessions.append(session)
        return session
