"""Model adapters by (role, contract). Each adapter module registers its own factory with
`@adapter(role, contract)`; `build_adapter` makes the one a catalogue entry (or a user's
file with a declared contract) names. No if-chains, no second list of contract names:
what is registered is what exists.

A factory takes `AdapterParts` (the opened session and what else the adapter needs) and
returns the adapter; a built-in adapter (the mesh swapper) gets no session.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from streamswap.errors import ModelError
from streamswap.faces.settings import FacesSettings
from streamswap.inference.base import Session

# The modules whose import registers adapters (imported on first lookup).
_ADAPTER_MODULES = (
    "streamswap.faces.detectors",
    "streamswap.faces.landmarks",
    "streamswap.faces.identity",
    "streamswap.faces.enhancer",
    "streamswap.faces.swappers.inswapper",
    "streamswap.faces.swappers.hyperswap",
    "streamswap.faces.swappers.simswap",
    "streamswap.faces.swappers.ghost",
    "streamswap.faces.swappers.mesh",
)


@dataclass(frozen=True)
class AdapterParts:
    """What a factory builds an adapter from."""

    name: str  # the model's name, for messages
    settings: FacesSettings
    session: Session | None = None  # None for a built-in adapter
    path: Path | None = None  # the model file, where the adapter reads more from it
    sha256: str = ""
    companion: AdapterParts | None = None  # e.g. a swapper's embedding converter
    recognizer: Any = None  # faces.identity.ArcFace, for swappers that embed sources
    cache: Any = None  # faces.identity.LatentCache


Factory = Callable[[AdapterParts], Any]
F = TypeVar("F", bound=Factory)

# (role, contract) -> factory; filled once, by the adapter modules' imports.
_REGISTRY: dict[tuple[str, str], Factory] = {}


def adapter(role: str, contract: str) -> Callable[[F], F]:
    """Register the decorated factory as the adapter for (role, contract)."""

    def register(factory: F) -> F:
        key = (role, contract)
        if key in _REGISTRY and _REGISTRY[key] is not factory:
            raise RuntimeError(f"two adapters registered for {role} contract {contract!r}")
        _REGISTRY[key] = factory
        return factory

    return register


def _load() -> None:
    for module in _ADAPTER_MODULES:
        importlib.import_module(module)


def contracts(role: str) -> tuple[str, ...]:
    """The contracts an adapter exists for in `role`, sorted."""
    _load()
    return tuple(sorted(c for r, c in _REGISTRY if r == role))


def build_adapter(role: str, contract: str, parts: AdapterParts) -> Any:
    """The adapter for a `role` model following `contract`. ModelError when none exists
    (the message lists those that do) or when the session does not match the contract."""
    _load()
    factory = _REGISTRY.get((role, contract))
    if factory is None:
        raise ModelError(
            f"{parts.name}: no {role} adapter follows the {contract!r} contract; "
            f"known {role} contracts: {', '.join(contracts(role))}"
        )
    return factory(parts)


def require_session(parts: AdapterParts) -> Session:
    """The session of a model-file adapter (a built-in one has none)."""
    if parts.session is None:
        raise ModelError(f"{parts.name}: this adapter needs a model file")
    return parts.session
