"""Upgrade: the new daemon on a data folder and ledger made by the previous release.

``tests/fixtures/release-0.1.0.tar.gz`` was made by the release before the layer folders (commit
b18ea08) running its own daemon with the fake backends (tests/fixtures/make_release_fixture.py):
gaby's chart delivered, gaby's photo filed into her dataset, kim's chart waiting in the inbox, and
a text file named ``.jpg`` failed.  Its ledger, logs, archive, inbox, datasets and config.yaml are
kept as that release left them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tarfile
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from harness import FIXTURES, DaemonProcess, inbox_images, run_cli, wait_until

pytestmark = pytest.mark.slow

RELEASE = FIXTURES / "release-0.1.0.tar.gz"


def _jobs(data: Path) -> dict[str, tuple[str, str, str]]:
    """id -> (user, kind, state), read straight from the SQLite file."""
    with closing(sqlite3.connect(data / "state" / "ledger.sqlite3", timeout=10)) as db:
        return {row[0]: (row[1], row[2], row[3]) for row in db.execute("SELECT id, user, kind, state FROM jobs")}


def _unpack(tmp_path: Path) -> Path:
    with tarfile.open(RELEASE) as tar:
        tar.extractall(tmp_path, filter="data")
    site = tmp_path / "release-0.1.0"
    config = site / "config.yaml"
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    settings["data_dir"] = str(site / "data")  # the copy, wherever tmp_path is
    config.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return config


def test_the_new_daemon_takes_over_a_release_data_folder(tmp_path: Path) -> None:
    config = _unpack(tmp_path)
    data = config.parent / "data"
    before = _jobs(data)
    assert sorted(before.values()) == [("gaby", "astro", "delivered"), ("gaby", "enhance", "filed"),
                                       ("imgs", "enhance", "failed"), ("kim", "astro", "inbox")]
    waiting = inbox_images(data, "kim")
    assert len(waiting) == 1
    job_id = waiting[0].name.split(".")[1]
    reviews_before = (data / "logs" / "reviews.jsonl").read_text(encoding="utf-8").splitlines()

    with DaemonProcess(config) as daemon:  # start() waits for READY=1
        assert _jobs(data) == before  # start-up (recovery, rescan) keeps every job's state
        status = json.loads(run_cli("status", "--json", config=config).stdout)
        assert status["counts"] == {"inbox": 1, "failed": 1, "delivered": 1, "filed": 1}
        assert [row["job_id"] for row in status["inbox"]] == [job_id]
        listed = json.loads(run_cli("review", "list", "--json", config=config).stdout)
        assert [row["job_id"] for row in listed] == [job_id]
        assert job_id[:6] in run_cli("review", "list", config=config).stdout

        # A reviewer approves kim's chart by moving the files, as with the old release.
        approved = data / "approved"
        for path in sorted(waiting[0].parent.glob(f"*.{job_id}.*")):
            os.replace(path, approved / path.name)
        delivered = data / "Utilisateurs" / "kim" / "theme_kim.png"
        wait_until(delivered.exists, 30, what="kim's chart delivered")
        wait_until(lambda: _jobs(data)[job_id][2] == "delivered", 30, what="job delivered in the ledger")
        wait_until(lambda: not any(approved.iterdir()), 30, what="approved/ emptied")
        assert (data / "archive" / "kim" / job_id / waiting[0].name).exists()

        after = _jobs(data)
        assert {k: v for k, v in after.items() if k != job_id} == {k: v for k, v in before.items() if k != job_id}
        status = json.loads(run_cli("status", "--json", config=config).stdout)
        assert status["counts"] == {"failed": 1, "delivered": 2, "filed": 1}
        assert json.loads(run_cli("review", "list", "--json", config=config).stdout) == []
        reviews = (data / "logs" / "reviews.jsonl").read_text(encoding="utf-8").splitlines()
        assert reviews[:len(reviews_before)] == reviews_before
        assert [json.loads(line)["decision"] for line in reviews[len(reviews_before):]] == ["approve"]
        assert daemon.stop() == 0
    assert (data / "datasets" / "gaby" / "photo.png").exists()  # gaby's filed photo is left alone
    assert (data / "Utilisateurs" / "gaby" / "theme_gaby.png").exists()


def _results(data: Path) -> dict[str, tuple[str, int | None, str | None]]:
    """id -> (user, seed drawn with, parent id), read straight from the SQLite file."""
    with closing(sqlite3.connect(data / "state" / "ledger.sqlite3", timeout=10)) as db:
        rows = db.execute("SELECT id, user, json_extract(result, '$.seed'), parent_id FROM jobs WHERE kind = 'astro'")
        return {row[0]: (row[1], row[2], row[3]) for row in rows}


def test_the_seeds_of_the_release_survive_re_exports_style_changes_and_redos(tmp_path: Path) -> None:
    """Release 0.1.0 drew gaby's and kim's charts with seeds that counted the birth place; the new
    rule leaves it out, yet no picture changes: the recorded seed is reused for the same chart."""
    from harness import theme_bytes

    config = _unpack(tmp_path)
    data = config.parent / "data"
    before = _results(data)
    old_seed = {user: seed for user, seed, _ in before.values()}
    assert old_seed == {"gaby": 181670504, "kim": 3937229359}  # the release's seeds (birth place counted)
    [kim_job] = [job_id for job_id, (user, _, _) in before.items() if user == "kim"]
    theme = data / "Utilisateurs" / "gaby" / "theme_gaby.json"
    same = "theme rewritten with the same prompt, seed and parameters: no new job"

    with DaemonProcess(config) as daemon:
        # The upstream app now exports gaby's chart with kerykeion 5, then immanuel: the same chart.
        for n, fixture in enumerate(("kerykeion_v5_subject.json", "immanuel_natal.json"), 1):
            theme.write_bytes(theme_bytes(fixture, "gaby"))
            wait_until(lambda n=n: daemon.log_path.read_text().count(same) == n, 30, what=f"{fixture}: same chart")
        assert _results(data) == before  # no job, nothing re-rendered

        # gaby asks for another style: a new picture, drawn with the seed of her first one.
        restyled = json.loads(theme_bytes("astrowatch_minimal.json", "gaby"))
        restyled["style"] = "cosmique"
        theme.write_text(json.dumps(restyled), encoding="utf-8")
        wait_until(lambda: len(_results(data)) == 3 and all(s is not None for _, s, _ in _results(data).values()),
                   60, what="gaby's new style drawn")
        # A reviewer sends kim's waiting picture back for a redo: the same seed again.
        waiting = inbox_images(data, "kim")
        for path in sorted(waiting[0].parent.glob(f"*.{kim_job}.*")):
            os.replace(path, data / "redo" / path.name)
        wait_until(lambda: any(p == kim_job and s is not None for _, s, p in _results(data).values()), 60,
                   what="kim's redo drawn")
        assert daemon.stop() == 0
    new = {job_id: row for job_id, row in _results(data).items() if job_id not in before}
    assert sorted((user, seed) for user, seed, _ in new.values()) == [("gaby", 181670504), ("kim", 3937229359)]
    with closing(sqlite3.connect(data / "state" / "ledger.sqlite3", timeout=10)) as db:
        kept = dict(db.execute("SELECT user, seed FROM chart_seeds").fetchall())
    assert kept == old_seed
