"""``astrowatch stats``: table, --json, --since, --learned, --plot, from a real ledger and logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from extras import require
from feedback_env import KEY, Env

from astrowatch.cli import main
from astrowatch.review.stats import denoising_band, normalise_reason
from astrowatch.storage.jsonlog import append_jsonl


def _history(tmp_path: Path) -> tuple[Env, Path]:
    """A small, known history: 6 enhance decisions on sdapi, 3 astro ones, 2 failures."""
    env = Env(tmp_path, explore=0.0)
    for value, decision in [(0, "reject"), (0, "approve"), (0.2, "approve"), (0.2, "approve"),
                            (0.35, "reject"), (0.6, "approve")]:
        job = env.publish(env.new_job(), {"denoising_strength": value, "upscaler": "R-ESRGAN 4x+",
                                          "sampler_name": "Euler a"})
        env.decide(job, decision, wait=60.0)
    job = env.publish(env.new_job(), {"denoising_strength": 0, "upscaler": "Lanczos"})
    env.decide(job, "redo", {"denoising_strength": 0.2, "steps": 40}, wait=120.0)
    for style, decision in [("figuratif", "approve"), ("cosmique", "reject"), ("cosmique", "approve")]:
        job = env.publish(env.new_job("astro"), {"style": style}, backend="wheel")
        env.decide(job, decision, wait=30.0)
    for error in ["p9.jpg: not an image (content is text/plain)", "p9.jpg: not an image (empty file)"]:
        job = env.new_job()
        env.ledger.transition(job.id, "queued", "running", attempts=1)
        env.ledger.transition(job.id, "running", "failing", error=error.replace("p9.jpg", job.source_name))
        env.ledger.transition(job.id, "failing", "failed")
    logs = env.layout.root / "logs"
    append_jsonl(logs / "generations.jsonl", {"job_id": "x" * 12, "backend": "sdapi", "status": "ok",
                                              "duration_s": 4.0})
    append_jsonl(logs / "generations.jsonl", {"job_id": "y" * 12, "backend": "sdapi", "status": "retry",
                                              "duration_s": 1.0, "error": "boom"})
    with (logs / "reviews.jsonl").open("a") as fh:  # an old decision, then a torn line
        fh.write(json.dumps({"ts": "2020-01-01T10:00:00+0000", "job_id": "0" * 12, "kind": "astro",
                             "decision": "reject", "backend": "sdxl", "params": {"style": "symbolique"}}) + "\n")
        fh.write('{"ts": "2020-01-0')
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(env.mapping), encoding="utf-8")
    return env, config


def _stats(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop the simulation's log lines
    code = main(["stats", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_counts_rates_overrides_and_failures(tmp_path: Path, capsys) -> None:
    _, config = _history(tmp_path)
    code, out, _ = _stats(capsys, "-c", str(config), "--json")
    assert code == 0
    info = json.loads(out)
    assert (info["decisions"], info["approve"], info["reject"], info["redo"]) == (11, 6, 4, 1)
    by = {dim: {r["value"]: r for r in rows} for dim, rows in info["by"].items()}
    assert by["kind"]["enhance"]["decisions"] == 7 and by["kind"]["enhance"]["approval_rate"] == round(4 / 7, 3)
    assert by["kind"]["astro"]["decisions"] == 4  # including the old sdxl one
    assert by["backend"]["wheel"]["approve"] == 2 and by["backend"]["sdxl"]["reject"] == 1
    assert {k: v["decisions"] for k, v in by["denoising"].items()} == {"0": 3, "0-0.3": 2, "0.3-0.5": 1, ">0.5": 1}
    assert by["denoising"]["0-0.3"]["approval_rate"] == 1.0
    assert by["style"]["cosmique"]["approval_rate"] == 0.5
    assert by["upscaler"]["Lanczos"]["redo"] == 1 and by["sampler"]["Euler a"]["decisions"] == 6
    assert by["kind"]["enhance"]["median_review_s"] == pytest.approx(60, abs=5)
    assert info["median_review_s"] == pytest.approx(60, abs=5)
    assert info["redo_overrides"] == [{"override": "denoising_strength=0.2", "count": 1},
                                      {"override": "steps=40", "count": 1}]
    assert [(f["reason"], f["count"]) for f in info["failures"]] == [("not an image", 2)]
    assert info["generations"]["by_status"] == {"ok": 1, "retry": 1}
    assert info["generations"]["median_seconds_by_backend"] == {"sdapi": 4.0}


def test_since_filters_and_a_bad_date_is_one_clear_line(tmp_path: Path, capsys) -> None:
    _, config = _history(tmp_path)
    code, out, _ = _stats(capsys, "-c", str(config), "--json", "--since", "2021-01-01")
    info = json.loads(out)
    assert info["decisions"] == 10 and info["since"] == "2021-01-01" and "sdxl" not in {
        r["value"] for r in info["by"]["backend"]}
    code, out, err = _stats(capsys, "-c", str(config), "--since", "2025-13-45")
    assert code == 78 and out == ""
    assert err.strip().splitlines() == [
        "astrowatch stats: error: --since '2025-13-45': not a date; expected YYYY-MM-DD, e.g. 2025-01-31"]


def test_table_is_aligned_and_readable(tmp_path: Path, capsys) -> None:
    _, config = _history(tmp_path)
    code, out, _ = _stats(capsys, "-c", str(config))
    assert code == 0
    assert "decisions: 11 (approve 6, reject 4, redo 1); approval 55%" in out
    assert "median time to review: 1m 00s" in out
    lines = out.splitlines()
    start = lines.index("by denoising strength")
    header, *rows = lines[start + 1:start + 6]
    assert header.split() == ["denoising", "decisions", "approve", "reject", "redo", "approval", "median", "review"]
    assert len({len(r) for r in [header, *rows]}) == 1  # every row as wide as the header: aligned
    assert rows[0].split()[:6] == ["0", "3", "1", "1", "1", "33%"]
    assert "failures by reason" in out and "not an image" in out
    assert "denoising_strength=0.2" in out


def test_learned_shows_current_choices(tmp_path: Path, capsys) -> None:
    env, config = _history(tmp_path)
    code, out, _ = _stats(capsys, "-c", str(config), "--learned")
    assert code == 0
    assert out.splitlines()[0] == "learned defaults (on; explore 0, min decisions 5)"
    assert f"{KEY}: 0 - config default" in out  # 0.2 has 2 decisions + 1 redo vote, under 5
    code, out, _ = _stats(capsys, "-c", str(config), "--learned", "--json")
    row = json.loads(out)[0]
    assert [c["decisions"] for c in row["candidates"]] == [3, 3, 1]
    assert row["candidates"][1]["redo_votes"] == 1


def test_plot_writes_a_png(tmp_path: Path, capsys) -> None:
    require("matplotlib", "plot")
    from PIL import Image

    _, config = _history(tmp_path)
    target = tmp_path / "out" / "rates.png"
    code, out, _ = _stats(capsys, "-c", str(config), "--plot", str(target))
    assert code == 0 and f"plot written to {target}" in out
    with Image.open(target) as img:
        assert img.format == "PNG" and img.width >= 600 and img.height >= 400
        assert len(img.convert("RGB").getcolors(1 << 20) or []) > 10  # bars and text, not blank


def test_helpers() -> None:
    assert [denoising_band(v) for v in (0, 0.0, 0.1, 0.3, 0.31, 0.5, 0.9, None, "x")] == [
        "0", "0", "0-0.3", "0-0.3", "0.3-0.5", "0.3-0.5", ">0.5", None, None]
    assert normalise_reason("photo.jpg: truncated image (read 10 of 2048 bytes)", "photo.jpg") == "truncated image"
    assert normalise_reason("BackendError: HTTP 500; retry later (after 3 attempts)") == "BackendError"
    assert normalise_reason(None) == "unknown error"
