"""plan_reload(old, new): what a reload applies live and what needs a restart, for each
kind of change (pure: no daemon, no threads)."""

from __future__ import annotations

import dataclasses

from streamswap.config import Config
from streamswap.service.daemon import ReloadPlan, plan_reload


def _changed(**values) -> Config:
    config = Config()
    for key, value in values.items():
        section, _, field = key.partition("__")
        if field:
            setattr(getattr(config, section), field, value)
        else:
            setattr(config, section, value)
    return config


def test_nothing_changed_plans_nothing() -> None:
    assert plan_reload(Config(), Config()) == ReloadPlan()


def test_source_photos_are_prepared_live() -> None:
    plan = plan_reload(Config(), _changed(source=["/photos/a.jpg", "/photos/b.jpg"]))
    assert plan.sources == ("/photos/a.jpg", "/photos/b.jpg")
    assert not plan.reopen_pipeline and plan.restart == ()


def test_an_emptied_source_keeps_the_identity_in_use() -> None:
    plan = plan_reload(_changed(source=["/photos/a.jpg"]), Config())
    assert plan.sources is None and plan == ReloadPlan()


def test_input_outputs_io_and_pipeline_reopen_the_pipeline() -> None:
    assert plan_reload(Config(), _changed(input="/videos/clip.mp4")).pipeline == ("input",)
    assert plan_reload(Config(), _changed(outputs=["rtmp://host/app/key"])).pipeline == ("outputs",)
    assert plan_reload(Config(), _changed(io__fps=25.0)).pipeline == ("io",)
    assert plan_reload(Config(), _changed(pipeline__queue_size=3)).pipeline == ("pipeline",)
    both = plan_reload(Config(), _changed(input="/videos/clip.mp4", outputs=["vcam://"]))
    assert both.pipeline == ("input", "outputs") and both.reopen_pipeline and both.restart == ()


def test_models_inference_and_faces_need_a_restart() -> None:
    new = Config()
    new.models = dataclasses.replace(new.models, dir="/elsewhere")
    assert plan_reload(Config(), new).restart == ("models",)
    assert plan_reload(Config(), _changed(inference__backend="tensorrt")).restart == ("inference",)
    plan = plan_reload(Config(), _changed(faces__enhancer="gfpgan_1.4"))
    assert plan.restart == ("faces",) and not plan.reopen_pipeline and plan.sources is None


def test_service_timings_apply_but_the_api_address_needs_a_restart() -> None:
    plan = plan_reload(Config(), _changed(service__status_interval_s=2.0))
    assert plan.service and plan.restart == ()
    plan = plan_reload(Config(), _changed(service__api="127.0.0.1:9999"))
    assert plan.service and plan.restart == ("service.api/token",)


def test_an_unknown_changed_key_needs_a_restart() -> None:
    """A config section this function does not know about is never silently ignored."""

    @dataclasses.dataclass
    class Future(Config):
        telemetry: str = "off"

    plan = plan_reload(Future(), Future(telemetry="on"))
    assert plan.restart == ("telemetry",) and plan.sources is None and not plan.reopen_pipeline


def test_everything_at_once() -> None:
    new = _changed(
        source=["/photos/a.jpg"], input="/videos/clip.mp4", inference__backend="tensorrt", service__stall_s=9.0
    )
    plan = plan_reload(Config(), new)
    assert plan == ReloadPlan(sources=("/photos/a.jpg",), pipeline=("input",), service=True, restart=("inference",))
