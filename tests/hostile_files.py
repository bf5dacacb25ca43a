"""Hostile files, generated: decompression bombs and headers that lie (tests only)."""

from __future__ import annotations

import struct
import zlib


def zeros_deflated(n: int) -> bytes:
    """zlib stream of `n` zero bytes, compressed chunk by chunk (never `n` bytes in memory)."""
    co = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    out = []
    left = n
    while left > 0:
        step = min(left, len(chunk))
        out.append(co.compress(chunk[:step]))
        left -= step
    out.append(co.flush())
    return b"".join(out)


def lying_tiff(real: tuple[int, int], claimed: tuple[int, int]) -> bytes:
    """A grey deflate TIFF of real=(w, h) zero pixels whose IFD gives width/height twice: first
    the real size (what libtiff decodes), then `claimed` (what a last-tag-wins parser reads).
    20000×20000 is ~390 KB on disk and 1.2 GB once decoded to BGR."""
    w, h = real
    strip = zeros_deflated(w * h)
    entries = [
        (256, 4, w),
        (257, 4, h),
        (256, 4, claimed[0]),
        (257, 4, claimed[1]),
        (258, 3, 8),
        (259, 3, 8),
        (262, 3, 1),
        (273, 4, 0),
        (277, 3, 1),
        (278, 4, h),
        (279, 4, len(strip)),
    ]
    data_off = 8 + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(entries)))
    for tag, typ, val in entries:
        val = data_off if tag == 273 else val
        out += struct.pack("<HHIHH", tag, typ, 1, val, 0) if typ == 3 else struct.pack("<HHII", tag, typ, 1, val)
    return bytes(out + struct.pack("<I", 0) + strip)


def billion_laughs(key: str = "input", levels: int = 9, fan: int = 10) -> str:
    """YAML whose value under `key` (a dotted path) is a list of aliases of aliases: a few
    hundred bytes that expand to fan**levels strings once anything walks (or prints) them."""
    items = ["- &a0 [" + ", ".join(["lol"] * fan) + "]"]
    items += [f"- &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels + 1)]
    parts = key.split(".")
    text = ""
    for depth, part in enumerate(parts):
        text += "  " * depth + f"{part}:\n"
    indent = "  " * len(parts)
    return text + "".join(f"{indent}{item}\n" for item in items)


def onnx_bytes(inputs: list[tuple[str, list[int | str]]], outputs: int = 1) -> bytes:
    """A valid ONNX graph with these inputs (name, shape) and `outputs` Identity outputs of
    the first input: enough to pass a contract's structural check."""
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs]
    outs = [helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, None) for i in range(outputs)]
    nodes = [helper.make_node("Identity", [inputs[0][0]], [f"out{i}"]) for i in range(outputs)]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=[helper.make_opsetid("", 13)])
    return model.SerializeToString()


INSWAPPER_IO = [("target", [1, 3, 128, 128]), ("source", [1, 512])]
SCRFD_IO = [("input", [1, 3, "S", "S"])]
