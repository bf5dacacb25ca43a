"""A stand-in for an onnxruntime-gpu build on a machine without a GPU (tests only)."""

from __future__ import annotations


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
