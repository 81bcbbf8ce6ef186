"""A crash with a job in each intent state (publishing, deciding, failing), then a start:
recovery finishes the job exactly once, and every inbox job has exactly one "ok" generation line.

Each test builds the data folder exactly as a crash at that point leaves it, then starts the real
daemon on it.  The real daemon brings the job to the state before the intent (a fake backend that
hangs and a SIGKILL leave it ``running``; a normal run leaves it in the ``inbox``); the intent is
then recorded with the real :class:`Ledger` compare-and-set and the files a crash at that exact
moment leaves are laid down by the same package functions the daemon runs there.  Nothing in the
package knows it is being tested.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from harness import inbox_images, make_image, wait_until, write_config

from astrowatch.core.config import Config
from astrowatch.pipeline.publish import locate_source, result_stem, write_outputs
from astrowatch.pipeline.records import log_generation
from astrowatch.pipeline.steps import JobContext, run_enhance
from astrowatch.review.reviewer import Reviewer
from astrowatch.runtime.settings import load_config
from astrowatch.runtime.worker import BackendPool
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import FAILED_FOR_INPUT, Job, Ledger

pytestmark = pytest.mark.slow

WORKER = "astrowatch-worker-0"  # the name the daemon's first worker thread logs under


class Crash(Exception):
    """Stands for SIGKILL at one point of the code: nothing after it runs."""


def _state(data: Path, job_id: str) -> str:
    conn = sqlite3.connect(data / "state" / "ledger.sqlite3")
    try:
        return conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    finally:
        conn.close()


def _job_ids(data: Path, state: str) -> list[str]:
    conn = sqlite3.connect(data / "state" / "ledger.sqlite3")
    try:
        return [r[0] for r in conn.execute("SELECT id FROM jobs WHERE state = ?", (state,))]
    finally:
        conn.close()


def _lines(data: Path, name: str) -> list[dict]:
    path = data / "logs" / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _ok_lines_per_inbox_job(data: Path) -> dict[str, int]:
    ok = Counter(r["job_id"] for r in _lines(data, "generations.jsonl") if r["status"] == "ok")
    return {img.name.split(".")[1]: ok[img.name.split(".")[1]] for img in inbox_images(data)}


def recovery_counts(d) -> dict[str, int]:
    """What the start-up recovery of daemon ``d`` reports (its "recovered after restart" line)."""
    for line in d.log_path.read_text().splitlines():
        if '"recovered after restart"' in line:
            entry = json.loads(line)
            return {k: entry[k] for k in ("resumed", "failed", "published", "decided")}
    raise AssertionError(f"no recovery logged:\n{d.log()}")


class Offline:
    """The stopped daemon's data folder, opened as the daemon opens it."""

    def __init__(self, cfg: Path) -> None:
        self.config: Config = load_config(cfg)
        self.layout = Layout(self.config.data_dir)
        self.ledger = Ledger(self.layout.ledger_path)

    def __enter__(self) -> Offline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ledger.close()


def crashed_while_running(tmp_path: Path, daemon_factory, name: str) -> tuple[Path, Path, str]:
    """The real daemon claims the job of a dropped photo, its backend (fake) hangs, SIGKILL: the
    row is ``running`` (attempt 1) and the photo still in the user folder.  Returns the config
    (rewritten as a normal one, lanczos backend, for the next start), the data folder, the job id."""
    cfg = write_config(tmp_path, enhance={"backend": "fake"}, fake={"hang_seconds": 60})
    d = daemon_factory(cfg).start()
    make_image(d.data / "Utilisateurs" / "gaby" / name)
    job_id = wait_until(lambda: _job_ids(d.data, "running"), what="job running")[0]
    d.kill()
    assert _state(d.data, job_id) == "running"
    return write_config(tmp_path), d.data, job_id


def record_publishing(off: Offline, job: Job, *, logged: bool) -> None:
    """What the worker leaves when killed in ``publishing`` (runtime/worker.py, _produce_and_publish
    then _publish): the outputs in ``state/work/<job>/``, the intent with the result record, and
    (``logged``) the attempt's "ok" generation line; nothing in the inbox, the photo not archived."""
    t0 = time.monotonic()
    ctx = JobContext(off.config, off.layout, BackendPool(off.config).get)
    outcome = run_enhance(job, ctx, locate_source(off.ledger, off.layout, job), "lanczos")
    run_s = time.monotonic() - t0
    timings = {"queued_s": round(max(time.time() - job.created_at - run_s, 0.0), 3), "run_s": round(run_s, 3)}
    sidecar = write_outputs(job, off.layout, outcome, timings)
    r = outcome.result
    record = {"stem": result_stem(job), "image": sidecar["image"], "backend": r.backend, "model": r.model,
              "params": outcome.params, "seed": sidecar["seed"], "description": r.description,
              "cache": outcome.extra.get("cache")}
    assert off.ledger.transition(job.id, "running", "publishing", result=record)
    if logged:
        log_generation(off.layout, job, "ok", run_s, sidecar=sidecar, default_backend="lanczos", worker=WORKER)


