"""The command line as people use it: global flags after the command, video flags, what
run does without -i/-o, examples in every --help, the model commands' habits, cameras,
progress, and `doctor -c` judging a config."""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from io_media import make_video

from streamswap import cli
from streamswap.commands.progress import ProgressPrinter, StatsPrinter, format_duration


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STREAMSWAP_CONFIG", "STREAMSWAP_MODELS_DIR", "STREAMSWAP_MODELS_MIRROR")
    }
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "streamswap", *args], capture_output=True, text=True, env=base, cwd=cwd, timeout=timeout
    )


# -- parsing --------------------------------------------------------------------------


def test_global_flags_are_accepted_after_the_command() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["run", "-c", "x.yaml", "--debug", "--log-level", "warning", "-i", "test://"])
    assert (args.config, args.debug, args.log_level, args.input) == ("x.yaml", True, "WARNING", "test://")
    args = parser.parse_args(["models", "list", "--models-dir", "/m", "--config", "y.yaml"])
    assert (args.models_dir, args.config, args.debug) == ("/m", "y.yaml", False)
    # Before the command still works, and a value after it wins.
    args = parser.parse_args(["-c", "a.yaml", "--debug", "doctor", "-c", "b.yaml"])
    assert (args.config, args.debug) == ("b.yaml", True)
    args = parser.parse_args(["--log-level", "ERROR", "engines", "list"])
    assert (args.config, args.log_level, args.debug) == (None, "ERROR", False)


