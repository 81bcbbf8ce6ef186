"""The ledger: one table of transitions, enforced by compare-and-set in a real SQLite file."""

from __future__ import annotations

import threading

import pytest

from astrowatch.core.errors import IllegalTransition, NotFound
from astrowatch.storage.ledger import Ledger


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.sqlite3")


def _job(ledger, source="Utilisateurs/gaby/a.jpg", sha="s1"):
    return ledger.create_job(kind="enhance", user="gaby", source=source, source_sha256=sha)


def test_transition_is_compare_and_set(ledger):
    job = _job(ledger)
    assert ledger.transition(job.id, "queued", "running")
    assert not ledger.transition(job.id, "queued", "running")  # lost the race: already running
    assert ledger.get(job.id).state == "running"
    assert [h["to_state"] for h in ledger.history(job.id)] == ["queued", "running"]


def test_illegal_transitions_are_refused(ledger):
    job = _job(ledger)
    with pytest.raises(IllegalTransition):
        ledger.transition(job.id, "queued", "inbox")
    with pytest.raises(IllegalTransition):
        ledger.transition(job.id, "failed", "queued")
    assert ledger.get(job.id).state == "queued"


def test_claim_counts_attempts_and_respects_backoff(ledger):
    job = _job(ledger)
    claimed = ledger.claim_next()
    assert claimed.id == job.id and claimed.attempts == 1 and claimed.state == "running"
    ledger.transition(job.id, "running", "queued", not_before=10**12)
    assert ledger.claim_next() is None
    assert ledger.claim_next(now=10**12 + 1).attempts == 2


