"""A real Triton Inference Server for the tests, run by the server venv (.venv-triton).

PyTriton (nvidia-pytriton) ships tritonserver with its Python backend; each ONNX model
given on the command line is bound as a Triton model whose Python function runs the file
through ONNX Runtime on the CPU, under the same name, I/O names, dtypes and dims a
`streamswap triton export` repository would serve. Models whose every input and output
has a dynamic leading dim get dynamic batching (Triton concatenates requests of several
clients); the others run one request at a time (max_batch_size 0).

    .venv-triton/bin/python tests/triton_server.py --grpc-port P --http-port P \
        --metrics-port P NAME=model.onnx [NAME=model.onnx ...]

Prints "READY" on stdout once every model is loaded, then serves until SIGTERM/SIGINT.
This script must import nothing from streamswap: it runs in a different interpreter.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import numpy as np
import onnxruntime
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
}


def _batched(args) -> bool:
    return all(a.shape and not isinstance(a.shape[0], int) for a in args)


def _dims(shape, batched: bool) -> tuple[int, ...]:
    dims = shape[1:] if batched else shape
    return tuple(d if isinstance(d, int) else -1 for d in dims)


def bind(triton: Triton, name: str, path: str, max_batch: int, delay_us: int) -> None:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    ins, outs = session.get_inputs(), session.get_outputs()
    batched = _batched(ins) and _batched(outs)
    out_names = [o.name for o in outs]

    def run(**feeds):
        values = session.run(out_names, {k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return dict(zip(out_names, values))

    infer = lambda requests: [run(**request) for request in requests]  # noqa: E731
    config = ModelConfig(batching=False, max_batch_size=0)
    if batched:
        infer = batch(run)
        config = ModelConfig(
            batching=True, max_batch_size=max_batch, batcher=DynamicBatcher(max_queue_delay_microseconds=delay_us)
        )
    triton.bind(
        model_name=name,
        infer_func=infer,
        config=config,
        strict=False,
        inputs=[Tensor(name=a.name, dtype=_TYPES[a.type], shape=_dims(a.shape, batched)) for a in ins],
        outputs=[Tensor(name=a.name, dtype=_TYPES[a.type], shape=_dims(a.shape, batched)) for a in outs],
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--queue-delay-us", type=int, default=4000)
    parser.add_argument("--token", help="statistics need this access token in a header")
    parser.add_argument("models", nargs="+", metavar="NAME=PATH")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        log_verbose=0,
        exit_timeout_secs=2,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Shared-memory registration open to every client, as on a stock tritonserver (PyTriton
    # guards it with a token by default); statistics behind --token, so the clients' extra
    # headers (inference.triton.headers) are exercised.
    security = TritonSecurityConfig(access_token=args.token, restricted_endpoints=["statistics"] if args.token else [])
    with Triton(config=config, security_config=security) as triton:
        for spec in args.models:
            name, _, path = spec.partition("=")
            bind(triton, name, path, args.max_batch, args.queue_delay_us)
        triton.run()  # starts the server and loads the bound models
        print("READY", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
