"""SIGKILL with a job held in each intent state (publishing, deciding, failing), then a restart:
recovery finishes the job exactly once, and every inbox job has exactly one "ok" generation line.

The daemon is held right after it records the intent by ``ASTROWATCH_TEST_HOLD=<state>`` (a hook
only tests set, astrowatch/core/testhooks.py), which writes the job id into a ready file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter

import pytest
from harness import inbox_images, make_image, wait_until, write_config

pytestmark = pytest.mark.slow


def _state(data, job_id):
    conn = sqlite3.connect(data / "state" / "ledger.sqlite3")
    try:
        return conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    finally:
        conn.close()


def _lines(data, name):
    path = data / "logs" / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _held_daemon(tmp_path, daemon_factory, monkeypatch, state, cfg):
    ready = tmp_path / f"held-{state}"
    monkeypatch.setenv("ASTROWATCH_TEST_HOLD", state)
    monkeypatch.setenv("ASTROWATCH_TEST_HOLD_FILE", str(ready))
    d = daemon_factory(cfg).start()
    monkeypatch.delenv("ASTROWATCH_TEST_HOLD")  # the restart runs as in production
    return d, ready


def _kill_when_held(d, ready, state):
    job_id = wait_until(lambda: ready.exists() and ready.read_text(), what=f"daemon held in {state}")
    assert _state(d.data, job_id) == state
    d.kill()
    assert _state(d.data, job_id) == state  # the crash left the intent unfinished
    return job_id


def _ok_lines_per_inbox_job(data):
    ok = Counter(r["job_id"] for r in _lines(data, "generations.jsonl") if r["status"] == "ok")
    return {img.name.split(".")[1]: ok[img.name.split(".")[1]] for img in inbox_images(data)}


@pytest.mark.parametrize("hold", ["publishing", "publishing.logged"])  # before / after its log line
def test_killed_while_publishing_recovers_with_one_ok_generation_line(tmp_path, daemon_factory, monkeypatch, hold):
    cfg = write_config(tmp_path)
    d, ready = _held_daemon(tmp_path, daemon_factory, monkeypatch, hold, cfg)
    user = d.data / "Utilisateurs" / "gaby"
    make_image(user / "a.png")
    job_id = _kill_when_held(d, ready, "publishing")

    again = daemon_factory(cfg).start()
    wait_until(lambda: _state(d.data, job_id) == "inbox", what="published by recovery")
    make_image(user / "b.png", color=(10, 200, 10))  # one produced normally, for comparison
    wait_until(lambda: len(inbox_images(d.data)) == 2, what="two results")
    wait_until(lambda: len(_ok_lines_per_inbox_job(d.data)) == 2 and all(_ok_lines_per_inbox_job(d.data).values()),
               what="ok lines")
    assert set(_ok_lines_per_inbox_job(d.data).values()) == {1}
    recovered = next(r for r in _lines(d.data, "generations.jsonl") if r["job_id"] == job_id)
    assert recovered["output"] == f"inbox/gaby/a.{job_id}.png" and recovered["backend"] == "lanczos"
    assert not (d.data / "state" / "work" / job_id).exists()
    assert again.stop() == 0
    assert set(_ok_lines_per_inbox_job(d.data).values()) == {1}  # a later start adds nothing


@pytest.mark.parametrize("hold", ["deciding", "deciding.logged"])  # before / after its reviews.jsonl line
def test_killed_while_deciding_finishes_the_decision_once(tmp_path, daemon_factory, monkeypatch, hold):
    cfg = write_config(tmp_path)
    d, ready = _held_daemon(tmp_path, daemon_factory, monkeypatch, hold, cfg)
    user = d.data / "Utilisateurs" / "gaby"
    make_image(user / "c.png")
    image = wait_until(lambda: inbox_images(d.data), what="result")[0]
    os.replace(image, d.data / "approved" / image.name)
    job_id = _kill_when_held(d, ready, "deciding")

    again = daemon_factory(cfg).start()
    wait_until(lambda: _state(d.data, job_id) == "filed", what="decision finished by recovery")
    assert (d.data / "datasets" / "gaby" / "c.png").exists()
    assert not list((d.data / "approved").iterdir()) and not inbox_images(d.data)
    assert [r["job_id"] for r in _lines(d.data, "reviews.jsonl")] == [job_id]
    assert (d.data / "archive" / "gaby" / job_id / image.name).exists()
    assert again.stop() == 0


def test_killed_while_failing_writes_the_failed_entry_once(tmp_path, daemon_factory, monkeypatch):
    cfg = write_config(tmp_path, enhance={"backend": "fake"}, fake={"raise_error": "input"})
    d, ready = _held_daemon(tmp_path, daemon_factory, monkeypatch, "failing", cfg)
    user = d.data / "Utilisateurs" / "gaby"
    make_image(user / "bad.png")
    job_id = _kill_when_held(d, ready, "failing")

    again = daemon_factory(cfg).start()
    wait_until(lambda: _state(d.data, job_id) == "failed", what="failure finished by recovery")
    failed = d.data / "failed" / "gaby"
    assert sorted(p.name for p in failed.iterdir()) == ["bad.png", "bad.png.error.json"]
    record = json.loads((failed / "bad.png.error.json").read_text())
    assert record["job_id"] == job_id and record["reason"]
    assert not (user / "bad.png").exists() and not inbox_images(d.data)
    assert again.stop() == 0
