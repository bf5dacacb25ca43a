"""Triton Inference Server backend: the models run in a server that many daemons share.

A `TritonSession` is the `Session` interface over `tritonclient` (gRPC or HTTP): named
numpy arrays in, named arrays out, for one model on the server. What it adds to a call:

- a request timeout, and retries with exponential back-off for what a busy or restarting
  server answers (unavailable, overloaded, timed out, connection refused);
- when the retries are spent the server is taken as down: calls fail at once with
  `TritonUnavailable` (the pipeline counts a stage error and lets the frame through
  unswapped) and one call is let through after a back-off that doubles up to
  `max_backoff_s`, so a server that comes back is used again within that time;
- system shared memory for the tensors when the server is on this host (`auto`: used when
  registering a region works at start); regions grow to the largest call, are registered
  again after a server restart and are removed when the session goes away;
- a batch larger than the model's `max_batch_size` is sent in chunks.

It knows nothing about faces: the caller names the model (`triton_model_name` of the file
by default, the name `streamswap triton export` gives it).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np

from streamswap.errors import BackendUnavailable, ModelError
from streamswap.inference.base import TensorInfo
from streamswap.inference.settings import TritonSettings
from streamswap.install import install_extra
from streamswap.logs import kv

log = logging.getLogger(__name__)

# Triton's tensor data types (model_config.proto TYPE_* without the prefix) ↔ numpy.
TRITON_DTYPES: dict[str, np.dtype] = {
    "FP32": np.dtype(np.float32),
    "FP16": np.dtype(np.float16),
    "FP64": np.dtype(np.float64),
    "INT64": np.dtype(np.int64),
    "INT32": np.dtype(np.int32),
    "INT16": np.dtype(np.int16),
    "INT8": np.dtype(np.int8),
    "UINT8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
NUMPY_TO_TRITON = {v: k for k, v in TRITON_DTYPES.items()}

# The 'triton' extra (tritonclient[grpc,http]), installed the way this streamswap was.
INSTALL = install_extra("triton")

# gRPC status codes that say "this request is wrong", not "the server is unwell": a retry
# would fail the same way, so they are raised at once and never take the server down.
_CALLER_ERRORS = ("INVALID_ARGUMENT", "UNIMPLEMENTED", "PERMISSION_DENIED", "UNAUTHENTICATED", "400")


class TritonUnavailable(BackendUnavailable):
    """The server did not answer (lost, restarting, overloaded): a stage error, retried later."""


def triton_model_name(path: Path) -> str:
    """The Triton model name of a model file: its stem, with what Triton refuses in a name
    (anything but letters, digits, `_`, `-`, `.`) turned into `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem) or "model"


def _import_client(protocol: str) -> Any:
    try:
        if protocol == "http":
            import tritonclient.http as client
        else:
            import tritonclient.grpc as client
    except ImportError as exc:
        raise BackendUnavailable(
            f"inference.backend is triton but tritonclient ({protocol}) cannot be imported ({exc}); "
            f"install it: {INSTALL}"
        ) from None
    return client


def _first_line(exc: BaseException) -> str:
    text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    return (str(text).strip().splitlines() or [type(exc).__name__])[0]


def _is_caller_error(exc: BaseException) -> bool:
    status = getattr(exc, "status", None)
    code = str(status() if callable(status) else status or "")
    return any(code.endswith(c) for c in _CALLER_ERRORS)


def is_local_url(url: str) -> bool:
    """Is the server at `url` (host:port) on this machine (so shared memory can work)?"""
    host = urlsplit("//" + url).hostname or ""
    if host in ("localhost", socket.gethostname()):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TritonConnection:
    """The client for one server: gRPC (one channel, thread-safe) or HTTP (one client per
    thread: geventhttpclient's connections belong to the thread that opened them)."""

    def __init__(self, settings: TritonSettings) -> None:
        self.settings = settings
        self.module = _import_client(settings.protocol)
        # gRPC metadata keys must be lower case; HTTP header names are case-insensitive.
        self.headers = {k.lower(): v for k, v in settings.headers.items()} or None
        self._local = threading.local()
        self._grpc: Any = None

    @property
    def where(self) -> str:
        scheme = (
            ("grpcs" if self.settings.ssl else "grpc")
            if self.settings.protocol == "grpc"
            else ("https" if self.settings.ssl else "http")
        )
        return f"{scheme}://{self.settings.url}"

    def client(self) -> Any:
        s = self.settings
        if s.protocol == "grpc":
            if self._grpc is None:
                from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

                # gRPC's own reconnect back-off grows to 2 minutes by default: a server that is
                # back would stay unused that long. Keep it within ours.
                cap_ms = max(100, int(s.max_backoff_s * 1000))
                args = [
                    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
                    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", cap_ms),
                ]
                self._grpc = self.module.InferenceServerClient(
                    s.url,
                    ssl=s.ssl,
                    root_certificates=s.root_certificates,
                    private_key=s.private_key,
                    certificate_chain=s.certificate_chain,
                    channel_args=args,
                )
            return self._grpc
        client = getattr(self._local, "client", None)
        if client is None:
            ssl_options: dict[str, str] = {}
            if s.root_certificates:
                ssl_options["ca_certs"] = s.root_certificates
            if s.certificate_chain:
                ssl_options.update(certfile=s.certificate_chain, keyfile=s.private_key or "")
            client = self._local.client = self.module.InferenceServerClient(
                s.url,
                ssl=s.ssl,
                ssl_options=ssl_options or None,
                connection_timeout=s.timeout_s,
                network_timeout=s.timeout_s,
            )
        return client

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A control call (readiness, metadata, statistics) with the configured headers."""
        if self.settings.protocol == "grpc":
            kwargs.setdefault("client_timeout", max(self.settings.timeout_s, 5.0))
        return getattr(self.client(), method)(*args, headers=self.headers, **kwargs)

    def _json(self, method: str, model: str, version: str) -> dict[str, Any]:
        """A control call answered with a JSON object (gRPC asked for JSON, not protobuf)."""
        kwargs = {"as_json": True} if self.settings.protocol == "grpc" else {}
        answer = self.call(method, model, version, **kwargs)
        if not isinstance(answer, dict):
            raise BackendUnavailable(f"{self.where}: {method} answered {type(answer).__name__}, not a JSON object")
        return answer

    def metadata(self, model: str, version: str) -> dict[str, Any]:
        return self._json("get_model_metadata", model, version)

    def config(self, model: str, version: str) -> dict[str, Any]:
        answer = self._json("get_model_config", model, version)
        if self.settings.protocol != "grpc":
            return answer
        config = answer.get("config", {})  # gRPC wraps the config in a response message
        return config if isinstance(config, dict) else {}

    def statistics(self, model: str = "", version: str = "") -> dict[str, Any]:
        return self._json("get_inference_statistics", model, version)


def wait_ready(
    conn: TritonConnection, model: str, version: str, wait_s: float, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Return once the server and `model` are ready; BackendUnavailable (what to do) after
    `wait_s` seconds otherwise."""
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        why = model_not_ready(conn, model, version)
        if why is None:
            return
        if time.monotonic() >= deadline:
            raise BackendUnavailable(why)
        if not waiting:  # a daemon started before its server: say why it sits there
            waiting = True
            log.info(
                "waiting for the Triton server", extra=kv(model=model, server=conn.where, up_to_s=wait_s, reason=why)
            )
        sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def model_not_ready(conn: TritonConnection, model: str, version: str = "", *, with_fix: bool = True) -> str | None:
    """None when the server is ready and serves `model`; else what is wrong and (unless
    `with_fix` is false: `doctor` prints the fix on its own line) what to do."""
    try:
        server_ready = conn.call("is_server_ready")
    except Exception as exc:
        why = f"the Triton server at {conn.where} does not answer ({_first_line(exc)})"
        return why + ("; start it (docs/scale-out.md) or set inference.triton.url" if with_fix else "")
    if not server_ready:
        return f"the Triton server at {conn.where} is up but not ready yet (still loading models?)"
    label = f"{model}" + (f" version {version}" if version else "")
    try:
        ready = conn.call("is_model_ready", model, version)
    except Exception as exc:
        ready, detail = False, f" ({_first_line(exc)})"
    else:
        detail = ""
    if not ready:
        why = f"the Triton server at {conn.where} has no ready model {label!r}{detail}"
        return why + (
            ": write the repository with `streamswap triton export --repo DIR` and load it "
            "there, or set inference.triton.models.<role>.name"
            if with_fix
            else ""
        )
    return None


@dataclass
class _Region:
    """One system shared-memory region registered with the server."""

    name: str
    handle: Any
    size: int


class _SharedMemory:
    """The regions of one session, one per tensor, grown to the largest call."""

    def __init__(self, conn: TritonConnection, prefix: str) -> None:
        import tritonclient.utils.shared_memory as shm

        self.shm = shm
        self.conn = conn
        self.prefix = prefix
        self.regions: dict[str, _Region] = {}
        self._serial = 0

    def region(self, tensor: str, nbytes: int) -> _Region:
        region = self.regions.get(tensor)
        if region is not None and region.size >= nbytes:
            return region
        if region is not None:
            self._drop(region)
        self._serial += 1
        name = f"{self.prefix}_{self._serial}"
        handle = self.shm.create_shared_memory_region(name, "/" + name, nbytes)
        try:
            self.conn.call("register_system_shared_memory", name, "/" + name, nbytes)
        except Exception:
            self.shm.destroy_shared_memory_region(handle)
            raise
        region = self.regions[tensor] = _Region(name, handle, nbytes)
        return region

    def register_again(self) -> None:
        """After a server restart the server has forgotten our regions."""
        for region in self.regions.values():
            try:
                self.conn.call("unregister_system_shared_memory", region.name)
            except Exception:
                pass
            self.conn.call("register_system_shared_memory", region.name, "/" + region.name, region.size)

    def _drop(self, region: _Region) -> None:
        try:
            self.conn.call("unregister_system_shared_memory", region.name)
        except Exception:
            log.debug("unregistering a shared-memory region failed", exc_info=True)
        self.shm.destroy_shared_memory_region(region.handle)

    def close(self) -> None:
        for region in list(self.regions.values()):
            try:
                self._drop(region)
            except Exception:
                log.debug("removing a shared-memory region failed", exc_info=True)
        self.regions.clear()


def _probe_shared_memory(conn: TritonConnection, prefix: str) -> str | None:
    """None when the server maps a region of ours, else why not."""
    try:
        probe = _SharedMemory(conn, prefix + "_probe")
    except ImportError as exc:
        return f"tritonclient's shared-memory module does not load ({exc})"
    try:
        probe.region("probe", 64)
        return None
    except Exception as exc:
        return _first_line(exc)
    finally:
        probe.close()


class TritonSession:
    """One model on a Triton server behind the `Session` interface."""

    def __init__(
        self,
        conn: TritonConnection,
        model: str,
        version: str,
        *,
        inputs: list[TensorInfo],
        outputs: list[TensorInfo],
        max_batch: int,
        shared_memory: bool,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.conn = conn
        self.settings = conn.settings
        self.model = model
        self.version = version
        self.inputs = inputs
        self.outputs = outputs
        self.max_batch = max_batch  # 0: the model takes whole tensors, no batch dim
        self._output_names = [o.name for o in outputs]
        self._dtypes = {t.name: NUMPY_TO_TRITON.get(t.dtype, "FP32") for t in inputs + outputs}
        self._clock = clock
        self._sleep = sleep
        self._failures = 0  # consecutive calls the server did not answer
        self._retry_at = 0.0  # while down: when the next call may try the server
        self._shm: _SharedMemory | None = None
        self._shm_stale = False
        # The pipeline calls a model from one stage thread; the lock only orders a call from
        # another thread (an identity computed by the control API) around the shared regions.
        self._lock = threading.Lock()
        if shared_memory:
            self._shm = _SharedMemory(conn, f"streamswap_{os.getpid()}_{id(self):x}")
            weakref.finalize(self, self._shm.close)

    @property
    def backend(self) -> str:
        via = "+shm" if self._shm is not None else ""
        return f"triton:{self.conn.where}/{self.model}{via}"

    @property
    def down(self) -> bool:
        """Is the server taken as down (calls fail at once until `_retry_at`)?"""
        return self._failures > 0

    def run(self, feeds: Mapping[str, np.ndarray], stream: int | None = None) -> dict[str, np.ndarray]:
        now = self._clock()
        if self._failures and now < self._retry_at:
            raise TritonUnavailable(
                f"Triton server at {self.conn.where} unavailable for {self.model} "
                f"(next try in {self._retry_at - now:.1f}s)"
            )
        n = next(iter(feeds.values())).shape[0] if feeds and self.max_batch else 0
        with self._lock:
            if not self.max_batch or n <= self.max_batch:
                return self._call(feeds)
            parts = [
                self._call({k: v[i : i + self.max_batch] for k, v in feeds.items()})
                for i in range(0, n, self.max_batch)
            ]
        return {k: np.concatenate([p[k] for p in parts]) for k in self._output_names}

    def _call(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # While down, one try per back-off period: a frame must not wait out every retry.
        attempts = 1 if self._failures else self.settings.retries + 1
        error: BaseException | None = None
        for attempt in range(attempts):
            if attempt:
                self._sleep(self.settings.backoff_s * 2 ** (attempt - 1))
            try:
                if self._shm_stale and self._shm is not None:
                    self._shm.register_again()
                    self._shm_stale = False
                result = self._infer(feeds)
            except Exception as exc:
                if _is_caller_error(exc):
                    raise ModelError(f"Triton model {self.model} refused the request: {_first_line(exc)}") from None
                error = exc
                continue
            if self._failures:
                log.info(
                    "Triton server answers again",
                    extra=kv(model=self.model, server=self.conn.where, failed_calls=self._failures),
                )
                self._failures = 0
            return result
        self._failures += 1
        delay = min(self.settings.max_backoff_s, self.settings.backoff_s * 2**self._failures)
        self._retry_at = self._clock() + delay
        self._shm_stale = self._shm is not None
        if self._failures == 1:
            log.warning(
                "Triton server does not answer; retrying in the background",
                extra=kv(model=self.model, server=self.conn.where, error=_first_line(error) if error else "-"),
            )
        raise TritonUnavailable(
            f"Triton server at {self.conn.where} did not answer for {self.model}: {_first_line(error) if error else 'no answer'}"
        ) from None

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        m = self.conn.module
        inputs = []
        for name, value in feeds.items():
            array = np.ascontiguousarray(value)
            tensor = m.InferInput(name, list(array.shape), self._dtypes.get(name) or NUMPY_TO_TRITON[array.dtype])
            if self._shm is not None:
                region = self._shm.region("in:" + name, array.nbytes)
                self._shm.shm.set_shared_memory_region(region.handle, [array])
                tensor.set_shared_memory(region.name, array.nbytes)
            elif self.settings.protocol == "http":
                tensor.set_data_from_numpy(array, binary_data=True)
            else:
                tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = []
        regions: dict[str, _Region] = {}
        batch = next(iter(feeds.values())).shape[0] if feeds and self.max_batch else None
        for info in self.outputs:
            out = (
                m.InferRequestedOutput(info.name, binary_data=True)
                if self.settings.protocol == "http"
                else m.InferRequestedOutput(info.name)
            )
            nbytes = self._output_bytes(info, batch)
            if self._shm is not None and nbytes:
                region = regions[info.name] = self._shm.region("out:" + info.name, nbytes)
                out.set_shared_memory(region.name, nbytes)
            outputs.append(out)
        kwargs: dict[str, Any] = {"model_version": self.version, "outputs": outputs, "headers": self.conn.headers}
        if self.settings.protocol == "grpc":
            kwargs["client_timeout"] = self.settings.timeout_s
        result = self.conn.client().infer(self.model, inputs, **kwargs)
        values = {}
        for name in self._output_names:
            shared = regions.get(name)
            if shared is None or self._shm is None:
                values[name] = result.as_numpy(name)
                continue
            meta = result.get_output(name)
            shape = [int(d) for d in (meta["shape"] if isinstance(meta, dict) else meta.shape)]
            dtype = TRITON_DTYPES[meta["datatype"] if isinstance(meta, dict) else meta.datatype]
            # A copy: the region is overwritten by the next call.
            values[name] = np.array(self._shm.shm.get_contents_as_numpy(shared.handle, dtype, shape))
        return values

    def _output_bytes(self, info: TensorInfo, batch: int | None) -> int:
        """Bytes of an output whose shape is known before the call; 0 when it is not."""
        dims = list(info.shape)
        if self.max_batch:
            dims[0] = batch
        if any(not isinstance(d, int) or d < 0 for d in dims):
            return 0
        return int(np.prod([int(d) for d in dims if isinstance(d, int)])) * info.dtype.itemsize

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()


def _tensor_infos(entries: Sequence[Mapping[str, Any]], batched: bool) -> list[TensorInfo]:
    infos = []
    for e in entries:
        dims: list[int | str | None] = [int(d) for d in e["shape"]]
        dims = [None if d == -1 else d for d in dims]
        if batched and (not dims or dims[0] is not None):
            dims = [None] + dims  # metadata of a batching model may omit the batch dim
        dtype = TRITON_DTYPES.get(str(e["datatype"]))
        if dtype is None:
            raise ModelError(f"Triton tensor {e['name']}: data type {e['datatype']} is not supported here")
        infos.append(TensorInfo(str(e["name"]), tuple(dims), dtype))
    return infos


def open_triton_session(
    path: Path,
    settings: TritonSettings,
    role: str | None = None,
    conn: TritonConnection | None = None,
    name: str | None = None,
) -> TritonSession:
    """The session for model file `path` (`role` picks `settings.models[role]`; `name` is
    the server's model name outright), once the server and the model are ready (waits up
    to `settings.wait_ready_s`)."""
    ref = settings.models.get(role or "")
    model = name or (ref.name if ref and ref.name else "") or triton_model_name(path)
    version = ref.version if ref else ""
    conn = conn or TritonConnection(settings)
    try:
        wait_ready(conn, model, version, settings.wait_ready_s)
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"inference.backend is triton, but {exc}") from None
    try:
        meta = conn.metadata(model, version)
        max_batch = int(conn.config(model, version).get("max_batch_size", 0) or 0)
    except Exception as exc:
        raise BackendUnavailable(
            f"Triton server at {conn.where}: cannot read the metadata of {model} ({_first_line(exc)})"
        ) from None
    inputs = _tensor_infos(meta.get("inputs", []), max_batch > 0)
    outputs = _tensor_infos(meta.get("outputs", []), max_batch > 0)
    use_shm = False
    if settings.shared_memory != "off":
        why: str | None = "the server is not on this host" if not is_local_url(settings.url) else None
        if why is None:
            why = _probe_shared_memory(conn, f"streamswap_{os.getpid()}")
        if why is None:
            use_shm = True
        elif settings.shared_memory == "on":
            raise BackendUnavailable(
                f"inference.triton.shared_memory is on but the server at {conn.where} cannot use our "
                f"system shared memory ({why}); set it to auto or off, or run the server on this host "
                "sharing /dev/shm (docker: --ipc=host)"
            )
        else:
            log.info("Triton shared memory not used; tensors go over the socket", extra=kv(model=model, reason=why))
    log.info(
        "Triton model ready",
        extra=kv(
            model=model, version=version or "latest", server=conn.where, max_batch=max_batch, shared_memory=use_shm
        ),
    )
    return TritonSession(
        conn, model, version, inputs=inputs, outputs=outputs, max_batch=max_batch, shared_memory=use_shm
    )
