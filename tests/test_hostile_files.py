"""Hostile files at every entry point that reads one: lying image headers and decompression
bombs, special files (FIFOs, /dev/zero, sockets), YAML bombs. Each is refused with a
one-line error, quickly, without the memory it asks for."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hostile_files import billion_laughs, lying_tiff

from streamswap.config import load_config
from streamswap.errors import ConfigError, InputError
from streamswap.files import read_regular
from streamswap.io.images import decode_image, read_header, read_image, write_image
from streamswap.io.settings import IoSettings
from streamswap.io.uri import open_source

REPO = Path(__file__).resolve().parent.parent


# --- images -----------------------------------------------------------------------------


def test_tiff_with_two_size_tags_is_refused_from_its_header() -> None:
    data = lying_tiff(real=(2000, 2000), claimed=(64, 64))
    with pytest.raises(InputError, match="two width tags"):
        read_header(data, "bomb.tif")
    with pytest.raises(InputError, match="bomb.tif: TIFF with two width tags"):
        decode_image(data, name="bomb.tif")


def _run_isolated(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (streamswap imported first, as the CLI does)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    env.pop("OPENCV_IO_MAX_IMAGE_PIXELS", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, env=env
    )


def test_the_decoder_itself_refuses_a_bomb_our_header_parse_missed() -> None:
    # Our header parser is made to believe the 390 KB file is 64×64 (as a parser with any
    # bug would): OpenCV's own cap must still refuse the 20000×20000 decode before it
    # allocates 1.2 GB, and the process stays small.
    result = _run_isolated("""
        import streamswap.io.images as images
        from hostile_files import lying_tiff
        from streamswap.errors import InputError
        data = lying_tiff(real=(20000, 20000), claimed=(64, 64))
        images.read_header = lambda data, name="": images.ImageHeader("TIFF", 64, 64)
        try:
            images.decode_image(data, name="bomb.tif")
        except InputError as exc:
            print("refused:", exc)
        # VmHWM is this process's own peak; ru_maxrss carries pytest's over through exec.
        hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print("peak_mib", int(hwm.split()[1]) // 1024)
    """)
    assert result.returncode == 0, result.stderr
    assert "refused: bomb.tif: the TIFF data decodes to more than 50 megapixels" in result.stdout
    peak = int(result.stdout.split("peak_mib")[1])
    assert peak < 400, f"peak RSS {peak} MiB while refusing a 20000×20000 TIFF"


def test_decoded_size_is_checked_against_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    import streamswap.io.images as images

    ok, png = cv2.imencode(".png", np.zeros((300, 400, 3), np.uint8))
    assert ok
    # A header parse that under-reads (40×40) must not let a larger decode through.
    monkeypatch.setattr(images, "read_header", lambda data, name="": images.ImageHeader("PNG", 40, 40))
    with pytest.raises(InputError, match="decodes to 400×300 although its header says 40×40"):
        decode_image(png.tobytes(), name="x.png")


# --- special files ----------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def test_read_regular_refuses_fifo_device_socket_folder_and_oversize(tmp_path: Path, fifo: Path) -> None:
    started = time.monotonic()
    with pytest.raises(InputError, match=r"pipe: is a FIFO \(named pipe\), not a regular file"):
        read_regular(fifo, 1000, what="image file")
    with pytest.raises(InputError, match="/dev/zero: is a character device"):
        read_regular("/dev/zero", 1000)
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(InputError, match="is a socket"):
            read_regular(sock_path, 1000)
    with pytest.raises(InputError, match="is a folder"):
        read_regular(tmp_path, 1000)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(2000))
    with pytest.raises(InputError, match="over the limit"):
        read_regular(big, 1000)
    assert read_regular(big, 2000) == bytes(2000)
    assert time.monotonic() - started < 5  # nothing blocked


def test_images_configs_and_inputs_refuse_special_files(tmp_path: Path, fifo: Path) -> None:
    with pytest.raises(InputError, match="FIFO"):
        read_image(fifo)
    with pytest.raises(InputError, match="character device"):
        read_image("/dev/zero")
    with pytest.raises(ConfigError, match="character device"):
        load_config("/dev/zero")
    with pytest.raises(ConfigError, match="FIFO"):
        load_config(fifo)
    # A FIFO input is said to be one (it exists), not "does not exist".
    with pytest.raises(InputError, match=r"is a FIFO \(named pipe\), not a video file"):
        open_source(str(fifo), IoSettings())
    with pytest.raises(InputError, match="does not exist"):
        open_source(str(tmp_path / "missing.mp4"), IoSettings())


def test_source_identity_hash_does_not_read_a_device() -> None:
    from streamswap.faces.identity import identity_hash

    started = time.monotonic()
    assert identity_hash(["/dev/zero"], None)  # returns; read_image reports the device later
    assert time.monotonic() - started < 2


def test_calibration_folder_skips_special_files(tmp_path: Path) -> None:
    from streamswap.faces.calibration import load_images

    write_image(tmp_path / "a.png", np.full((64, 64, 3), 128, np.uint8))
    os.mkfifo(tmp_path / "b.jpg")
    os.symlink("/dev/zero", tmp_path / "c.png")
    images = load_images(tmp_path)
    assert len(images) == 1 and images[0].shape == (64, 64, 3)


def test_cli_special_files_are_one_line_errors(tmp_path: Path, fifo: Path) -> None:
    env = {**os.environ, "STREAMSWAP_CONFIG": "", "PYTHONPATH": str(REPO)}
    cases = [
        (["-c", "/dev/zero", "run", "-i", "test://?frames=2", "-o", "null://"], "/dev/zero: is a character device"),
        (["-c", str(fifo), "run", "-i", "test://?frames=2", "-o", "null://"], "is a FIFO"),
        (["run", "-i", str(fifo), "-o", "null://"], "is a FIFO (named pipe), not a video file"),
    ]
    for args, expected in cases:
        result = subprocess.run(
            [sys.executable, "-m", "streamswap", "--log-level", "ERROR", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0 and len(lines) == 1 and expected in lines[0], (args, result.stderr)


# --- YAML ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["input", "models.dir", "source", "faces.swapper"])
def test_billion_laughs_is_refused_quickly(tmp_path: Path, key: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs(key))
    assert path.stat().st_size < 1000
    started = time.monotonic()
    with pytest.raises(ConfigError, match="billion laughs"):
        load_config(path)
    assert time.monotonic() - started < 2


def test_deep_nesting_duplicate_keys_and_recursive_aliases_are_config_errors(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("input: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ConfigError, match="nested more than 64 levels"):
        load_config(deep)
    deep_block = tmp_path / "deep_block.yaml"
    deep_block.write_text("".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "x: 1\n")
    with pytest.raises(ConfigError, match="nested more than"):
        load_config(deep_block)
    dup = tmp_path / "dup.yaml"
    dup.write_text("input: a.mp4\noutputs: [null://]\ninput: b.mp4\n")
    with pytest.raises(ConfigError, match=r"line 3, column 1: duplicate key 'input' \(first given at line 1"):
        load_config(dup)
    loop = tmp_path / "loop.yaml"
    loop.write_text("source: &a [*a]\n")
    with pytest.raises(ConfigError, match="recursive"):
        load_config(loop)


def test_a_few_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("source: &faces [a.jpg, b.jpg]\nio: &io {width: 640, height: 360}\npipeline:\n  <<: {}\n")
    config = load_config(path)
    assert config.source == ["a.jpg", "b.jpg"] and config.io.width == 640


def test_error_messages_truncate_long_values(tmp_path: Path) -> None:
    path = tmp_path / "long.yaml"
    path.write_text("input: [" + ", ".join(["x" * 100] * 1000) + "]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(str(info.value)) < 300 and "…" in str(info.value)
    path.write_text("? " + "y" * 10_000 + "\n: 1\n")  # an explicit (unlimited-length) key
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "unknown key" in str(info.value) and len(str(info.value)) < 400


def test_config_size_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="over the limit"):
        load_config(path)


def test_a_reload_parses_off_the_control_lock_with_a_deadline(tmp_path: Path) -> None:
    import threading

    from streamswap.config import Config
    from streamswap.service.daemon import Daemon

    release = threading.Event()

    def stuck_load() -> Config:  # a config read that never finishes (a stuck mount, …)
        release.wait(30)
        return Config()

    from streamswap.commands import serve

    daemon = Daemon(
        Config(),
        stuck_load,
        build_stages=serve.build_stages,
        make_pipeline=serve.make_pipeline,
        check_endpoints=serve.check_endpoints,
        environ={},
    )
    daemon.reload_deadline_s = 0.3
    started = time.monotonic()
    holder = threading.Thread(target=lambda: pytest.raises(ConfigError, daemon.reload))
    holder.start()
    time.sleep(0.1)
    # While the reload waits for its config, every control call can still take the lock.
    assert daemon._lock.acquire(timeout=0.05)
    daemon._lock.release()
    holder.join(5)
    assert not holder.is_alive() and time.monotonic() - started < 2
    with pytest.raises(ConfigError, match="did not load within 0.3 s; keeping the running configuration"):
        daemon.reload()
    release.set()
    # A bomb in the reloaded file is refused quickly, the old config kept.
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs("source"))
    old = daemon.config
    daemon._load_config = lambda: load_config(bomb)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="billion laughs"):
        daemon.reload()
    assert time.monotonic() - started < 2 and daemon.config is old


def test_special_source_photos_are_named_before_models_load(fifo: Path) -> None:
    env = {**os.environ, "STREAMSWAP_CONFIG": "", "PYTHONPATH": str(REPO)}
    for command in (
        ["run", "-s", str(fifo), "-i", "test://?frames=2", "-o", "null://"],
        ["swap-image", "-s", "/dev/zero", "-t", "/dev/zero", "-o", "/tmp/unused-h12b.png"],
        ["run", "--size", "1x1", "-i", "test://?frames=2", "-o", "null://"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "streamswap", "--log-level", "WARNING", *command],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0 and len(lines) == 1, (command, result.stderr)
        assert "face stages" not in result.stderr  # nothing was loaded first
        assert any(word in lines[0] for word in ("FIFO", "character device", "16 to 8192")), lines[0]


def test_only_plain_data_types_and_convertible_values(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    cases = [
        ("io:\n  width: " + "1" * 5000 + "\n", "line 2, column 10: cannot read this value"),
        ('io:\n  width: !!binary "AAAA"\n', "the YAML tag '!!binary' is not allowed"),
        ("source: !!set {a, b}\n", "the YAML tag '!!set' is not allowed"),
        ("input: !!python/object:os.system ls\n", "is not allowed in a configuration"),
    ]
    for text, expected in cases:
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(expected)):
            load_config(path)
    path.write_text("input: 2001-12-14\n")  # looks like a date, is a file name
    assert load_config(path).input == "2001-12-14"
