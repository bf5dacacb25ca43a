"""The whole configuration: one typed tree, loaded from YAML and overridden by CLI flags.

Precedence (lowest first): built-in defaults, the file named by --config or
$STREAMSWAP_CONFIG, then CLI overrides given as dotted key paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streamswap import safeyaml
from streamswap.errors import ConfigError
from streamswap.faces.settings import FacesSettings
from streamswap.files import read_regular
from streamswap.inference.settings import InferenceSettings
from streamswap.io.settings import IoSettings
from streamswap.models.settings import ModelsSettings
from streamswap.pipeline.settings import PipelineSettings
from streamswap.service.settings import ServiceSettings
from streamswap.typedconfig import from_dict, set_path, to_dict

CONFIG_ENV = "STREAMSWAP_CONFIG"
# A configuration is a few KiB; anything near this is not one.
MAX_CONFIG_BYTES = 1 << 20


@dataclass
class Config:
    # Face image(s) whose identity is put onto the faces in the video.
    source: list[str] = field(default_factory=list)
    # Input URI: v4l2:///dev/video0, rtsp://..., file.mp4, test://
    input: str = "test://"
    # Output URIs: vcam://, rtmp://host/app/key, out.mp4, display://, null://
    outputs: list[str] = field(default_factory=lambda: ["null://"])
    models: ModelsSettings = field(default_factory=ModelsSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    faces: FacesSettings = field(default_factory=FacesSettings)
    io: IoSettings = field(default_factory=IoSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)


def load_config(path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load defaults ← YAML file (explicit path or $STREAMSWAP_CONFIG) ← dotted overrides."""
    data: dict[str, Any] = {}
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is not None:
        data = read_yaml(Path(path))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_path(data, dotted, value)
    return from_dict(Config, data)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line ConfigError.

    Only a regular file of at most MAX_CONFIG_BYTES is read (a FIFO or /dev/zero is refused
    at once), and it is parsed by `safeyaml` (bounded depth and alias expansion, no
    duplicate keys): every way of loading a config goes through here."""
    data_bytes = read_regular(path, MAX_CONFIG_BYTES, what="config file", error=ConfigError)
    try:
        text = data_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: config file is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    data = safeyaml.load(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def dump_config(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
