"""The CPU thread budget: threads per pool from the cores and the compute stages, config
overrides kept, and the chosen numbers reaching ONNX Runtime, OpenCV and the encoder."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from streamswap.pipeline.cpu_budget import _cgroup_cpu_limit, plan_cpu_budget, usable_cores


@pytest.mark.parametrize(
    "cores, stages, intra, io",
    [
        (1, 2, 1, 1),  # fewer cores than stages: one thread each, never zero
        (2, 2, 1, 1),  # the 2-core machine: detect and swap one core each, no spare for I/O
        (4, 2, 1, 1),  # a core kept for decode/encode, the rest shared
        (8, 2, 3, 2),
        (16, 2, 6, 4),
        (8, 1, 6, 2),
    ],
)
def test_cores_are_shared_among_compute_stages(cores, stages, intra, io) -> None:
    budget = plan_cpu_budget(cores, stages)
    assert (budget.intra_op_threads, budget.opencv_threads) == (intra, intra)
    assert (budget.encoder_threads, budget.decoder_threads) == (io, io)
    assert budget.spinning is False
    # the compute stages never get more threads than there are cores
    assert budget.intra_op_threads * stages <= max(cores, stages)


def test_a_pipeline_without_models_gives_io_every_core() -> None:
    budget = plan_cpu_budget(4, 0)
    assert budget.encoder_threads == 4 and budget.decoder_threads == 4


def test_config_overrides_are_kept() -> None:
    budget = plan_cpu_budget(2, 2, intra_op_threads=4, spinning=True, encoder_threads=3, decoder_threads=2)
    assert (budget.intra_op_threads, budget.spinning, budget.encoder_threads, budget.decoder_threads) == (4, True, 3, 2)
    assert "ORT 4 thread(s)/session, spinning on" in budget.describe()


def test_cgroup_quota_caps_the_cores(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert _cgroup_cpu_limit(str(cpu_max)) == 2  # 1.5 cores: rounded up
    cpu_max.write_text("max 100000\n")
    assert _cgroup_cpu_limit(str(cpu_max)) is None
    assert _cgroup_cpu_limit(str(tmp_path / "missing")) is None
    assert usable_cores() >= 1


def test_apply_cpu_budget_resolves_the_config_and_sizes_opencv() -> None:
    from streamswap.config import load_config
    from streamswap.wiring import apply_cpu_budget

    before = cv2.getNumThreads()
    try:
        config = load_config(None, {"io.encoder_threads": 3})
        resolved = apply_cpu_budget(config, 2, cores=2)
        assert resolved.inference.threads == 1 and resolved.io.decoder_threads == 1
        assert resolved.io.encoder_threads == 3  # the override stays
        assert config.inference.threads == 0  # the loaded config is not changed
        assert cv2.getNumThreads() == 1
        assert apply_cpu_budget(config, 0, cores=4).io.decoder_threads == 4
    finally:
        cv2.setNumThreads(before)


def test_ort_sessions_get_the_budget(tmp_path: Path) -> None:
    from streamswap.bench.synthetic import make_arcface_model
    from streamswap.inference.ort import open_ort_session
    from streamswap.inference.settings import InferenceSettings

    model = make_arcface_model(tmp_path / "arc.onnx")
    for threads, spin in ((1, False), (2, True)):
        session = open_ort_session(model, InferenceSettings(provider="cpu", threads=threads, allow_spinning=spin))
        options = session._session.get_session_options()
        assert options.intra_op_num_threads == threads and options.inter_op_num_threads == 1
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            assert options.get_session_config_entry(key) == ("1" if spin else "0")
