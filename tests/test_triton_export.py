"""`streamswap triton export`: the repository's config.pbtxt files parse as Triton's own
ModelConfig and agree with the model files; writing is idempotent and never overwrites a
different repository without --force; tensorrt_plan says it needs the server's GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest
import yaml

from streamswap.cli import main

ORT_TO_TRITON = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(int64)": "TYPE_INT64"}


@pytest.fixture()
def config(bundled_models_dir: Path, tmp_path: Path) -> Path:
    from streamswap.bench.synthetic import make_arcface_model, make_swapper_model

    swapper = make_swapper_model(tmp_path / "my_swapper.onnx", size=128, batch_dynamic=True)
    arcface = make_arcface_model(tmp_path / "my_arcface.onnx")
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": {"dir": str(bundled_models_dir)},
                "inference": {"max_batch": 6, "triton": {"models": {"recognizer": {"name": "arcface_r50"}}}},
                "faces": {
                    "swapper": {"model": str(swapper), "contract": "inswapper"},
                    "recognizer": {"model": str(arcface), "contract": "arcface"},
                },
            }
        )
    )
    return path


def _parse(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    return text_format.Parse(path.read_text(), pb.ModelConfig())


def test_export_writes_configs_that_parse_and_agree_with_the_models(config, tmp_path, capsys) -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    repo = tmp_path / "repo"
    assert main(["triton", "export", "--repo", str(repo), "-c", str(config)]) == 0
    folders = sorted(p.name for p in repo.iterdir())
    # the recognizer under its configured name, the others under their file stems
    assert folders == ["arcface_r50", "blazeface_full_range", "facemesh_468", "my_swapper"]
    for name in folders:
        cfg = _parse(repo / name / "config.pbtxt")
        model = repo / name / "1" / "model.onnx"
        assert cfg.name == name and cfg.platform == "onnxruntime_onnx" and model.is_file()
        session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        batched = all(not isinstance(t.shape[0], int) for t in session.get_inputs() + session.get_outputs())
        assert cfg.max_batch_size == (6 if batched else 0)
        for declared, actual in ((cfg.input, session.get_inputs()), (cfg.output, session.get_outputs())):
            assert [t.name for t in declared] == [t.name for t in actual]
            for t, a in zip(declared, actual):
                assert pb.DataType.Name(t.data_type) == ORT_TO_TRITON[a.type]
                shape = [d if isinstance(d, int) else -1 for d in a.shape]
                assert list(t.dims) == (shape[1:] if batched else shape)
        if batched:
            assert list(cfg.dynamic_batching.preferred_batch_size) == [3, 6]
            assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
        else:
            assert not cfg.HasField("dynamic_batching")
        assert [(g.count, g.kind) for g in cfg.instance_group] == [(1, pb.ModelInstanceGroup.KIND_GPU)]
        (accel,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
        assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"
    assert "arcface_r50: written" in capsys.readouterr().out


def test_export_is_idempotent_and_refuses_a_different_repository(config, tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    args = ["triton", "export", "--repo", str(repo), "-c", str(config)]
    assert main(args) == 0
    stamp = {p: p.stat().st_mtime_ns for p in repo.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(args) == 0
    assert "my_swapper: unchanged" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in repo.rglob("*") if p.is_file()} == stamp

    # another batch size is another repository: refused, nothing touched, then --force
    assert main([*args, "--max-batch", "4"]) == 2
    err = capsys.readouterr().err
    assert "already holds a different repository" in err and "--force" in err and "Nothing was written" in err
    assert {p: p.stat().st_mtime_ns for p in repo.rglob("*") if p.is_file()} == stamp
    assert main([*args, "--max-batch", "4", "--force"]) == 0
    assert "my_swapper: replaced" in capsys.readouterr().out
    assert _parse(repo / "my_swapper" / "config.pbtxt").max_batch_size == 4

    # a folder of someone else's model under one of our names is refused too
    other = tmp_path / "other"
    (other / "facemesh_468" / "3").mkdir(parents=True)
    (other / "facemesh_468" / "3" / "model.savedmodel").write_text("not ours")
    assert main(["triton", "export", "--repo", str(other), "-c", str(config)]) == 2
    assert "facemesh_468 holds 3/model.savedmodel" in capsys.readouterr().err
    assert not (other / "my_swapper").exists()


def test_tensorrt_plan_needs_the_servers_gpu(config, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STREAMSWAP_CONFIG"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamswap",
            "triton",
            "export",
            "--repo",
            str(tmp_path / "r"),
            "-c",
            str(config),
            "--platform",
            "tensorrt_plan",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if result.returncode == 0:  # a machine with TensorRT and a GPU: the plans are there
        assert list((tmp_path / "r").glob("*/1/model.plan"))
        assert "the server must run this GPU model" in result.stderr
        return
    assert result.returncode == 2
    assert "builds the engines on the server's GPU" in result.stderr
    assert "--platform onnxruntime_onnx" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("inference.triton.url", "grpc://triton:8001", "inference.triton.url: host:port without a scheme"),
        ("inference.triton.models", {"swaper": {"name": "x"}}, "inference.triton.models.swaper: unknown role"),
        ("inference.triton.models", {"swapper": {"version": "latest"}}, "inference.triton.models.swapper.version"),
        ("inference.triton.protocol", "quic", "inference.triton.protocol: must be one of grpc, http"),
        ("inference.triton.timeout_s", 0, "inference.triton.timeout_s: must be between"),
        (
            "inference.triton.headers",
            {"x-token": "a\r\nInjected: 1"},
            "inference.triton.headers.x-token: a header value",
        ),
        ("inference.triton.headers", {"bad name": "v"}, "inference.triton.headers: 'bad name' is not a valid"),
    ],
)
def test_bad_triton_settings_name_their_key(key, value, message) -> None:
    from streamswap.config import load_config
    from streamswap.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(None, {key: value})


def test_tensorrt_plan_repository_from_the_engine_builder(config, tmp_path, monkeypatch, capsys) -> None:
    """With TensorRT here (a recording stand-in for the builder), each model folder gets the
    engine as model.plan and a config whose input dims are the engine profile's."""
    from types import SimpleNamespace

    from streamswap.inference import tensorrt
    from streamswap.inference.cuda import DeviceInfo

    built = []

    def fake_engine(request, cache, *, trt_version, device, build, **kw):
        assert build and trt_version == "10.3.0" and device.name == "Orin"
        built.append(request)
        engine = tmp_path / "engines" / f"{request.model_path.stem}.engine"
        engine.parent.mkdir(exist_ok=True)
        engine.write_bytes(b"plan of " + request.model_path.name.encode())
        return engine

    env = SimpleNamespace(version="10.3.0", device=DeviceInfo(0, "Orin", "8.7"))
    monkeypatch.setattr(tensorrt.TrtEnvironment, "detect", classmethod(lambda cls, *a, **k: env))
    monkeypatch.setattr(tensorrt, "ensure_engine", fake_engine)
    repo = tmp_path / "repo"
    assert main(["triton", "export", "--repo", str(repo), "-c", str(config), "--platform", "tensorrt_plan"]) == 0
    assert "the server must run this GPU model" in capsys.readouterr().err
    assert len(built) == 4 and all(r.precision == "fp16" for r in built)
    swapper = _parse(repo / "my_swapper" / "config.pbtxt")
    assert swapper.platform == "tensorrt_plan" and swapper.max_batch_size == 6
    assert not swapper.optimization.execution_accelerators.gpu_execution_accelerator  # ONNX Runtime only
    assert [list(i.dims) for i in swapper.input] == [[3, 128, 128], [512]]
    assert (repo / "my_swapper" / "1" / "model.plan").read_bytes() == b"plan of my_swapper.onnx"
    blaze = _parse(repo / "blazeface_full_range" / "config.pbtxt")
    assert blaze.max_batch_size == 0 and list(blaze.input[0].dims) == [1, 3, 192, 192]


def test_export_of_the_default_config_leaves_the_builtin_mesh_swapper_in_the_daemon(
    bundled_models_dir: Path, tmp_path: Path, capsys
) -> None:
    """The mesh swapper is code, not a graph: the repository holds the detector and the
    landmarker, and the export says why the swapper is not in it."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"models": {"dir": str(bundled_models_dir)}}))
    repo = tmp_path / "repo"
    assert main(["triton", "export", "--repo", str(repo), "-c", str(path)]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["blazeface_full_range", "facemesh_468"]
    assert "mesh: built in, not exported (no model file; the swapper runs in each daemon)" in capsys.readouterr().out
