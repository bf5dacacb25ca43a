"""Settings for the model store: where files live, where they come from, what is allowed."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamswap.typedconfig import limits


@dataclass
class ModelsSettings:
    # Folder holding model files; None = $STREAMSWAP_MODELS_DIR or $XDG_CACHE_HOME/streamswap/models.
    dir: str | None = None
    # Base URL of an internal mirror (air-gapped sites): files are fetched as <mirror>/<file>.
    mirror: str | None = None
    # Refuse models whose licence forbids commercial use (InsightFace, SimSwap, HyperSwap, ...).
    commercial: bool = False
    timeout_s: float = field(default=30.0, metadata=limits(min=1))
    retries: int = field(default=5, metadata=limits(min=0, max=20))
