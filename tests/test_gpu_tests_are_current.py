"""The `gpu`-marked tests run only where a GPU is (scripts/gpu-check.sh), never in CI: every
name they import from streamswap must still exist, so a rename cannot leave them broken
until the day someone runs them on a device (the imports inside their bodies are what a
collect-only run cannot see)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def _streamswap_imports() -> list[tuple[str, int, str, str]]:
    found = []
    for path in sorted(TESTS.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streamswap"):
                found += [(path.name, node.lineno, node.module, alias.name) for alias in node.names]
    return found


IMPORTS = _streamswap_imports()


def test_the_scan_sees_the_imports_inside_gpu_test_bodies() -> None:
    assert any(f == "test_cuda.py" and name == "GpuContext" for f, _, _, name in IMPORTS)
    assert len(IMPORTS) > 200


@pytest.mark.parametrize("module", sorted({m for _, _, m, _ in IMPORTS}))
def test_every_imported_streamswap_name_exists(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [
        f"{f}:{line} imports {name}"
        for f, line, m, name in IMPORTS
        if m == module and name != "*" and not hasattr(mod, name) and not _is_submodule(module, name)
    ]
    assert not missing, f"{module} has no: " + "; ".join(missing)


def _is_submodule(module: str, name: str) -> bool:
    try:
        importlib.import_module(f"{module}.{name}")
    except ModuleNotFoundError:
        return False
    return True


def test_every_gpu_marked_test_module_is_type_checked() -> None:
    """scripts/test.sh (so CI) runs mypy over the gpu tests' calls into the code they drive."""
    import re

    script = (TESTS.parent / "scripts" / "test.sh").read_text()
    mypy_line = next(line for line in script.splitlines() if "mypy --follow-imports=silent" in line)
    checked = set(re.findall(r"tests/\S+\.py", mypy_line))
    marked = re.compile(r"^(@pytest\.mark\.gpu|pytestmark = .*pytest\.mark\.gpu)", re.M)
    gpu_modules = {f"tests/{path.name}" for path in TESTS.glob("test_*.py") if marked.search(path.read_text())}
    assert gpu_modules and gpu_modules <= checked, sorted(gpu_modules - checked)
