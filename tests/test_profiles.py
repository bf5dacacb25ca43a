"""The shipped config profiles load, and default.yaml says exactly what the defaults are."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamswap.config import Config, load_config

PROFILES = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def test_all_four_profiles_exist():
    names = {p.name for p in PROFILES}
    assert {"default.yaml", "cpu.yaml", "desktop-gpu.yaml", "jetson-orin.yaml"} <= names


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_loads(path):
    assert isinstance(load_config(path), Config)


def test_default_yaml_is_the_builtin_defaults():
    # Guards against the documented file drifting from the dataclasses.
    assert load_config(PROFILES[0].parent / "default.yaml") == Config()


def test_cpu_profile_never_needs_a_gpu_or_a_download():
    config = load_config(PROFILES[0].parent / "cpu.yaml")
    assert config.inference.backend == "ort" and config.inference.provider == "cpu"
    assert config.faces.detector.model == "blazeface" and config.faces.swapper.model == "mesh"
