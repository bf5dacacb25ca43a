"""Nothing the user has is destroyed: an output that is the input, a source photo or another
output is refused; an existing output file is refused without -y/--overwrite (ffmpeg's
convention) for `run` and `swap-image`, and moved aside by `serve`; no folders are created."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from io_media import make_video

from streamswap.config import Config
from streamswap.errors import OutputError
from streamswap.io.base import VideoFormat
from streamswap.io.images import write_image
from streamswap.wiring import plan_endpoints

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STREAMSWAP_CONFIG": "", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "streamswap", "--log-level", "ERROR", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "in.mp4", frames=10, audio=False)


def test_run_refuses_to_write_its_input_in_any_spelling(clip: Path, tmp_path: Path) -> None:
    before = digest(clip)
    os.link(clip, tmp_path / "hard.mp4")
    os.symlink(clip, tmp_path / "soft.mp4")
    for output in (
        str(clip),
        f"{clip.parent}/../{clip.parent.name}/in.mp4",
        f"file://{clip}",
        str(tmp_path / "hard.mp4"),
        str(tmp_path / "soft.mp4"),
    ):
        for extra in ((), ("-y",)):  # -y never allows destroying the input
            result = cli("run", "-i", str(clip), "-o", output, *extra)
            assert result.returncode != 0 and "is also read by this run" in result.stderr, (output, result.stderr)
    assert digest(clip) == before


def test_run_refuses_an_existing_output_unless_overwrite(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    result = cli("run", "-i", str(clip), "-o", str(out))
    assert result.returncode != 0 and "already exists; pass -y/--overwrite" in result.stderr
    assert out.read_bytes() == b"precious"
    result = cli("run", "-i", str(clip), "-o", str(out), "-y")
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 1000


def test_outputs_may_not_be_source_photos_or_each_other(tmp_path: Path) -> None:
    photo = tmp_path / "face.mp4"  # a source "photo" with a video suffix, to reach the check
    photo.write_bytes(b"x")
    config = Config(source=[str(photo)], input="test://", outputs=[str(photo)])
    config.io.existing_output = "overwrite"
    with pytest.raises(OutputError, match="is also read by this run"):
        plan_endpoints(config)
    twice = Config(input="test://", outputs=[str(tmp_path / "a.mp4"), f"file://{tmp_path}/a.mp4"])
    with pytest.raises(OutputError, match="is also read by this run"):
        plan_endpoints(twice)


def test_serve_policy_moves_the_old_file_aside(tmp_path: Path) -> None:
    out = tmp_path / "rec.mp4"
    out.write_bytes(b"yesterday")
    config = Config(input="test://", outputs=[str(out)])
    config.io.existing_output = "rename"
    (sink,) = plan_endpoints(config).sinks
    sink.open(VideoFormat(64, 48, Fraction(30), Fraction(1, 30)), None)
    sink.close()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("rec.") and p != out]
    assert len(kept) == 1 and kept[0].read_bytes() == b"yesterday" and kept[0].suffix == ".mp4"
    assert out.stat().st_size > 0 and out.read_bytes() != b"yesterday"


def test_serve_resolves_auto_to_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamswap.commands import serve
    from streamswap.service import daemon

    seen = {}

    class FakeDaemon:
        def __init__(self, config, load, build_stages, **factories):
            seen["config"], seen["reloaded"] = config, load()

        def run(self) -> int:
            return 0

    class Ctx:
        def config(self, **more):
            return Config()

    monkeypatch.setattr(daemon, "Daemon", FakeDaemon)
    args = serve.argparse.Namespace(serve_config=None, source=None, input=None, output=None, api=None, no_api=True)
    assert serve.run(args, Ctx()) == 0
    assert seen["config"].io.existing_output == "rename" == seen["reloaded"].io.existing_output


def test_swap_image_refuses_before_loading_models(tmp_path: Path) -> None:
    face = tmp_path / "face.png"
    target = tmp_path / "target.png"
    for path in (face, target):
        write_image(path, np.full((64, 64, 3), 100, np.uint8))
    before = digest(target)
    cases = [
        (["-o", "/nonexistent-h12b/dir/x.png"], "folder /nonexistent-h12b/dir does not exist"),
        (["-o", str(target)], "is also read by this run"),
        (["-o", str(target), "-y"], "is also read by this run"),
        (["-o", str(face), "-y"], "is also read by this run"),
        (["-o", str(tmp_path)], "is also read by this run"),  # folder: tmp/target.png again
    ]
    for extra, expected in cases:
        result = cli("swap-image", "-s", str(face), "-t", str(target), *extra)
        assert result.returncode != 0 and expected in result.stderr, (extra, result.stderr)
    assert not Path("/nonexistent-h12b").exists()
    existing = tmp_path / "out.png"
    existing.write_bytes(b"precious")
    result = cli("swap-image", "-s", str(face), "-t", str(target), "-o", str(existing))
    assert result.returncode != 0 and "already exists; pass -y/--overwrite" in result.stderr
    assert existing.read_bytes() == b"precious" and digest(target) == before
    # Folder mode: an output folder that is the target folder would overwrite the targets.
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "a.png", np.full((64, 64, 3), 100, np.uint8))
    result = cli("swap-image", "-s", str(face), "-t", str(photos), "-o", str(photos), "-y")
    assert result.returncode != 0 and "is also read by this run" in result.stderr
    result = cli("swap-image", "-s", str(face), "-t", str(photos), "-o", "/nonexistent-h12b/a/b")
    assert result.returncode != 0 and "does not exist; create it first" in result.stderr
    assert not Path("/nonexistent-h12b").exists()
