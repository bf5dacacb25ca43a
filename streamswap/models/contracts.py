"""The graph inputs and outputs each model contract promises, checked on files that have no
pinned hash (catalogue models nobody publishes a hash for, the user's own exports): such a
file must at least be a loadable ONNX graph with the contract's inputs (names where the
contract names them, ranks, fixed sizes) and number of outputs.

Shapes use None for any size; a file's symbolic (dynamic) dimension matches any expected
size. The adapters in faces/ check the same again, in detail, when a session loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streamswap.errors import ModelError

if TYPE_CHECKING:
    import onnx

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class GraphContract:
    inputs: tuple[tuple[str | None, Shape], ...]  # (name or None = by position, shape)
    outputs: int  # how many outputs, at least (an export may carry extra ones)


_SWAP_256 = GraphContract((("target", (1, 3, 256, 256)), ("source", (1, 512))), 1)

# Input names only where the adapter feeds by name (swappers: target/source; the enhancer
# and the crossface converters: input); the others take the model's inputs by position.
CONTRACTS: dict[str, GraphContract] = {
    # by position: insightface's own exports name it "input.1" (det_10g), others "input"
    "scrfd": GraphContract(((None, (1, 3, None, None)),), 9),
    "yoloface": GraphContract(((None, (1, 3, 640, 640)),), 1),
    "yunet": GraphContract(((None, (1, 3, None, None)),), 12),
    "blazeface": GraphContract(((None, (1, 3, 192, 192)),), 2),
    "facemesh": GraphContract(((None, (None, 3, 192, 192)),), 2),
    "arcface": GraphContract(((None, (None, 3, 112, 112)),), 1),
    "inswapper": GraphContract((("target", (1, 3, 128, 128)), ("source", (1, 512))), 1),
    "hyperswap": _SWAP_256,
    "simswap": _SWAP_256,
    "ghost": _SWAP_256,
    "crossface": GraphContract((("input", (1, 512)),), 1),
    "gfpgan": GraphContract((("input", (1, 3, 512, 512)),), 1),
    "xseg": GraphContract(((None, (1, 256, 256, 3)),), 1),
    "bisenet": GraphContract(((None, (1, 3, 512, 512)),), 1),
}


def _shape(value: onnx.ValueInfoProto) -> Shape:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)


def _fmt(name: str, shape: Shape) -> str:
    return f"{name}[{'x'.join('?' if d is None else str(d) for d in shape)}]"


def check_onnx_contract(path: Path, contract: str, label: str, fix: str = "give a real .onnx export") -> None:
    """ModelError unless `path` is an ONNX graph with `contract`'s inputs and outputs; the
    message starts with `label` and ends with `fix`."""
    expected = CONTRACTS.get(contract)
    import onnx

    try:
        graph = onnx.load(os.fspath(path), load_external_data=False).graph
    except Exception as exc:  # protobuf raises assorted types for non-ONNX bytes
        raise ModelError(f"{label}: {path} is not a loadable ONNX model ({type(exc).__name__}); {fix}") from None
    initializers = {t.name for t in graph.initializer}
    inputs = [(v.name, _shape(v)) for v in graph.input if v.name not in initializers]
    if not graph.node or not inputs or not graph.output:
        raise ModelError(f"{label}: {path} is an empty ONNX graph (no nodes, inputs or outputs); {fix}")
    if expected is None:
        return
    problems = []
    if len(inputs) != len(expected.inputs):
        problems.append(f"{len(inputs)} inputs, the contract has {len(expected.inputs)}")
    else:
        by_name = dict(inputs)
        for i, (name, want) in enumerate(expected.inputs):
            if name is not None and name not in by_name:
                problems.append(f"no input named {name!r}")
                continue
            got_name, got = (name, by_name[name]) if name is not None else inputs[i]
            if len(got) != len(want) or any(g is not None and w is not None and g != w for g, w in zip(got, want)):
                problems.append(f"input {_fmt(got_name, got)} where the contract has {_fmt(got_name, want)}")
    if len(graph.output) < expected.outputs:
        problems.append(f"{len(graph.output)} outputs, the contract has {expected.outputs}")
    if problems:
        raise ModelError(
            f"{label}: {path} does not follow the {contract!r} contract ("
            + "; ".join(problems)
            + f"): another model or a broken export; {fix}"
        )
