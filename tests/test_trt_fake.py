"""A recording fake of the `tensorrt` module (8.5/8.6, 10.x, 11.x) and of cuda-python's
runtime, so the TensorRT code paths run on machines without a GPU.

Each fake version exposes ONLY the API that version has (BuilderFlag.FP16 is absent on 11,
IProgressMonitor on 8.x, the binding-index API on 10+, ...): code that touches an API the
version lacks fails with AttributeError, as it would on the real library. Engines are JSON
"plans" carrying the ONNX model; execution runs that model with ONNX Runtime on the host,
reading and writing the "device" buffers of the fake cudart (host memory), so our own
buffer, shape and copy logic is exercised for real.

Other test files import `make_fake_trt` and `FakeCudart` from here.

Sources for what each version has (NVIDIA docs):
- 8.5 added the name-based I/O API (`num_io_tensors`, `get_tensor_name/mode/shape/dtype`,
  `set_input_shape`, `set_tensor_address`, `execute_async_v3`): TensorRT 8.5.1 API
  reference, "API Changes For TensorRT 8.5.1".
- 10.0 removed the binding API, `execute_async_v2`, `BuilderFlag.STRICT_TYPES` and
  `IBuilderConfig.max_workspace_size` (use `set_memory_pool_limit`); EXPLICIT_BATCH is kept
  but ignored; `IProgressMonitor` and `DataType.INT64` are new: "Migrating Python Code from
  TensorRT 8.x to 10.x" (docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/
  tensorrt-8x-to-10x-python-api-reference.html) and the IProgressMonitor reference (10.0.1).
- 11.0 removed `BuilderFlag.FP16/INT8/BF16/FP8`, `IBuilderConfig.int8_calibrator`,
  `set_calibration_profile` (strong typing and Q/DQ instead) and every network is strongly
  typed (the STRONGLY_TYPED flag is accepted and ignored): "Removed Python APIs and
  Replacements" (.../migration/tensorrt-10x-to-11x-python-api-reference.html).
"""

from __future__ import annotations

import ctypes
import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest


class _Member:
    def __init__(self, owner: str, name: str, value: int) -> None:
        self.name, self.value, self._owner = name, value, owner

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Member) and (other._owner, other.value) == (self._owner, self.value)

    def __hash__(self) -> int:
        return hash((self._owner, self.value))

    def __repr__(self) -> str:
        return f"{self._owner}.{self.name}"


def _enum(owner: str, *names: str, values: dict[str, int] | None = None) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{n: _Member(owner, n, (values or {}).get(n, i)) for i, n in enumerate(names)})


_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 6: "INT32", 7: "INT64", 3: "INT8", 9: "BOOL", 2: "UINT8"}


