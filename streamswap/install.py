"""The install commands messages give: ones that work for the streamswap running now.

From a checkout (the README's `scripts/install.sh` installs it editable into .venv) an
extra is installed from that checkout; `pip install 'streamswap[extra]'` would look on
PyPI. The pip is always this interpreter's, so the packages land where streamswap runs.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def checkout_root() -> Path | None:
    """The source checkout streamswap runs from, if it does (pyproject.toml beside the package)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "streamswap").is_dir() else None


def pip_command() -> str:
    return f"{shlex.quote(sys.executable)} -m pip"


def install_extra(extra: str) -> str:
    """The command installing streamswap's optional `extra` (tensorrt, demo, dev, ...)."""
    root = checkout_root()
    if root is not None:
        return f"{pip_command()} install -e {shlex.quote(f'{root}[{extra}]')}"
    return f"{pip_command()} install 'streamswap[{extra}]'"


def install_packages(*packages: str) -> str:
    """The command installing plain packages into the Python running streamswap."""
    return f"{pip_command()} install " + " ".join(shlex.quote(p) for p in packages)


def install_self() -> str:
    """The command (re)installing streamswap itself with its dependencies."""
    root = checkout_root()
    if root is not None:
        return f"{pip_command()} install -e {shlex.quote(str(root))}"
    return f"{pip_command()} install streamswap"