@pytest.mark.parametrize("logged", [False, True], ids=["publishing", "publishing.logged"])
def test_killed_while_publishing_recovers_with_one_ok_generation_line(tmp_path, daemon_factory, logged):
    cfg, data, job_id = crashed_while_running(tmp_path, daemon_factory, "a.png")
    user = data / "Utilisateurs" / "gaby"
    with Offline(cfg) as off:
        record_publishing(off, off.ledger.get(job_id), logged=logged)
    work = data / "state" / "work" / job_id
    assert sorted(p.name for p in work.iterdir()) == [f"a.{job_id}.{s}" for s in ("json", "png", "txt")]
    assert (user / "a.png").exists() and not inbox_images(data)
    assert [r["job_id"] for r in _lines(data, "generations.jsonl") if r["status"] == "ok"] == [job_id] * logged

    again = daemon_factory(cfg).start()
    wait_until(lambda: _state(data, job_id) == "inbox", what="published by recovery")
    assert recovery_counts(again) == {"resumed": 0, "failed": 0, "published": 1, "decided": 0}
    make_image(user / "b.png", color=(10, 200, 10))  # one produced normally, for comparison
    wait_until(lambda: len(inbox_images(data)) == 2, what="two results")
    wait_until(lambda: len(_ok_lines_per_inbox_job(data)) == 2 and all(_ok_lines_per_inbox_job(data).values()),
               what="ok lines")
    assert set(_ok_lines_per_inbox_job(data).values()) == {1}
    recovered = next(r for r in _lines(data, "generations.jsonl") if r["job_id"] == job_id)
    assert recovered["output"] == f"inbox/gaby/a.{job_id}.png" and recovered["backend"] == "lanczos"
    assert (data / "archive" / "gaby" / job_id / "a.png").exists() and not (user / "a.png").exists()
    assert not work.exists()
    assert again.stop() == 0
    assert set(_ok_lines_per_inbox_job(data).values()) == {1}  # a later start adds nothing


class CrashingReviewer(Reviewer):
    """The real reviewer, killed right after ``inbox -> deciding`` is recorded (review/reviewer.py,
    decide), or (``after_log``) in finish, once everything but the final transition is done."""

    def __init__(self, off: Offline, *, after_log: bool) -> None:
        ledger = CrashingLedger(off.layout.ledger_path) if after_log else off.ledger
        super().__init__(off.config, off.layout, ledger)
        self.after_log = after_log

    def finish(self, job: Job, *, again: bool = False) -> None:
        if not self.after_log:
            raise Crash("before finishing the decision")
        super().finish(job, again=again)


class CrashingLedger(Ledger):
    def transition(self, job_id: str, frm: str, to: str, **fields) -> bool:
        if frm == "deciding":
            raise Crash(f"before deciding -> {to}")
        return super().transition(job_id, frm, to, **fields)


@pytest.mark.parametrize("after_log", [False, True], ids=["deciding", "deciding.logged"])
def test_killed_while_deciding_finishes_the_decision_once(tmp_path, daemon_factory, after_log):
    cfg = write_config(tmp_path)
    d = daemon_factory(cfg).start()
    data = d.data
    make_image(data / "Utilisateurs" / "gaby" / "c.png")
    image = wait_until(lambda: inbox_images(data), what="result")[0]
    job_id = image.name.split(".")[1]
    wait_until(lambda: _state(data, job_id) == "inbox", what="the job recorded in the inbox")
    assert d.stop() == 0

    moved = data / "approved" / image.name
    os.replace(image, moved)  # the reviewer's move, seen by the daemon that is then killed
    with Offline(cfg) as off:
        reviewer = CrashingReviewer(off, after_log=after_log)
        with pytest.raises(Crash):
            reviewer.handle(moved)
        reviewer.ledger.close()
    assert _state(data, job_id) == "deciding"
    assert [r["job_id"] for r in _lines(data, "reviews.jsonl")] == [job_id] * after_log
    assert moved.exists() != after_log  # archived by finish, before its log line

    again = daemon_factory(cfg).start()
    wait_until(lambda: _state(data, job_id) == "filed", what="decision finished by recovery")
    assert recovery_counts(again) == {"resumed": 0, "failed": 0, "published": 0, "decided": 1}
    assert (data / "datasets" / "gaby" / "c.png").exists()
    assert not list((data / "approved").iterdir()) and not inbox_images(data)
    assert [r["job_id"] for r in _lines(data, "reviews.jsonl")] == [job_id]
    assert (data / "archive" / "gaby" / job_id / image.name).exists()
    assert again.stop() == 0
    assert [r["job_id"] for r in _lines(data, "reviews.jsonl")] == [job_id]


def test_killed_while_failing_writes_the_failed_entry_once(tmp_path, daemon_factory):
    cfg, data, job_id = crashed_while_running(tmp_path, daemon_factory, "bad.png")
    user = data / "Utilisateurs" / "gaby"
    with Offline(cfg) as off:  # runtime/worker.py, fail: the intent, then finish_failed (not reached)
        assert off.ledger.transition(job_id, "running", "failing", error="fake input error", note=FAILED_FOR_INPUT)
    assert (user / "bad.png").exists() and not list((data / "failed").rglob("*"))

    again = daemon_factory(cfg).start()
    wait_until(lambda: _state(data, job_id) == "failed", what="failure finished by recovery")
    assert recovery_counts(again) == {"resumed": 0, "failed": 1, "published": 0, "decided": 0}
    failed = data / "failed" / "gaby"
    assert sorted(p.name for p in failed.iterdir()) == ["bad.png", "bad.png.error.json"]
    record = json.loads((failed / "bad.png.error.json").read_text())
    assert record["job_id"] == job_id and record["reason"] == "fake input error" and record["attempts"] == 1
    assert not (user / "bad.png").exists() and not inbox_images(data)
    assert again.stop() == 0
    assert sorted(p.name for p in failed.iterdir()) == ["bad.png", "bad.png.error.json"]