def make_fake_trt(version: str) -> types.ModuleType:
    """A fake `tensorrt` module of `version`; `module.calls` records (api, details)."""
    major = int(version.split(".")[0])
    calls: list[tuple[str, Any]] = []
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = calls

    class Logger:
        WARNING = 2
        INFO = 3
        ERROR = 1

        def __init__(self, severity: int = 2) -> None:
            calls.append(("Logger", severity))

    trt.Logger = Logger
    flag_names = {8: ("EXPLICIT_BATCH", "EXPLICIT_PRECISION"), 10: ("EXPLICIT_BATCH", "STRONGLY_TYPED")}
    trt.NetworkDefinitionCreationFlag = _enum(
        "NetworkDefinitionCreationFlag",
        *flag_names.get(major, ("STRONGLY_TYPED",)),
        values={"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1, "STRONGLY_TYPED": 1},
    )
    builder_flags = (
        ("GPU_FALLBACK", "REFIT", "DEBUG", "TF32")
        + (("FP16", "INT8") if major < 11 else ())
        + (("STRICT_TYPES",) if major < 10 else ())
    )
    trt.BuilderFlag = _enum("BuilderFlag", *builder_flags)
    trt.MemoryPoolType = _enum("MemoryPoolType", "WORKSPACE", "DLA_MANAGED_SRAM")
    trt.TensorIOMode = _enum("TensorIOMode", "NONE", "INPUT", "OUTPUT")
    dtypes = ("FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8") + (("INT64",) if major >= 10 else ())
    trt.DataType = _enum("DataType", *dtypes)

    if major < 11:

        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                calls.append(("IInt8EntropyCalibrator2.__init__", None))

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    if major >= 10:

        class IProgressMonitor:
            def __init__(self) -> None:
                calls.append(("IProgressMonitor.__init__", None))

        trt.IProgressMonitor = IProgressMonitor

    class Input:
        def __init__(self, name: str, dtype: str, shape: list[int]) -> None:
            self.name, self.dtype, self.shape = name, dtype, shape

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Input] = []
            self.outputs: list[Input] = []
            self.model_bytes = b""
            self.fp16_weights = False

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Input:
            return self.inputs[i]

    class ParserError:
        def __init__(self, text: str) -> None:
            self.text = text

        def __str__(self) -> str:
            return self.text

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network = network
            self.errors: list[ParserError] = []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> ParserError:
            return self.errors[i]

        def parse_from_file(self, path: str) -> bool:
            import onnx

            calls.append(("OnnxParser.parse_from_file", path))
            model = onnx.load(path)
            bad = [n.op_type for n in model.graph.node if n.op_type.startswith("Unsupported")]
            if bad:
                self.errors.append(ParserError(f"no importer for op {bad[0]}"))
                return False
            inits = {i.name for i in model.graph.initializer}

            def io(vi: Any) -> Input:
                t = vi.type.tensor_type
                dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim]
                return Input(vi.name, _ONNX_TO_TRT[t.elem_type], dims)

            self.network.inputs = [io(v) for v in model.graph.input if v.name not in inits]
            self.network.outputs = [io(v) for v in model.graph.output]
            self.network.model_bytes = Path(path).read_bytes()
            self.network.fp16_weights = any(i.data_type == 10 for i in model.graph.initializer)
            return True

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list] = {}

        def set_shape(self, name: str, min: tuple, opt: tuple, max: tuple) -> None:
            assert all(a <= b <= c for a, b, c in zip(min, opt, max)), (min, opt, max)
            self.shapes[name] = [list(min), list(opt), list(max)]

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = bytes(data) or b"fake-timing-cache"

        def serialize(self) -> bytes:
            return self.data + b"+"

    config_attrs = {"int8_calibrator"} if major < 11 else set()
    if major >= 10:
        config_attrs.add("progress_monitor")
    else:
        config_attrs.add("max_workspace_size")  # deprecated in 8.4, removed in 10.0

    class BuilderConfig:
        def __init__(self) -> None:
            object.__setattr__(self, "_flags", set())
            object.__setattr__(self, "_profiles", [])
            object.__setattr__(self, "_pool", {})
            object.__setattr__(self, "_timing", None)
            object.__setattr__(self, "_props", {})

        def __setattr__(self, name: str, value: Any) -> None:
            if name not in config_attrs:
                raise AttributeError(f"TensorRT {version} IBuilderConfig has no attribute {name!r}")
            calls.append((f"config.{name}", value))
            self._props[name] = value

        def __getattr__(self, name: str) -> Any:
            props = object.__getattribute__(self, "_props")
            if name in config_attrs:
                return props.get(name)
            raise AttributeError(f"TensorRT {version} IBuilderConfig has no attribute {name!r}")

        def set_memory_pool_limit(self, pool: _Member, size: int) -> None:
            calls.append(("config.set_memory_pool_limit", (pool.name, size)))
            self._pool[pool.name] = size

        def set_flag(self, flag: _Member) -> None:
            calls.append(("config.set_flag", flag.name))
            self._flags.add(flag.name)

        def add_optimization_profile(self, profile: Profile) -> int:
            calls.append(("config.add_optimization_profile", dict(profile.shapes)))
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            calls.append(("config.create_timing_cache", bytes(data)))
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            calls.append(("config.set_timing_cache", ignore_mismatch))
            object.__setattr__(self, "_timing", cache)
            return True

        def get_timing_cache(self) -> TimingCache:
            return self._timing

        if major < 11:

            def set_calibration_profile(self, profile: Profile) -> bool:
                calls.append(("config.set_calibration_profile", dict(profile.shapes)))
                return True

    class Builder:
        def __init__(self, logger: Logger) -> None:
            calls.append(("Builder", None))

        def create_network(self, flags: int = 0) -> Network:
            calls.append(("create_network", flags))
            if major < 10 and not flags & (1 << 0):
                raise RuntimeError("fake TensorRT 8: ONNX needs an EXPLICIT_BATCH network")
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes | None:
            calls.append(("build_serialized_network", None))
            dynamic = [i.name for i in network.inputs if -1 in i.shape]
            shapes = config._profiles[0].shapes if config._profiles else {}
            if any(name not in shapes for name in dynamic):
                return None  # real TensorRT: "network has dynamic inputs but no profile"
            monitor = config._props.get("progress_monitor")
            if monitor is not None:
                monitor.phase_start("Building engine", None, 3)
                for step in range(3):
                    assert monitor.step_complete("Building engine", step) is True
                monitor.phase_finish("Building engine")
            calibrator = config._props.get("int8_calibrator")
            if calibrator is not None:
                cached = calibrator.read_calibration_cache()
                if not cached:
                    batches = 0
                    while calibrator.get_batch([i.name for i in network.inputs]) is not None:
                        batches += 1
                    calibrator.write_calibration_cache(f"fake-calib:{batches}".encode())
            plan = {
                "version": version,
                "flags": sorted(config._flags),
                "network_flags": network.flags,
                "inputs": [vars(i) for i in network.inputs],
                "outputs": [vars(o) for o in network.outputs],
                "profile": shapes,
                "model": network.model_bytes.hex(),
                "fp16_weights": network.fp16_weights,
            }
            return json.dumps(plan).encode()

    trt.Builder = Builder
    trt.OnnxParser = OnnxParser

    class Engine:
        def __init__(self, plan: dict) -> None:
            self.plan = plan
            self.io = [(i, trt.TensorIOMode.INPUT) for i in plan["inputs"]] + [
                (o, trt.TensorIOMode.OUTPUT) for o in plan["outputs"]
            ]

        @property
        def num_io_tensors(self) -> int:
            return len(self.io)

        def get_tensor_name(self, i: int) -> str:
            return self.io[i][0]["name"]

        def _find(self, name: str) -> tuple[dict, _Member]:
            for item, mode in self.io:
                if item["name"] == name:
                    return item, mode
            raise KeyError(name)

        def get_tensor_mode(self, name: str) -> _Member:
            return self._find(name)[1]

        def get_tensor_dtype(self, name: str) -> _Member:
            return getattr(trt.DataType, self._find(name)[0]["dtype"])

        def get_tensor_shape(self, name: str) -> tuple:
            return tuple(self._find(name)[0]["shape"])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
            if profile_index != 0 or name not in self.plan["profile"]:
                raise RuntimeError(f"no profile shape for {name!r} in profile {profile_index}")
            return [tuple(d) for d in self.plan["profile"][name]]

        def create_execution_context(self) -> "Context":
            return Context(self)

        if major < 10:  # the binding-index API, removed in 10

            @property
            def num_bindings(self) -> int:
                return len(self.io)

            def get_binding_index(self, name: str) -> int:
                return [i["name"] for i, _ in self.io].index(name)

    class Context:
        def __init__(self, engine: Engine) -> None:
            import onnxruntime as ort

            self.engine = engine
            self.session = ort.InferenceSession(bytes.fromhex(engine.plan["model"]), providers=["CPUExecutionProvider"])
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}
            self.runs = 0

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            lo, _, hi = self.engine.plan["profile"].get(name, [None, None, None])
            if lo is not None and not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def _feeds_like(self) -> dict[str, np.ndarray]:
            return {i["name"]: np.zeros(self.shapes[i["name"]], _np(i["dtype"])) for i in self.engine.plan["inputs"]}

        def get_tensor_shape(self, name: str) -> tuple:
            if name in self.shapes:
                return self.shapes[name]
            outs = self.session.run([name], self._feeds_like())
            return tuple(outs[0].shape)

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            calls.append(("execute_async_v3", stream_handle))
            feeds = {}
            for i in self.engine.plan["inputs"]:
                shape = self.shapes[i["name"]]
                feeds[i["name"]] = _view(self.addresses[i["name"]], shape, _np(i["dtype"])).copy()
            outs = self.session.run(None, feeds)
            for o, value in zip(self.engine.plan["outputs"], outs):
                target = _view(self.addresses[o["name"]], value.shape, _np(o["dtype"]))
                target[...] = value
            self.runs += 1
            return True

        if major < 10:

            def execute_async_v2(self, bindings: list, stream_handle: int) -> bool:
                raise AssertionError("streamswap must use execute_async_v3")

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            calls.append(("Runtime", None))

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            plan = json.loads(bytes(data))
            if plan.get("version") != version:
                return None  # a foreign engine: real TensorRT refuses it too
            return Engine(plan)

    trt.Runtime = Runtime
    return trt


