"""A full data disk: the real daemon on a small tmpfs that a ballast file fills mid-run.

The daemon must stay up (no worker crash loop), fail no input for it, say so once per episode
(log, systemd STATUS=, ``astrowatch status``) and, once space is freed, put every input's result
in the inbox exactly once within 30 s, and act on a decision made meanwhile — with the periodic
rescan off, so nothing waits for it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time

import pytest
from diskfull import fill, free_bytes, small_tmpfs
from harness import make_image, run_cli, theme_bytes, wait_until, write_config

pytestmark = pytest.mark.slow


def states(data):
    conn = sqlite3.connect(f"file:{data / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT source, state FROM jobs").fetchall())
    finally:
        conn.close()


def log_events(d):
    events = []
    for line in d.log_path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"event": line})
    return events


def count(d, text):
    return sum(1 for e in log_events(d) if text in str(e.get("event")))


def results_by_source(data, user):
    """Inbox images per input stem (``photo.<job>.png`` -> ``photo``)."""
    found: dict[str, int] = {}
    for png in (data / "inbox" / user).glob("*.png"):
        stem = png.name.rsplit(".", 2)[0]
        found[stem] = found.get(stem, 0) + 1
    return found


def failed_files(data):
    return sorted(p.name for p in (data / "failed").rglob("*") if p.is_file())


def shrink(ballast, nbytes):
    with open(ballast, "r+b") as fh:
        fh.truncate(ballast.stat().st_size - nbytes)


def test_a_disk_filled_mid_run_pauses_jobs_and_loses_nothing(tmp_path, daemon_factory):
    with small_tmpfs(24) as disk:
        data = disk / "data"
        cfg = write_config(tmp_path, data_dir=str(data), astro={"backend": "fake"}, enhance={"backend": "fake"},
                           fake={"delay_seconds": 0.4}, limits={"min_free_mb": 3},
                           watch={"stability_seconds": 0.3, "rescan_seconds": 0})
        d = daemon_factory(cfg).start()
        user = data / "Utilisateurs" / "gaby"
        user.mkdir(parents=True)
        ballast, ballast2 = disk / "ballast", disk / "ballast2"

        # Episode 1: under limits.min_free_mb, writes still succeed but no job starts: they wait.
        fill(ballast)
        shrink(ballast, 1_500_000)
        guarded = [f"guarded{i}" for i in range(3)]
        for i, name in enumerate(guarded):
            make_image(user / f"{name}.png", color=(20, 40 * i, 90))
        wait_until(lambda: sorted(states(data).values()) == ["waiting"] * 3, what="three jobs waiting")
        info = json.loads(run_cli("status", "--json", config=cfg).stdout)
        assert info["disk"]["full"] and info["disk"]["min_free_mb"] == 3
        assert len(info["waiting"]) == 3
        assert all(re.fullmatch(r"disk full: [0-2] MB free under data_dir", w["reason"]) for w in info["waiting"])
        assert "DISK FULL" in run_cli("status", config=cfg).stdout
        d.wait_message("MB free under data_dir (jobs wait)", timeout=10)  # systemd STATUS=
        ballast.unlink()
        wait_until(lambda: results_by_source(data, "gaby") == {n: 1 for n in guarded}, timeout=30,
                   what="the waiting jobs resumed")
        assert count(d, "disk full: jobs wait") == 1 and count(d, "disk space is back; waiting jobs resume") == 1

        # Episode 2: the disk fills up completely while a job runs (its outputs cannot be written,
        # the ledger cannot record it as waiting), and new inputs arrive that cannot be recorded.
        early = [f"early{i}" for i in range(4)]
        for name in early:
            make_image(user / f"{name}.png", color=(10 * len(name), 90, 30 + len(name)))
        wait_until(lambda: "running" in states(data).values(), what="a job running")
        fill(ballast)
        approved = next((data / "inbox" / "gaby").glob("guarded0.*.png"))
        approved.rename(data / "approved" / approved.name)  # a reviewer approves meanwhile (a rename: no space)
        shrink(ballast, 256 * 1024)  # the upstream app squeezes in a theme and photos
        late = [f"late{i}" for i in range(3)]
        for i, name in enumerate(late):
            make_image(user / f"{name}.png", color=(200, 20 * i, 60))
        (user / "theme_gaby.json").write_bytes(theme_bytes(user="gaby"))
        fill(ballast2)
        assert free_bytes(disk) < 64 * 1024

        wait_until(lambda: count(d, "disk full: jobs wait") == 2, what="the second disk-full log line")
        assert "DISK FULL" in run_cli("status", config=cfg).stdout
        d.wait_message("disk full: 0 MB free under data_dir (jobs wait)", timeout=10)
        time.sleep(3)  # several seconds of a full disk: retries happen meanwhile, quietly
        assert d.proc.poll() is None, d.log()
        assert failed_files(data) == []

        # Space comes back: everything resumes by itself, within seconds, with no rescan.
        ballast.unlink()
        ballast2.unlink()
        t0 = time.monotonic()
        expected = {name: 1 for name in guarded[1:] + early + late} | {"theme_gaby": 1}
        wait_until(lambda: results_by_source(data, "gaby") == expected, timeout=30,
                   what=f"every input once in the inbox (now {results_by_source(data, 'gaby')})")
        resumed_s = time.monotonic() - t0

        assert d.proc.poll() is None
        assert failed_files(data) == []
        wait_until(lambda: (data / "datasets" / "gaby" / "guarded0.png").exists(), what="the approval acted on")
        wait_until(lambda: sorted(states(data).values()) == ["filed"] + ["inbox"] * len(expected),
                   what="every job recorded: one filed, the rest in the inbox")
        assert list((data / "approved").iterdir()) == []
        assert count(d, "disk full: jobs wait") == 2, [e for e in log_events(d) if "disk" in str(e)]
        assert count(d, "disk space is back; waiting jobs resume") == 2
        assert count(d, "thread died") == 0 and d.proc.poll() is None
        assert "Traceback" not in d.log_path.read_text(errors="replace")
        assert resumed_s < 30
        d.stop()
