"""Config loading: every bad key or value is reported with its full key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamswap.config import CONFIG_ENV, Config, dump_config, load_config
from streamswap.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str, overrides: dict | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), overrides)
    return str(err.value)


@pytest.fixture(autouse=True)
def no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)


def test_defaults_without_a_file() -> None:
    config = load_config()
    assert isinstance(config, Config)
    assert config.models.retries == 5 and config.inference.provider == "auto"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == load_config()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bogus: 1\n", "bogus: unknown key (allowed here: "),
        (
            "models:\n  mirorr: http://x\n",
            "models.mirorr: unknown key (allowed here: commercial, deadline_s, dir, mirror",
        ),
        ("faces:\n  detector:\n    sise: 320\n", "faces.detector.sise: unknown key"),
    ],
)
def test_unknown_key_names_its_path(tmp_path: Path, text: str, expected: str) -> None:
    assert error_for(tmp_path, text).startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:\n  retries: five\n", "models.retries: expected an integer, got 'five'"),
        ("models:\n  commercial: maybe\n", "models.commercial: expected true/false, got 'maybe'"),
        ("models:\n  timeout_s: fast\n", "models.timeout_s: expected a number, got 'fast'"),
        ("models:\n  dir: 5\n", "models.dir: expected a string, got 5"),
        ("faces:\n  detector:\n    size: [640]\n", "faces.detector.size: expected an integer, got [640]"),
        ("outputs: [out.mp4, 7]\n", "outputs[1]: expected a string, got 7"),
        ("outputs: out.mp4\n", "outputs: expected a list of strings, got 'out.mp4'"),
        ("models: 5\n", "models: expected a mapping, got 5"),
    ],
)
def test_wrong_type_names_its_path(tmp_path: Path, text: str, expected: str) -> None:
    assert error_for(tmp_path, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:\n  retries: 99\n", "models.retries: must be between 0 and 20, got 99"),
        ("models:\n  timeout_s: 0\n", "models.timeout_s: must be ≥ 1, got 0.0"),
        ("models:\n  timeout_s: .nan\n", "models.timeout_s: must be a number, got nan"),
        ("faces:\n  tracking:\n    detect_every: 0\n", "faces.tracking.detect_every: must be between 1 and 60, got 0"),
        (
            "inference:\n  provider: gpu\n",
            "inference.provider: must be one of auto, tensorrt, cuda, coreml, cpu; got 'gpu'",
        ),
    ],
)
def test_out_of_range_names_its_path(tmp_path: Path, text: str, expected: str) -> None:
    assert error_for(tmp_path, text) == expected


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = error_for(tmp_path, "models:\n  dir: /a\n   retries: 3\n")
    assert message.startswith(str(tmp_path / "cfg.yaml"))
    assert "line 3" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "top level must be a mapping" in error_for(tmp_path, "- a\n- b\n")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_env_names_the_file_and_explicit_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write(tmp_path, "models:\n  retries: 3\n", "env.yaml")
    explicit = write(tmp_path, "models:\n  retries: 7\n", "explicit.yaml")
    monkeypatch.setenv(CONFIG_ENV, str(env_file))
    assert load_config().models.retries == 3
    assert load_config(explicit).models.retries == 7


def test_overrides_beat_the_file_and_are_checked_too(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  dir: /from/file\n  retries: 2\n")
    config = load_config(path, {"models.dir": "/from/cli", "models.mirror": None})
    assert config.models.dir == "/from/cli" and config.models.retries == 2
    assert config.models.mirror is None  # None means "flag not given", not "set to null"
    with pytest.raises(ConfigError, match="^models.retries: must be between 0 and 20, got -1$"):
        load_config(path, {"models.retries": -1})


def test_override_does_not_hide_a_bad_section(tmp_path: Path) -> None:
    assert error_for(tmp_path, "models: 5\n", {"models.dir": "/x"}) == "models: expected a mapping, got 5"


def test_dump_round_trips(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "models:\n  retries: 4\noutputs: [a.mp4, null://]\n"))
    again = load_config(write(tmp_path, dump_config(config), "dumped.yaml"))
    assert again == config