def _np(name: str) -> np.dtype:
    return np.dtype(
        {
            "FLOAT": np.float32,
            "HALF": np.float16,
            "INT32": np.int32,
            "INT64": np.int64,
            "INT8": np.int8,
            "BOOL": np.bool_,
            "UINT8": np.uint8,
        }[name]
    )


def _view(address: int, shape: tuple, dtype: np.dtype) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    raw = (ctypes.c_ubyte * max(count * dtype.itemsize, 1)).from_address(address)
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


class FakeCudart:
    """cuda-python's runtime module surface that streamswap uses, backed by host memory.
    `error` makes cudaGetDeviceCount answer that error code (e.g. 35: no driver)."""

    cudaStreamNonBlocking = 1
    cudaHostAllocDefault = 0
    cudaHostAllocMapped = 2
    cudaEventDefault = 0
    cudaEventDisableTiming = 2
    cudaMemcpyKind = types.SimpleNamespace(
        cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3
    )

    def __init__(self, error: int = 0, devices: int = 1) -> None:
        self.error, self.devices = error, devices
        self.memory: dict[int, Any] = {}
        self.copies: list[tuple[int, int]] = []  # (kind, bytes)
        self.sync: list[tuple[str, Any]] = []  # stream/event/synchronisation calls, in order
        self.freed = 0
        self.host_alloc_flags: list[int] = []
        self.current_device: dict[int, int] = {}  # thread ident -> device set on that thread
        self._ids = 0

    def _id(self) -> int:
        self._ids += 1
        return self._ids

    def cudaGetDeviceCount(self):
        return (self.error, self.devices if self.error == 0 else None)

    def cudaSetDevice(self, device):
        import threading

        self.current_device[threading.get_ident()] = device
        return (0,)

    def cudaGetDeviceProperties(self, device):
        return (0, types.SimpleNamespace(name=b"Fake Orin\0\0", major=8, minor=7))

    def cudaDeviceSynchronize(self):
        self.sync.append(("cudaDeviceSynchronize", None))
        return (0,)

    def cudaStreamCreateWithFlags(self, flags):
        assert flags == self.cudaStreamNonBlocking
        stream = 1000 + self._id()
        self.sync.append(("cudaStreamCreateWithFlags", stream))
        return (0, stream)

    def cudaStreamDestroy(self, stream):
        self.sync.append(("cudaStreamDestroy", int(stream)))
        return (0,)

    def cudaStreamSynchronize(self, stream):
        self.sync.append(("cudaStreamSynchronize", int(stream)))
        return (0,)

    def cudaStreamWaitEvent(self, stream, event, flags):
        self.sync.append(("cudaStreamWaitEvent", (int(stream), int(event))))
        return (0,)

    def cudaEventCreateWithFlags(self, flags):
        return (0, 2000 + self._id())

    def cudaEventRecord(self, event, stream):
        self.sync.append(("cudaEventRecord", (int(event), int(stream))))
        return (0,)

    def cudaEventSynchronize(self, event):
        self.sync.append(("cudaEventSynchronize", int(event)))
        return (0,)

    def cudaEventQuery(self, event):
        return (0,)

    def cudaEventElapsedTime(self, start, end):
        return (0, 1.0)

    def cudaEventDestroy(self, event):
        return (0,)

    def _alloc(self, size):
        buf = (ctypes.c_ubyte * size)()
        address = ctypes.addressof(buf)
        self.memory[address] = buf
        return (0, address)

    def cudaMalloc(self, size):
        return self._alloc(size)

    def cudaHostAlloc(self, size, flags):
        self.host_alloc_flags.append(flags)
        return self._alloc(size)

    def cudaHostGetDevicePointer(self, ptr, flags):
        return (0, ptr)  # the fake's device memory is host memory: the same address

    def cudaFree(self, ptr):
        self.memory.pop(ptr)
        self.freed += 1
        return (0,)

    cudaFreeHost = cudaFree

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        ctypes.memmove(int(dst), int(src), int(count))
        self.copies.append((kind, int(count)))
        self.sync.append(("cudaMemcpyAsync", int(stream)))
        return (0,)


