"""Settings for the model store: where files live, where they come from, what is allowed."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamswap.typedconfig import limits


@dataclass
class ModelsSettings:
    # Folder holding model files; None = $STREAMSWAP_MODELS_DIR or $XDG_CACHE_HOME/streamswap/models.
    dir: str | None = None
    # Internal mirror for air-gapped sites, tried before the catalogue URLs: files are fetched
    # as <mirror>/<file>. An http(s):// or file:// URL, or a plain folder (USB stick, NFS).
    mirror: str | None = None
    # Refuse models whose licence forbids commercial use (InsightFace, SimSwap, HyperSwap, ...).
    commercial: bool = False
    # A download that receives nothing for this long fails (and is retried).
    timeout_s: float = field(default=30.0, metadata=limits(min=1))
    # Retries per URL after a transient failure (timeout, cut connection, HTTP 5xx), with
    # exponential back-off from 1 s; each retry resumes where the last one stopped.
    retries: int = field(default=5, metadata=limits(min=0, max=20))
    # The whole download of one model (every URL and retry) must finish within this; a
    # mirror that trickles bytes is cut off. A partial download of a pinned file is kept.
    deadline_s: float = field(default=3600.0, metadata=limits(min=1))
