"""Progress of the running job: what the backends report and what status shows."""

from __future__ import annotations

import time

from astrowatch.backends.base import Progress, progress_text
from astrowatch.backends.sdapi.client import report_progress


def test_idle_then_steps_elapsed_and_eta_from_the_pace() -> None:
    p = Progress()
    assert p.snapshot() is None and progress_text(p.snapshot()) == ""
    p.start("job1")
    first = p.snapshot()
    assert first["job_id"] == "job1" and first["step"] == 0 and first["total"] is None and first["eta_s"] is None
    time.sleep(0.2)
    p.report(2, 10)
    snap = p.snapshot()
    assert snap["step"] == 2 and snap["total"] == 10 and snap["elapsed_s"] >= 0.2
    assert 0.6 <= snap["eta_s"] <= 1.0  # ~0.1 s per step, 8 steps left
    assert progress_text(snap).startswith("step 2/10, 0 s elapsed, ETA ")
    p.clear()
    assert p.snapshot() is None


def test_a_backend_estimate_wins_and_counts_down() -> None:
    p = Progress()
    p.start("job1")
    p.report(5, 30, eta_s=12.0)
    assert 11.5 <= p.snapshot()["eta_s"] <= 12.0


def test_webui_progress_answers() -> None:
    p = Progress()
    p.start("j")
    report_progress(p, {"progress": 0.4, "eta_relative": 3.0, "state": {"sampling_step": 8, "sampling_steps": 20}})
    assert (p.snapshot()["step"], p.snapshot()["total"]) == (8, 20)
    report_progress(p, {"progress": 0.5, "eta_relative": -1, "state": {"sampling_steps": 0}})  # Forge: no steps
    snap = p.snapshot()
    assert (snap["step"], snap["total"]) == (50, 100) and snap["eta_s"] is not None
    report_progress(p, {"state": "garbage"})  # an odd answer changes nothing
    assert p.snapshot()["step"] == 50