def test_concurrent_claims_take_each_job_once(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    for i in range(60):
        _job(ledger, source=f"Utilisateurs/gaby/{i}.jpg", sha=str(i))
    taken: list[str] = []
    lock = threading.Lock()

    def worker():
        own = Ledger(path)
        while (job := own.claim_next()) is not None:
            with lock:
                taken.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 60 == len(set(taken))


def test_json_fields_round_trip_and_find_by_prefix(ledger):
    job = ledger.create_job(kind="astro", user="gaby", source="Utilisateurs/gaby/theme_gaby.json",
                            source_sha256="x", params={"steps": 40, "style": "cosmique"})
    ledger.transition(job.id, "queued", "running")
    ledger.transition(job.id, "running", "publishing", result={"image": "a.png", "params": {"seed": 1}})
    again = ledger.find(job.id[:5])
    assert again.params == {"steps": 40, "style": "cosmique"} and again.result["params"] == {"seed": 1}
    with pytest.raises(NotFound):
        ledger.find("zzzz")


def test_seen_table(ledger):
    assert ledger.seen_get("a") is None
    ledger.seen_put("a", size=1, mtime_ns=2, sha256="h", job_id=None)
    ledger.seen_put("a", size=3, mtime_ns=4, sha256="h2", job_id="j")
    row = ledger.seen_get("a")
    assert (row["size"], row["mtime_ns"], row["job_id"]) == (3, 4, "j")


# -- a full disk: the commit fails, nothing is half applied -------------------------------------
def test_a_commit_on_a_full_disk_raises_disk_full_and_applies_nothing():
    from diskfull import fill, small_tmpfs

    from astrowatch.core.errors import DiskFull

    with small_tmpfs(4) as disk:
        ledger = Ledger(disk / "ledger.sqlite3")
        jobs = [_job(ledger, source=f"Utilisateurs/gaby/{i}.jpg", sha=f"s{i}") for i in range(40)]
        fill(disk / "ballast")
        failed = None
        for job in jobs:  # big rows: the WAL must grow, and cannot
            try:
                ledger.transition(job.id, "queued", "running", params={"big": "x" * 50_000})
            except DiskFull as exc:
                failed = job
                assert "disk is full" in str(exc)
                break
        assert failed is not None, "the disk never filled up"
        # the failed transition left nothing behind: state, attempts, params and history as before
        after = ledger.get(failed.id)
        assert (after.state, after.params, after.attempts) == ("queued", {}, 0)
        assert [h["to_state"] for h in ledger.history(failed.id)] == ["queued"]
        with pytest.raises(DiskFull):
            ledger.create_job(kind="enhance", user="gaby", source="Utilisateurs/gaby/new.jpg",
                              source_sha256="n" * 64, params={"big": "y" * 50_000})
        assert ledger.jobs_for_source("gaby", "Utilisateurs/gaby/new.jpg") == []
        # space comes back: the same connection carries on, the same transition now succeeds
        (disk / "ballast").unlink()
        assert ledger.transition(failed.id, "queued", "running", params={"big": "x" * 50_000})
        assert ledger.get(failed.id).state == "running"
        assert [h["to_state"] for h in ledger.history(failed.id)] == ["queued", "running"]
        ledger.close()


def test_an_error_inside_a_transaction_rolls_all_of_it_back(ledger):
    import sqlite3

    job = _job(ledger)
    with pytest.raises(sqlite3.IntegrityError):
        with ledger._tx() as conn:
            conn.execute("UPDATE jobs SET state = 'running' WHERE id = ?", (job.id,))
            conn.execute("INSERT INTO jobs(id) VALUES (NULL)")  # NOT NULL constraint: a real SQLite error
    assert ledger.get(job.id).state == "queued"
    assert not ledger._conn().in_transaction
    assert ledger.transition(job.id, "queued", "running")  # the connection is usable


def test_sqlite_full_and_enospc_map_to_disk_full():
    import errno
    import sqlite3

    from astrowatch.core.errors import DiskFull, as_disk_full

    assert isinstance(as_disk_full(OSError(errno.ENOSPC, "No space left on device", "x.png")), DiskFull)
    wrapped = RuntimeError("cannot rollback - no transaction is active")
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13
    wrapped.__context__ = full
    assert isinstance(as_disk_full(wrapped), DiskFull)  # the real cause behind a failed ROLLBACK
    assert as_disk_full(OSError(errno.EACCES, "Permission denied")) is None
    assert DiskFull("x").retryable and DiskFull("x").exit_code == 73


# -- astrowatch api: one job for parallel identical requests, from any number of processes ----------
REQUEST_SAME_JOB = """
import os, sys, time
from astrowatch.storage.ledger import Ledger
ledger = Ledger(sys.argv[1])
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):  # start together
    time.sleep(0.001)
job, created = ledger.create_unless_pending(
    kind="astro", user="gaby", source="Utilisateurs/gaby/theme_gaby.json", source_sha256="s1",
    params={"backend": "fake"}, same=lambda j: j.params == {"backend": "fake"})
print(job.id, int(created))
"""


def test_create_unless_pending_makes_one_job_across_processes(tmp_path):
    import subprocess
    import sys

    path, go = tmp_path / "ledger.sqlite3", tmp_path / "go"
    Ledger(path)
    procs = [subprocess.Popen([sys.executable, "-c", REQUEST_SAME_JOB, str(path), str(go)], stdout=subprocess.PIPE,
                              text=True) for _ in range(6)]
    assert [p.stdout.readline() for p in procs] == ["ready\n"] * 6  # all imported, ledger open
    go.touch()
    results = [p.communicate(timeout=60)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(int(created) for _, created in results) == 1
    assert Ledger(path).counts() == {"queued": 1}


def test_create_unless_pending_makes_a_new_job_once_the_old_one_ran(ledger):
    same = lambda j: j.params == {"seed": 1}  # noqa: E731
    kwargs = dict(kind="astro", user="gaby", source="Utilisateurs/gaby/theme_gaby.json", source_sha256="s1",
                  params={"seed": 1}, same=same)
    first, created = ledger.create_unless_pending(**kwargs)
    assert created and ledger.create_unless_pending(**kwargs) == (first, False)
    other = {**kwargs, "params": {"seed": 2}, "same": lambda j: j.params == {"seed": 2}}
    assert ledger.create_unless_pending(**other)[1]  # other params: another job
    ledger.claim_next()
    ledger.transition(first.id, "running", "publishing")
    second, created = ledger.create_unless_pending(**kwargs)
    assert created and second.id != first.id
def test_a_job_has_one_child_however_many_ask_at_once(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    parent = _job(Ledger(path), sha="s9")
    barrier, made = threading.Barrier(4), []

    def ask():
        own = Ledger(path)  # as the daemon and a CLI would: separate connections
        barrier.wait()
        made.append(own.create_child(parent, params={"steps": 9}))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in made) == 1 and len({child.id for child, _ in made}) == 1
    child = Ledger(path).child_of(parent.id)
    assert (child.parent_id, child.state, child.params, child.source_sha256) == (parent.id, "queued", {"steps": 9}, "s9")
    assert Ledger(path).child_of(child.id) is None
