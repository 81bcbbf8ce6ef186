"""Retention removes only what it may: old archives of finished jobs, the least recently used
cache entries, rotated logs beyond ``log_keep`` — never datasets, deliveries, the inbox, failed/
or anything of a job that is not finished."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from harness import make_image, wait_until, write_config

from astrowatch.core.config import RetentionConfig
from astrowatch.pipeline.feedback import read_decisions
from astrowatch.review.stats import generations
from astrowatch.storage.jsonlog import append_jsonl, rotated_files
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger
from astrowatch.storage.retention import apply, sizes_mb

DAY = 86400
PATHS = {  # job -> (kind, path to its next state)
    "filed": ("enhance", ["running", "publishing", "inbox", "deciding", "filed"]),
    "delivered": ("astro", ["running", "publishing", "inbox", "deciding", "delivered"]),
    "failed": ("enhance", ["running", "failing", "failed"]),
    "inbox": ("enhance", ["running", "publishing", "inbox"]),
    "queued": ("astro", []),
    "waiting": ("enhance", ["running", "waiting"]),
    "redone": ("enhance", ["running", "publishing", "inbox", "deciding", "redone"]),
}


@pytest.fixture
def world(tmp_path):
    layout = Layout(tmp_path / "data")
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    jobs = {}
    for name, (kind, path) in PATHS.items():
        job = ledger.create_job(kind=kind, user="gaby", source=f"Utilisateurs/gaby/{name}.png", source_sha256=name)
        state = "queued"
        for nxt in path:
            assert ledger.transition(job.id, state, nxt)
            state = nxt
        jobs[name] = job.id
        folder = layout.archive_dir("gaby", job.id)
        folder.mkdir(parents=True)
        (folder / f"{name}.png").write_bytes(b"x" * 100)
    # a redo of the "redone" job that has not run yet: it reads its parent's archived original
    child = ledger.create_job(kind="enhance", user="gaby", source="Utilisateurs/gaby/redone.png",
                              source_sha256="redone", parent_id=jobs["redone"])
    jobs["redo-child"] = child.id
    # what retention must never touch
    keep = [layout.dataset_dir("gaby") / "filed.png", layout.dataset_dir("gaby") / "filed.txt",
            layout.user_dir("gaby") / "theme_gaby.png", layout.inbox_dir("gaby") / "inbox.abc.png",
            layout.failed_dir("gaby") / "failed.png", layout.root / "archive" / "gaby" / "0123456789ab" / "x.png"]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"k" * 10)
    return layout, ledger, jobs, keep


def archived(layout, jobs):
    return {name for name, job_id in jobs.items() if layout.archive_dir("gaby", job_id).exists()}


def test_archive_days_removes_only_old_archives_of_finished_jobs(world):
    layout, ledger, jobs, keep = world
    cfg = RetentionConfig(archive_days=1, cache_max_mb=0, log_max_mb=0)
    assert apply(cfg, layout, ledger)["archive_removed"] == 0  # nothing is a day old yet
    done = apply(cfg, layout, ledger, now=time.time() + 2 * DAY)
    assert done["archive_removed"] == 3
    # gone: filed and delivered (decided), failed; kept: unfinished jobs and the parent of a pending redo
    assert archived(layout, jobs) == {"inbox", "queued", "waiting", "redone"}
    assert all(p.exists() for p in keep), [p for p in keep if not p.exists()]


def test_the_parent_archive_goes_once_its_redo_is_finished(world):
    layout, ledger, jobs, _keep = world
    child = jobs["redo-child"]
    for frm, to in (("queued", "running"), ("running", "publishing"), ("publishing", "inbox"),
                    ("inbox", "deciding"), ("deciding", "filed")):
        assert ledger.transition(child, frm, to)
    apply(RetentionConfig(archive_days=1), layout, ledger, now=time.time() + 2 * DAY)
    assert archived(layout, jobs) == {"inbox", "queued", "waiting"}


def test_archive_days_zero_keeps_everything_forever(world):
    layout, ledger, jobs, _keep = world
    apply(RetentionConfig(archive_days=0), layout, ledger, now=time.time() + 3650 * DAY)
    assert archived(layout, jobs) == set(PATHS) - {"redo-child"}


def _cache_entry(layout, key, size, age_s):
    folder = layout.root / "state" / "cache" / key[:2]
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, n in ((".png", size), (".json", 100)):
        path = folder / f"{key}{suffix}"
        path.write_bytes(b"c" * n)
        os.utime(path, (time.time() - age_s,) * 2)
    return folder / f"{key}.png"


def test_cache_max_mb_removes_least_recently_used_entries_first(world):
    layout, ledger, _jobs, keep = world
    old = _cache_entry(layout, "aa01", 1000, 300)
    mid = _cache_entry(layout, "ab02", 1000, 200)
    new = _cache_entry(layout, "ac03", 1000, 100)
    done = apply(RetentionConfig(cache_max_mb=0.0025), layout, ledger)  # 2,500 bytes for 3 x 1,100
    assert done["cache_removed"] == 1
    assert not old.exists() and not old.with_suffix(".json").exists()
    assert mid.exists() and new.exists()
    assert all(p.exists() for p in keep)


def test_an_oversized_cache_is_pruned_a_batch_a_pass_oldest_first(world, monkeypatch):
    from astrowatch.storage import retention

    layout, ledger, _jobs, _keep = world
    monkeypatch.setattr(retention, "CACHE_BATCH", 2)  # one pass holds this many entries, no more
    entries = [_cache_entry(layout, f"{i:02x}k{i}", 1000, 1000 - i) for i in range(7)]  # oldest first
    cfg = RetentionConfig(cache_max_mb=0.0023)  # room for 2 of 7 entries (1,100 bytes each)
    first = apply(cfg, layout, ledger)
    assert (first["cache_removed"], first["more"]) == (2, 1)
    assert [e.exists() for e in entries] == [False, False] + [True] * 5
    passes = [apply(cfg, layout, ledger) for _ in range(3)]
    assert [(d["cache_removed"], d["more"]) for d in passes] == [(2, 1), (1, 0), (0, 0)]
    assert [e.exists() for e in entries] == [False] * 5 + [True] * 2


def test_archive_retention_moves_on_past_jobs_whose_folder_is_gone(world, monkeypatch):
    """Each job is looked at once: with more old jobs than a batch, passes end (``more`` = 0) even
    when their folders were removed by hand (the old pass re-listed every old job, for ever)."""
    from astrowatch.storage import retention

    layout, ledger, jobs, _keep = world
    monkeypatch.setattr(retention, "ARCHIVE_BATCH", 2)
    for name in ("filed", "delivered"):
        shutil.rmtree(layout.archive_dir("gaby", jobs[name]))  # gone already
    later = time.time() + 2 * DAY
    done = [apply(RetentionConfig(archive_days=1), layout, ledger, now=later) for _ in range(4)]
    assert [d["more"] for d in done] == [1, 0, 0, 0]
    assert sum(d["archive_removed"] for d in done) == 1  # the failed job's; the redone one is kept
    assert archived(layout, jobs) == {"inbox", "queued", "waiting", "redone"}


def test_a_cache_hit_makes_an_entry_recently_used(world):
    from PIL import Image

    from astrowatch.backends.base import Result
    from astrowatch.pipeline.steps import cache_load, cache_store

    layout, ledger, _jobs, _keep = world
    cache_store(layout, "ff" + "0" * 62, Result(image=Image.new("RGB", (8, 8)), backend="fake"))
    png = layout.root / "state" / "cache" / "ff" / ("ff" + "0" * 62 + ".json")
    os.utime(png, (1, 1))
    assert cache_load(layout, "ff" + "0" * 62) is not None
    assert png.stat().st_mtime > time.time() - 60


def test_logs_rotate_by_size_keep_log_keep_files_and_readers_see_them_all(world):
    layout, ledger, _jobs, _keep = world
    gen, rev = layout.root / "logs" / "generations.jsonl", layout.root / "logs" / "reviews.jsonl"
    cfg = RetentionConfig(log_max_mb=0.001, log_keep=2)  # rotate above 1,000 bytes
    n = 0
    for _round in range(4):
        for _ in range(12):
            n += 1
            append_jsonl(gen, {"job_id": f"{n:012x}", "status": "ok", "backend": "fake", "duration_s": 1.0})
            append_jsonl(rev, {"job_id": f"{n:012x}", "decision": "approve", "kind": "enhance"})
        assert apply(cfg, layout, ledger)["logs_rotated"] == 2
    assert [p.name for p in rotated_files(gen)] == ["generations.jsonl.2", "generations.jsonl.1"]
    # after 4 rotations with log_keep 2, the two newest rounds remain, and readers see all of them
    summary, _last = generations(gen, None)
    assert summary["attempts"] == 24
    assert len(read_decisions(rev)) == 24
    append_jsonl(gen, {"job_id": "x" * 12, "status": "ok"})  # a new current file after rotation
    assert generations(gen, None)[0]["attempts"] == 25
    assert [p.name for p in rotated_files(gen)] == ["generations.jsonl.2", "generations.jsonl.1", "generations.jsonl"]


def test_sizes_for_status(world):
    layout, _ledger, _jobs, _keep = world
    _cache_entry(layout, "aa01", 2_000_000, 0)
    sizes = sizes_mb(layout)
    assert sizes["cache"] == 2.0 and sizes["archive"] == 0.0 and sizes["logs"] == 0.0


@pytest.mark.slow
def test_the_daemon_applies_retention_when_idle(tmp_path, daemon_factory):
    cfg = write_config(tmp_path, enhance={"backend": "fake"},
                       retention={"archive_days": 0.00003, "check_seconds": 0.5})  # ~2.6 s
    d = daemon_factory(cfg).start()
    user = d.data / "Utilisateurs" / "gaby"
    make_image(user / "photo.png")
    inbox = d.data / "inbox" / "gaby"
    image = wait_until(lambda: next(iter(inbox.glob("*.png")), None), what="result in the inbox")
    job_id = image.name.split(".")[1]
    archive = d.data / "archive" / "gaby" / job_id
    # the original, archived just after the result reaches the inbox, kept while it awaits review
    wait_until(lambda: (archive / "photo.png").exists(), what="the original archived")
    time.sleep(3.5)  # older than archive_days, but not finished: kept
    assert (archive / "photo.png").exists()
    shutil.move(str(image), d.data / "approved" / image.name)
    wait_until(lambda: (d.data / "datasets" / "gaby" / "photo.png").exists(), what="filed into the dataset")
    wait_until(lambda: not archive.exists(), timeout=20, what="the finished job's archive removed")
    assert (d.data / "datasets" / "gaby" / "photo.png").exists()
    assert (d.data / "datasets" / "gaby" / "photo.txt").exists()
    # the removal is logged just after it happens
    wait_until(lambda: "retention applied" in d.log(), what="the 'retention applied' log line")
