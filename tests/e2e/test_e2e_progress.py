"""Progress of the running job through the real daemon: ``status`` (text and ``--json``), the
state file it reads and systemd ``STATUS=``, refreshed at least once a second, for the tiny SDXL
(diffusers' step callback) and the SD WebUI stand-in (``/sdapi/v1/progress``)."""

from __future__ import annotations

import json
import time

import pytest
from harness import drop_theme, inbox_images, run_cli, wait_until, write_config
from webui_server import FakeWebUI

pytestmark = pytest.mark.slow


def watch_progress(d, *, steps_seen: int, timeout: float) -> list[dict]:
    """Samples of the daemon's state file (one per write) until ``steps_seen`` different step
    counts were reported, or ``timeout``."""
    state_file = d.data / "state" / "daemon.json"
    samples, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline and len({s["step"] for s in samples if s["total"]}) < steps_seen:
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):  # never half-written (atomic), but may not exist yet
            state = {}
        progress = (state.get("workers") or [{}])[0].get("progress")
        if progress and (not samples or samples[-1]["updated_at"] != state["updated_at"]):
            samples.append({"updated_at": state["updated_at"], **progress})
        time.sleep(0.05)
    return samples


def check_progress(d, cfg, total: int) -> None:
    samples = watch_progress(d, steps_seen=3, timeout=90)
    gaps = sorted(b["updated_at"] - a["updated_at"] for a, b in zip(samples, samples[1:], strict=False))
    assert len(gaps) >= 2, samples
    # once a second (0.75 s at least between writes, never a busy loop; a loaded box may stall one)
    assert gaps[0] >= 0.5 and gaps[len(gaps) // 2] <= 1.2 and gaps[-1] <= 3.0, gaps
    samples = [s for s in samples if s["total"]]  # the first may predate the first step
    steps = [s["step"] for s in samples]
    assert steps == sorted(steps) and len(set(steps)) >= 3 and all(s["total"] == total for s in samples)
    assert samples[-1]["elapsed_s"] > samples[0]["elapsed_s"] and samples[-1]["eta_s"] is not None
    info = json.loads(run_cli("status", "--json", config=cfg).stdout)
    progress = info["daemon"]["workers"][0]["progress"]
    assert progress["total"] == total and progress["job_id"] == info["daemon"]["workers"][0]["current_job"]
    text = run_cli("status", config=cfg).stdout
    assert f"/{total}, " in text and " s elapsed, ETA " in text, text
    d.drain_messages()
    assert any("STATUS=" in m and f"/{total}, " in m and "ETA" in m for m in d.messages)


def test_progress_of_a_tiny_sdxl_job(tmp_path, daemon_factory, tiny_sdxl):
    base, _ = tiny_sdxl
    cfg = write_config(tmp_path, astro={"backend": "sdxl", "init_image": "none"},
                       sdxl={"model": str(base), "device": "cpu", "dtype": "float32", "width": 64,
                             "height": 64, "steps": 500, "scheduler": "euler"})
    d = daemon_factory(cfg).start()
    drop_theme(d.data)
    check_progress(d, cfg, 500)
    d.kill()  # the rest of the 500 steps is not the point


def test_progress_of_a_webui_job(tmp_path, daemon_factory):
    webui = FakeWebUI()
    webui.start()
    try:
        webui.slow = 6.0
        cfg = write_config(tmp_path, astro={"backend": "sdapi"},
                           sdapi={"url": webui.url, "width": 64, "height": 64, "steps": 30})
        d = daemon_factory(cfg).start()
        drop_theme(d.data)
        check_progress(d, cfg, 30)
        wait_until(lambda: inbox_images(d.data), timeout=30, what="the result")
        wait_until(lambda: json.loads(run_cli("status", "--json", config=cfg).stdout)["daemon"]["workers"][0]
                   ["progress"] is None, timeout=10, what="progress gone once the job is done")
        assert d.stop() == 0
    finally:
        webui.down()
