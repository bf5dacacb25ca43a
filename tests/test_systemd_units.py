"""The systemd units: `systemd-analyze verify` clean (no warnings on stderr) with ExecStart
pointing at the installed console script, and hardening exposure ≤ 3.0."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

UNITS = ("streamswap.service", "streamswap@.service")
SHIPPED_EXEC = "/usr/local/bin/streamswap"


def console_script() -> Path | None:
    """The installed `streamswap` entry point of the Python running the tests."""
    beside = Path(sys.executable).with_name("streamswap")
    if beside.exists():
        return beside
    found = shutil.which("streamswap")
    return Path(found) if found else None


@pytest.fixture(scope="module")
def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    require(tool is not None, "systemd-analyze (apt-get install systemd)")
    return str(tool)


@pytest.fixture(scope="module")
def installed(tmp_path_factory, repo_root) -> Path:
    """The units as the README installs them, with ExecStart at this environment's script
    (the README links /usr/local/bin/streamswap to the venv's script)."""
    script = console_script()
    require(script is not None, "the streamswap console script (pip install -e .)")
    dest = tmp_path_factory.mktemp("units")
    for name in UNITS:
        text = (repo_root / "systemd" / name).read_text()
        assert f"ExecStart={SHIPPED_EXEC} serve " in text
        (dest / name).write_text(text.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={script} "))
    return dest


def unit_paths(dest: Path) -> list[Path]:
    # A template is verified through an instance name; the file is found next to it.
    return [dest / "streamswap.service", dest / "streamswap@cam0.service"]


def test_verify_has_no_warnings(analyze, installed):
    for unit in unit_paths(installed):
        proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.strip() == "", f"{unit.name}: {proc.stderr}"


def test_verify_catches_a_broken_exec_start(analyze, tmp_path, installed):
    # The check above can fail: the same call flags an ExecStart that does not exist.
    text = (installed / "streamswap.service").read_text()
    bad = tmp_path / "streamswap.service"
    bad.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/nonexistent/streamswap", text, flags=re.M))
    proc = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "/nonexistent/streamswap" in proc.stderr


def test_exec_start_runs_the_installed_console_script(installed):
    for name in UNITS:
        line = next(l for l in (installed / name).read_text().splitlines() if l.startswith("ExecStart="))
        exe, *args = line.removeprefix("ExecStart=").split()
        assert Path(exe) == console_script()
        assert args[:2] == ["serve", "--config"]
        proc = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "--api HOST:PORT" in proc.stdout
    template = (installed / "streamswap@.service").read_text()
    assert "--config /etc/streamswap/%i.yaml" in template


def test_security_exposure_at_most_3(analyze, installed):
    for unit in unit_paths(installed):
        proc = subprocess.run(
            [analyze, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60
        )
        match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
        assert match, proc.stdout + proc.stderr
        assert float(match.group(1)) <= 3.0, proc.stdout


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


@pytest.mark.parametrize("name", UNITS)
def test_unit_keeps_gpu_and_camera_access(repo_root, name):
    d = directives((repo_root / "systemd" / name).read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["WatchdogSec"] and d["Restart"] == ["on-failure"] and d["StartLimitBurst"]
    assert d["TimeoutStartSec"] == ["30min"]
    # Every instance (a template's too) starts after the Jetson clocks are set, where that unit exists.
    assert "jetson-clocks.service" in " ".join(d["After"]).split()
    assert d["DynamicUser"] == ["yes"] and d["StateDirectory"] and d["CacheDirectory"]
    assert d["SupplementaryGroups"] == ["video render"]
    # An allow-list instead of PrivateDevices=, which would hide the GPU and the cameras.
    assert "PrivateDevices" not in d and d["DevicePolicy"] == ["closed"]
    allowed = " ".join(d["DeviceAllow"])
    for dev in ("/dev/nvidiactl", "/dev/nvidia-uvm", "char-nvidia*", "char-video4linux"):
        assert dev in allowed
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ):
        assert d[key] == [value]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "MemoryDenyWriteExecute" not in d  # CUDA/ORT need W+X mappings (see the unit's note)


@pytest.fixture(scope="module")
def clocks_unit(tmp_path_factory, repo_root) -> Path:
    """jetson-clocks.service with its two tools replaced by stub executables (they exist on a
    Jetson only), so `verify` checks the rest of the unit here."""
    dest = tmp_path_factory.mktemp("clocks")
    text = (repo_root / "systemd" / "jetson-clocks.service").read_text()
    for tool in ("/usr/bin/jetson_clocks", "/usr/sbin/nvpmodel"):
        stub = dest / Path(tool).name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
        assert tool in text
        text = text.replace(tool, str(stub))
    (dest / "jetson-clocks.service").write_text(text)
    return dest / "jetson-clocks.service"


def test_jetson_clocks_unit_is_hardened(analyze, clocks_unit, repo_root):
    # A root oneshot that only writes clocks under /sys: exposure was 9.6 (UNSAFE) unhardened.
    proc = subprocess.run([analyze, "verify", str(clocks_unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    proc = subprocess.run(
        [analyze, "security", "--offline=yes", str(clocks_unit)], capture_output=True, text=True, timeout=60
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.5, proc.stdout
    d = directives((repo_root / "systemd" / "jetson-clocks.service").read_text())
    # What setting clocks needs must stay: /sys writable, /proc/device-tree readable,
    # nvpmodel's state folder writable, the saved clocks outside the hidden $HOME.
    assert "ProtectKernelTunables" not in d and "ProcSubset" not in d and "PrivateUsers" not in d
    assert d["ReadWritePaths"] == ["-/var/lib/nvpmodel"] and d["StateDirectory"] == ["jetson-clocks"]
    assert all("/var/lib/jetson-clocks/" in v for v in d["ExecStartPre"] + d["ExecStop"])
    assert d["PrivateNetwork"] == ["yes"] and d["NoNewPrivileges"] == ["yes"]
