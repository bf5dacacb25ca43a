"""What the daemon's control API and systemd notifier need from a running pipeline."""

from __future__ import annotations

from typing import Any, Protocol


class RuntimeControl(Protocol):
    def status(self) -> dict[str, Any]:
        """JSON-able snapshot: state, fps in/out, frames in/out/dropped, latency p50/p95,
        per-stage ms, errors, reconnects, paused, source identity, input/outputs."""
        ...

    def frames_out(self) -> int:
        """Frames written to the sinks so far (the watchdog pings only while it grows)."""
        ...

    def set_source_image(self, image_bgr: Any) -> None:
        """Switch the identity at the next frame boundary; raises NoFaceError if none."""
        ...

    def pause(self) -> None:
        """Stop swapping; frames keep flowing unchanged."""
        ...

    def resume(self) -> None: ...

    def reload(self) -> None:
        """Run the runtime's reload hook between two swaps (the daemon applies a re-read
        config's source faces there, so no frame is swapped half with the old identity)."""
        ...