def test_config_after_the_command_is_used(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("pipeline:\n  queue_size: 0\n")
    result = run_cli("doctor", "-c", str(config))
    assert result.returncode == 2
    assert "pipeline.queue_size: must be between 1 and 64" in result.stderr


def _all_parsers(
    parser: argparse.ArgumentParser, prog: str = "streamswap"
) -> list[tuple[str, argparse.ArgumentParser]]:
    parser.format_help()  # builds a lazily populated command's options and actions
    found = [(prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _all_parsers(child, f"{prog} {name}")
    return found


def test_every_command_and_action_has_a_description_and_examples() -> None:
    parsers = _all_parsers(cli.build_parser())
    names = {prog for prog, _ in parsers}
    for expected in (
        "streamswap cameras",
        "streamswap models list",
        "streamswap models path",
        "streamswap models verify",
        "streamswap engines list",
        "streamswap engines clear",
        "streamswap bench faces",
    ):
        assert expected in names
    for prog, parser in parsers:
        text = parser.format_help()
        assert "\nexamples:\n  " in text, f"{prog} --help has no examples"
        examples = text.split("\nexamples:\n", 1)[1]
        assert f"  {prog.split()[0]}" in examples or "streamswap" in examples, prog
        if prog != "streamswap":
            assert parser.description and len(parser.description) > 20, f"{prog} has no description"
            # The examples of an action run that action.
            assert prog in examples or prog.rsplit(" ", 1)[0] in examples, (prog, examples)


def test_video_flags_become_config_overrides() -> None:
    from streamswap.commands.options import parse_bitrate, video_overrides
    from streamswap.errors import InputError

    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--size", "1280x720", "--fps", "25", "--encoder", "libx264", "--bitrate", "6M"])
    assert video_overrides(args) == {
        "io.width": 1280,
        "io.height": 720,
        "io.fps": 25.0,
        "io.encoder": "libx264",
        "io.bitrate_kbps": 6000,
    }
    assert parse_bitrate("4500k") == parse_bitrate("4500") == 4500
    for bad in ("1280", "1281x720", "axb"):
        with pytest.raises(InputError, match="--size"):
            video_overrides(parser.parse_args(["run", "--size", bad]))
    with pytest.raises(InputError, match="--bitrate"):
        video_overrides(parser.parse_args(["run", "--bitrate", "fast"]))
    with pytest.raises(InputError, match="give one"):
        video_overrides(parser.parse_args(["run", "--bitrate", "2M", "--crf", "18"]))
    assert video_overrides(parser.parse_args(["run", "--crf", "18"])) == {"io.crf": 18}
    result = run_cli("run", "--encoder", "x265")
    assert result.returncode != 0 and "--encoder x265: use one of auto, libx264" in result.stderr


# -- run: files, rates, defaults --------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 30 fps with audio."""
    return make_video(tmp_path_factory.mktemp("clip") / "in.mp4", frames=60, fps=30, size=(320, 240))


def _video_facts(path: Path) -> tuple[int, Fraction, float, tuple[int, int]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        duration = float((frames[-1].pts - frames[0].pts) * stream.time_base)
        return len(frames), stream.average_rate, duration, (frames[0].width, frames[0].height)


@pytest.mark.parametrize("fps, frames", [(10, 20), (60, 120)])
def test_fps_and_size_are_honoured_for_files(clip: Path, tmp_path: Path, fps: int, frames: int) -> None:
    out = tmp_path / "out.mp4"
    result = run_cli(
        "run",
        "-i",
        str(clip),
        "-o",
        str(out),
        "--fps",
        str(fps),
        "--size",
        "160x120",
        "--bitrate",
        "300k",
        "--encoder",
        "libx264",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    count, rate, duration, size = _video_facts(out)
    assert size == (160, 120)
    assert rate == fps
    # Same duration as the input (2 s), at the new rate: frames dropped or repeated by time.
    assert abs(count - frames) <= 1, (count, frames)
    assert abs(duration - (count - 1) / fps) < 0.01, duration  # evenly spaced at the new rate
    assert abs(duration - 59 / 30) <= 1 / fps, duration  # the input's 59 frame intervals
    assert "converted_from_fps=30" in result.stderr


def test_bitrate_is_honoured_for_file_outputs(tmp_path: Path) -> None:
    """Files are encoded at constant quality (io.crf) unless --bitrate asks for a rate."""
    rng = np.random.default_rng(7)
    noise = make_video(
        tmp_path / "noise.mp4",
        frames=30,
        fps=30,
        size=(320, 240),
        audio=False,
        picture=lambda i, w, h: rng.integers(0, 256, (h, w, 3), np.uint8),
    )
    sizes = {}
    for name, flags in (("rate", ["--bitrate", "150k"]), ("quality", ["--crf", "20"])):
        out = tmp_path / f"{name}.mp4"
        result = run_cli("run", "-i", str(noise), "-o", str(out), "--quiet", "--encoder", "libx264", *flags)
        assert result.returncode == 0, result.stderr
        sizes[name] = out.stat().st_size
    # One second at 150 kbit/s is ~19 kB (x264 may overshoot a little on noise).
    assert sizes["rate"] < 19_000 * 2, sizes
    assert sizes["quality"] > 3 * sizes["rate"], sizes  # the test can tell the two apart


def test_a_file_input_without_output_is_refused_with_the_fix(clip: Path) -> None:
    result = run_cli("run", "-i", str(clip))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("streamswap run: error: no output given: ")
    assert "-o out.mp4" in result.stderr and "-o null://" in result.stderr


def test_the_endless_test_pattern_into_a_file_is_refused(tmp_path: Path) -> None:
    result = run_cli("run", "-o", str(tmp_path / "x.mp4"))
    assert result.returncode != 0 and "no input given" in result.stderr and "frames=300" in result.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_run_without_input_or_output_says_what_it_uses(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("STREAMSWAP_CONFIG",)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamswap", "run"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        seen = []
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "pipeline started" in line:
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(seen)
    assert "no -i given: using the input test://" in text
    assert "no -o given: frames go to null:// and are discarded" in text
    assert proc.returncode == 0, text + rest


def test_test_pattern_into_a_file_is_not_paced_and_drops_nothing(tmp_path: Path) -> None:
    out = tmp_path / "t.mp4"
    result = run_cli("run", "-i", "test://?frames=45&width=160&height=120", "-o", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "live=False" in result.stderr
    assert "run: 45 frames out of 45 read, 0 dropped" in result.stderr
    assert _video_facts(out)[0] == 45


# -- progress --------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _snap(out: int) -> dict:
    return {
        "frames_in": out,
        "frames_out": out,
        "dropped": 0,
        "fps_in": 30.0,
        "fps_out": 30.0,
        "latency_ms_p50": 40.0,
        "latency_ms_p95": 50.0,
        "stage_ms": {},
        "errors": {},
        "reconnects": {},
    }


def test_progress_without_a_terminal_is_a_log_line_every_ten_seconds(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    printer = ProgressPrinter(lambda: 1000, io.StringIO(), clock=clock)
    caplog.set_level("INFO", logger="streamswap.commands.progress")
    for second in range(1, 26):  # a snapshot a second for 25 s, 20 frames a second
        clock.now = float(second)
        printer.show(_snap(20 * second))
    records = [r for r in caplog.records if r.getMessage().startswith("progress")]
    assert len(records) == 3, [r.getMessage() for r in records]  # at 1 s, 11 s, 21 s
    last = records[-1].kv  # type: ignore[attr-defined]
    assert (last["percent"], last["frames"], last["fps"], last["eta"]) == (42.0, "420/1000", 20.0, "29s")
    # A live run (no frame count) logs its stats line as rarely.
    stats = StatsPrinter(io.StringIO(), clock=clock)
    caplog.clear()
    for _ in range(5):
        clock.now += 1
        stats.show(_snap(1))
    assert len([r for r in caplog.records if r.getMessage() == "stats"]) == 1


def test_progress_on_a_terminal_is_a_bar_with_percent_fps_and_eta() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    printer = ProgressPrinter(lambda: 300, stream, label="run")
    printer.show(_snap(30))
    printer.show(_snap(150))
    printer.done()
    text = stream.getvalue()
    assert "50%" in text and "150/300" in text and "frame/s" in text and "<" in text  # elapsed<ETA
    assert "drops 0" in text
    assert format_duration(3723) == "1h02m03s" and format_duration(65) == "1m05s"


# -- models ----------------------------------------------------------------------------


def test_models_path_marks_an_absent_file(tmp_path: Path) -> None:
    result = run_cli("models", "path", "inswapper_128", "--models-dir", str(tmp_path))
    assert result.returncode == 0
    assert result.stdout == f"{tmp_path / 'inswapper_128.onnx'}\n"
    assert "is absent: run `streamswap models fetch inswapper_128`" in result.stderr
    (tmp_path / "inswapper_128.onnx").write_bytes(b"x")
    present = run_cli("models", "path", "inswapper_128", "--models-dir", str(tmp_path))
    assert present.stderr == ""


def test_models_list_files_shows_what_a_mirror_holds(tmp_path: Path) -> None:
    from streamswap.models.catalogue import all_specs

    result = run_cli("models", "list", "--files", env={"STREAMSWAP_MODELS_MIRROR": "/srv/mirror"})
    assert result.returncode == 0, result.stderr
    assert "mirror now: /srv/mirror" in result.stdout
    for spec in all_specs():
        if not spec.bundled:
            assert f" {spec.file} " in result.stdout
            if spec.sha256:
                assert spec.sha256 in result.stdout
    flag = run_cli(
        "models", "list", "--files", "--mirror", "/media/usb", env={"STREAMSWAP_MODELS_MIRROR": "/srv/mirror"}
    )
    assert "mirror now: /media/usb" in flag.stdout


def test_mirror_from_the_environment_is_fetched_from(tmp_path: Path) -> None:
    import hashlib

    from streamswap.models.catalogue import ModelSpec, build_catalogue
    from streamswap.models.settings import ModelsSettings
    from streamswap.models.store import MIRROR_ENV, ModelStore

    payload = b"model bytes" * 100
    mirror = tmp_path / "usb"
    mirror.mkdir()
    (mirror / "tiny.onnx").write_bytes(payload)
    spec = ModelSpec(
        name="tiny",
        role="swapper",
        file="tiny.onnx",
        urls=(),
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        license="MIT",
        commercial=True,
        contract="inswapper",
        inputs="x",
        outputs="y",
    )
    store = ModelStore(
        ModelsSettings(dir=str(tmp_path / "models")), build_catalogue([spec]), environ={MIRROR_ENV: str(mirror)}
    )
    status, result = store.fetch("tiny")
    assert status.usable and result is not None and result.url.startswith("file://")
    # The config's mirror wins over the environment's.
    other = ModelStore(
        ModelsSettings(dir=str(tmp_path), mirror="/cfg"), build_catalogue([spec]), environ={MIRROR_ENV: str(mirror)}
    )
    assert other.settings.mirror == "/cfg"


def test_a_mistyped_model_name_gets_a_suggestion() -> None:
    result = run_cli("models", "path", "inswaper_128")
    assert result.returncode != 0
    assert "unknown model 'inswaper_128' (did you mean inswapper_128" in result.stderr


def test_every_missing_model_is_named_at_once(tmp_path: Path) -> None:
    config = tmp_path / "neural.yaml"
    config.write_text("faces:\n  swapper:\n    model: inswapper_128\n  enhancer: gfpgan_1.4\n")
    import cv2

    cv2.imwrite(str(tmp_path / "face.jpg"), np.full((64, 64, 3), 128, np.uint8))  # read after the models
    result = run_cli(
        "run",
        "-c",
        str(config),
        "-s",
        str(tmp_path / "face.jpg"),
        "-i",
        "test://?frames=1",
        "-o",
        "null://",
        "--models-dir",
        str(tmp_path / "models"),
    )
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    for name in ("inswapper_128", "arcface_w600k_r50", "gfpgan_1.4"):
        assert name in line, line
    assert "3 model files are missing" in line
    assert "streamswap models fetch " in line


# -- cameras ----------------------------------------------------------------------------


def test_cameras_lists_v4l2_devices_with_formats(tmp_path: Path) -> None:
    from streamswap.io.cameras import CAP_VIDEO_CAPTURE, CAP_VIDEO_OUTPUT, CameraFormat, list_v4l2

    sys_root = tmp_path / "sys"
    for node, name in (("video0", "HD Webcam C920"), ("video1", "HD Webcam C920"), ("video10", "streamswap")):
        (sys_root / "class" / "video4linux" / node).mkdir(parents=True)
        (sys_root / "class" / "video4linux" / node / "name").write_text(name + "\n")
    asked = []

    def probe(device: str):
        asked.append(device)
        if device.endswith("video0"):
            return (
                ("uvcvideo", "HD Webcam C920", "usb-0000:00:14.0-1", CAP_VIDEO_CAPTURE),
                [CameraFormat("MJPG", "Motion-JPEG", ["1920x1080@30", "1280x720@60"])],
            )
        if device.endswith("video1"):  # the metadata node of the same camera
            return ("uvcvideo", "HD Webcam C920", "usb-0000:00:14.0-1", 0), []
        raise PermissionError(13, "Permission denied")

    cameras = list_v4l2(sys_root, tmp_path / "dev", probe=probe)
    assert [c.device for c in cameras] == [str(tmp_path / "dev" / n) for n in ("video0", "video1", "video10")]
    cam = cameras[0]
    assert cam.capture and cam.formats[0].ffmpeg_name == "mjpeg" and cam.uri == f"v4l2://{tmp_path}/dev/video0"
    assert not cameras[1].capture
    assert cameras[2].loopback and "video' group" in (cameras[2].problem or "")
    assert CAP_VIDEO_OUTPUT != CAP_VIDEO_CAPTURE


def test_cameras_parses_ffmpeg_device_listings() -> None:
    from streamswap.io.cameras import parse_ffmpeg_device_list

    mac = [
        "AVFoundation video devices:",
        "[0] FaceTime HD Camera",
        "[1] Capture screen 0",
        "AVFoundation audio devices:",
        "[0] MacBook Pro Microphone",
    ]
    found = parse_ffmpeg_device_list("avfoundation", mac)
    assert [(c.device, c.name, c.uri) for c in found] == [
        ("0", "FaceTime HD Camera", "avfoundation://0"),
        ("1", "Capture screen 0", "avfoundation://1"),
    ]
    win = [
        '"Integrated Camera" (video)',
        '  Alternative name "@device_pnp_\\\\?\\usb#vid"',
        '"Microphone Array" (audio)',
    ]
    assert [c.uri for c in parse_ffmpeg_device_list("dshow", win)] == ["dshow://Integrated Camera"]


def test_cameras_without_any_says_so(tmp_path: Path) -> None:
    if list(Path("/sys/class/video4linux").glob("video*")):
        pytest.skip("this machine has video devices")
    result = run_cli("cameras")
    assert result.returncode == 1
    assert result.stderr.startswith("no cameras found via video4linux") and "ls /dev/video*" in result.stderr


# -- doctor -c --------------------------------------------------------------------------


def test_doctor_with_a_tensorrt_config_fails_here_with_the_fix(tmp_path: Path) -> None:
    import importlib.util

    from conftest import cuda_available

    if importlib.util.find_spec("tensorrt") is not None and cuda_available():
        pytest.skip("TensorRT and a GPU are usable here")
    config = tmp_path / "trt.yaml"
    config.write_text("inference:\n  backend: tensorrt\n")
    result = run_cli("doctor", "-c", str(config), "--quiet")
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("FAIL") and " backend " in line)
    assert "inference.backend: tensorrt cannot run here" in lines[i]
    fix = lines[i + 1]
    root = Path(__file__).resolve().parent.parent
    assert f"-m pip install -e '{root}[tensorrt]'" in fix and "inference.backend: ort" in fix
    assert lines[-1].startswith("1 essential checks FAILED") or "FAILED" in lines[-1]
    # With a fallback the config still runs: a warning, exit 0 (if nothing else fails).
    config.write_text("inference:\n  backend: tensorrt\n  fallback: [cpu]\n")
    ok = run_cli("doctor", "-c", str(config), "--quiet")
    assert "WARN     backend" in ok.stdout and "falls back to ONNX Runtime cpu" in ok.stdout


def test_doctor_judges_the_configs_input_outputs_and_models(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"input: {tmp_path / 'missing.mp4'}\noutputs: [vcam://, out.avi]\n"
        "faces:\n  swapper:\n    model: inswapper_128\n"
    )
    result = run_cli(
        "doctor",
        "-c",
        str(config),
        "--quiet",
        "--models-dir",
        str(tmp_path / "m"),
        env={"XDG_CACHE_HOME": str(tmp_path)},
    )
    assert result.returncode == 1
    out = result.stdout
    assert "FAIL     input" in out and "missing.mp4: input file does not exist" in out
    assert "FAIL     output out.avi" in out and "unsupported output file type" in out
    assert "FAIL     model inswapper_128" in out and f"models fetch --for-config -c {config}" in out
    if not list(Path("/sys/class/video4linux").glob("video*")):
        assert "FAIL     output vcam://" in out


def test_doctor_with_a_triton_config_and_no_server_fails_with_the_fix(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "triton.yaml"
    config.write_text(f"inference:\n  backend: triton\n  triton:\n    url: 127.0.0.1:{port}\n")
    result = run_cli("doctor", "-c", str(config), "--quiet")
    assert result.returncode == 1, result.stdout
    assert "FAIL     triton server" in result.stdout and "does not answer" in result.stdout
    assert "streamswap triton export" in result.stdout


def test_demo_takes_the_overwrite_flag_its_refusal_names(tmp_path: Path) -> None:
    import importlib.util

    from conftest import require

    require(importlib.util.find_spec("insightface") is not None, "demo photos (the demo extra)")
    out = tmp_path / "demo.mp4"
    out.write_bytes(b"an older demo")
    args = ("demo", "-o", str(out), "--seconds", "0.2", "--size", "320x240")
    refused = run_cli(*args)
    assert refused.returncode != 0 and "pass -y/--overwrite" in refused.stderr
    done = run_cli(*args, "-y")
    assert done.returncode == 0, done.stderr
    assert _video_facts(out)[0] == 5