# -- tests of the fake itself: it must refuse what each real version lacks ----------------


@pytest.mark.parametrize(
    "version, present, absent",
    [
        (
            "8.5.3.1",
            [
                "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
                "BuilderFlag.FP16",
                "IInt8EntropyCalibrator2",
                "BuilderFlag.STRICT_TYPES",
            ],
            ["IProgressMonitor", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "DataType.INT64"],
        ),
        (
            "10.3.0.30",
            [
                "BuilderFlag.FP16",
                "IProgressMonitor",
                "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
                "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
                "DataType.INT64",
            ],
            ["BuilderFlag.STRICT_TYPES"],
        ),
        (
            "11.0.0.1",
            ["IProgressMonitor", "NetworkDefinitionCreationFlag.STRONGLY_TYPED"],
            ["BuilderFlag.FP16", "BuilderFlag.INT8", "IInt8EntropyCalibrator2"],
        ),
    ],
)
def test_fake_exposes_only_its_versions_api(version: str, present: list[str], absent: list[str]) -> None:
    trt = make_fake_trt(version)

    def lookup(dotted: str) -> Any:
        obj: Any = trt
        for part in dotted.split("."):
            obj = getattr(obj, part)
        return obj

    for name in present:
        lookup(name)
    for name in absent:
        with pytest.raises(AttributeError):
            lookup(name)


