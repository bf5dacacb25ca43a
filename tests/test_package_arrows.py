"""The arrows between packages (docs/architecture.md, each package's __init__ docstring)
hold: every `import streamswap.X` in a package is one it may make."""

from __future__ import annotations

import ast
from pathlib import Path

import streamswap

ROOT = Path(streamswap.__file__).parent
SHARED = {"errors", "logs", "typedconfig", "safeyaml", "files", "redact", "install"}

# package -> what it may import besides itself and the shared leaves
ALLOWED: dict[str, set[str]] = {
    "ops": set(),
    "inference": set(),
    "io": set(),
    "pipeline": {"io"},
    "models": {"inference"},
    "faces": {"inference", "ops", "io", "pipeline.stage", "pipeline.frame_queue"},
    "service": {"pipeline.stage", "pipeline.stats", "io"},
}


def _imports(path: Path) -> set[str]:
    """`streamswap.a.b` imported by `path`, as "a.b" (module-level and lazy imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n.removeprefix("streamswap.") for n in names if n.startswith("streamswap."))
    return found


def _allowed(package: str, module: str) -> bool:
    top = module.split(".")[0]
    if top == package or top in SHARED:
        return True
    return any(module == rule or module.startswith(rule + ".") for rule in ALLOWED[package])


def test_every_package_imports_only_what_its_arrows_allow() -> None:
    wrong = []
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in sorted(_imports(path)):
                if not _allowed(package, module):
                    wrong.append(f"{path.relative_to(ROOT)} imports streamswap.{module}")
    assert not wrong, "\n".join(wrong)


def test_the_daemon_builds_nothing_itself() -> None:
    """service/ gets its factories from commands/serve.py: it imports no wiring, faces,
    inference or models (checked above); and the pipeline knows stages, not faces."""
    assert "wiring" not in ALLOWED["service"] and not any(r.startswith("faces") for r in ALLOWED["pipeline"])
