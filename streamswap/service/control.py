"""What the daemon needs from the parts `commands/serve.py` builds for it: a running
pipeline (`pipeline.pipeline.Pipeline`) and the loaded face stages
(`faces.stages.FaceStageSet`). The daemon imports neither; it gets factories."""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from streamswap.pipeline.stage import Stage


class PipelineControl(Protocol):
    """A pipeline the daemon starts, watches, pauses and stops."""

    def start(self) -> None: ...

    def stop(self, drain: bool = True, timeout: float | None = None) -> None: ...

    @property
    def finished(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...

    def status(self) -> dict[str, Any]:
        """JSON-able snapshot: state, fps in/out, frames in/out/dropped, per-output counts,
        latency p50/p95, per-stage ms, errors, reconnects, paused, source identity."""
        ...

    def frames_out(self) -> int:
        """Frames written to the sinks so far (the watchdog pings only while it grows)."""
        ...

    def pause(self) -> None:
        """Stop swapping; frames keep flowing unchanged."""
        ...

    def resume(self) -> None: ...


class SelectionRules(Protocol):
    def describe(self) -> dict[str, object]:
        """Plain data: mode, order, index, threshold, references, mappings."""
        ...


class PeopleControl(Protocol):
    """Who is swapped with which source (`faces.people.People`), as the faces API drives it."""

    @property
    def rules(self) -> SelectionRules: ...

    def set_selection(
        self,
        *,
        mode: str | None = None,
        order: str | None = None,
        index: int | None = None,
        threshold: float | None = None,
        reference: Sequence[Any] | None = None,
        unmatched: str | None = None,
    ) -> dict[str, Any]: ...

    def add_mapping(self, reference: Any, source: Any, names: tuple[str, str] | None = None) -> dict[str, Any]: ...

    def remove_mapping(self, reference: str) -> dict[str, Any]: ...


class StageSet(Protocol):
    """The loaded face stages: put into every pipeline the daemon runs (models stay
    loaded across pipelines); identities arrive through `set_source_images`."""

    @property
    def stages(self) -> Sequence[Stage]: ...

    @property
    def source_names(self) -> Sequence[str]: ...

    @property
    def people(self) -> PeopleControl | None:
        """Who is swapped with which source, None without (no faces.select / faces.map)."""
        ...

    @property
    def gpu(self) -> Any:
        """The GPU context the stages' networks run on (the pipeline's frame slots are its
        pinned memory), None when they run on the CPU."""
        ...

    def set_source_images(self, images: Sequence[Any]) -> Sequence[str]:
        """Prepare the identity off the hot path and switch at the next frame boundary;
        raises NoFaceError/InputError (the identity in use stays)."""
        ...

    def close(self) -> None: ...