def test_fake_config_refuses_removed_properties() -> None:
    config = make_fake_trt("11.0.0").Builder(None).create_builder_config()
    with pytest.raises(AttributeError):
        config.int8_calibrator = object()
    with pytest.raises(AttributeError):
        config.set_calibration_profile(None)
    old = make_fake_trt("8.6.1").Builder(None).create_builder_config()
    with pytest.raises(AttributeError):
        old.progress_monitor = object()
    old.max_workspace_size = 1 << 30  # 8.x still has it (deprecated)
    with pytest.raises(AttributeError):  # removed in 10.0: set_memory_pool_limit instead
        make_fake_trt("10.3.0").Builder(None).create_builder_config().max_workspace_size = 1 << 30


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_fake_engine_has_the_binding_api_only_before_10(version: str, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "m.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the installed ONNX Runtime reads
    onnx.save(model, str(path))
    trt = make_fake_trt(version)
    builder = trt.Builder(None)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    assert trt.OnnxParser(network, None).parse_from_file(str(path))
    engine = trt.Runtime(None).deserialize_cuda_engine(
        builder.build_serialized_network(network, builder.create_builder_config())
    )
    assert engine.num_io_tensors == 2 and engine.get_tensor_name(0) == "x"  # 8.5+ and 10
    context = engine.create_execution_context()
    if version.startswith("8"):
        assert engine.num_bindings == 2 and hasattr(context, "execute_async_v2")
    else:
        assert not hasattr(engine, "num_bindings") and not hasattr(engine, "get_binding_index")
        assert not hasattr(context, "execute_async_v2")
