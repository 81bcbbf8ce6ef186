"""``executor: celery`` end to end: a real redis-server, the real coordinator (the daemon) and real
``astrowatch worker`` processes started from their own folders (no access to the data folder),
the ``fake`` backend with ``fake.delay_seconds``.  Short ``visibility_timeout`` keeps them quick."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from celery_support import RedisServer, WorkerProcess, celery_section, free_port, needs_redis, wait_gone
from harness import DaemonProcess, drop_theme, run_cli, wait_until, write_config

pytestmark = [pytest.mark.slow, needs_redis]


@pytest.fixture
def redis_server():
    servers: list[RedisServer] = []

    def make(**kw: Any) -> RedisServer:
        servers.append(RedisServer(**kw).start())
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def workers(tmp_path):
    started: list[WorkerProcess] = []

    def make(name: str, redis: RedisServer, **kw: Any) -> WorkerProcess:
        w = WorkerProcess(tmp_path, name, redis, **kw)
        started.append(w)
        return w

    yield make
    for w in started:
        w.close()


def coordinator(tmp_path: Path, redis: RedisServer, **celery: Any) -> Path:
    return write_config(tmp_path / "coord", astro={"backend": "fake", "wheel_size": 256},
                        enhance={"backend": "fake", "min_side": 16}, executor="celery",
                        celery=celery_section(redis, **celery), sdapi={"health_interval": 0.5},
                        # below the short visibility timeouts used here (the config refuses more);
                        # in celery mode the deadline runs on the workers, not in the coordinator
                        limits={"min_free_mb": 20, "job_timeout_seconds": 1})


def drop_users(data: Path, n: int) -> list[str]:
    users = [f"u{i:02d}" for i in range(n)]
    for user in users:
        drop_theme(data, user=user)
    return users


def inbox_pngs(data: Path) -> list[Path]:
    return sorted((data / "inbox").glob("*/*.png"))


def generations(data: Path) -> list[dict[str, Any]]:
    path = data / "logs" / "generations.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def states(data: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(data / "state" / "ledger.sqlite3") as conn:
        return conn.execute("SELECT id, state, error FROM jobs").fetchall()


def started_jobs(worker: WorkerProcess) -> Counter:
    return Counter(json.loads(line)["job_id"] for line in worker.log().splitlines()
                   if line.startswith("{") and '"task started"' in line)


def assert_each_exactly_once(data: Path, n: int) -> None:
    pngs = inbox_pngs(data)
    assert len(pngs) == n, pngs
    job_ids = [p.name.rsplit(".", 2)[1] for p in pngs]
    assert len(set(job_ids)) == n
    ok = [g for g in generations(data) if g["status"] == "ok"]
    assert sorted(g["job_id"] for g in ok) == sorted(job_ids)
    assert {s for _, s, _ in states(data)} == {"inbox"}


def test_twenty_inputs_each_exactly_once_on_both_workers(tmp_path, redis_server, workers):
    redis = redis_server()
    a, b = workers("a", redis, delay=0.3).start(), workers("b", redis, delay=0.3).start()
    cfg = coordinator(tmp_path, redis)
    with DaemonProcess(cfg) as coord:
        drop_users(coord.data, 20)
        wait_until(lambda: len(inbox_pngs(coord.data)) >= 20, 90, what="20 results")
        wait_until(lambda: {s for _, s, _ in states(coord.data)} == {"inbox"}, 10, what="all in inbox")
        assert_each_exactly_once(coord.data, 20)
        ran_on = Counter(g["worker"] for g in generations(coord.data))
        assert set(ran_on) == {a.name, b.name}, ran_on  # both workers used, recorded per attempt
        sidecar = json.loads(next((coord.data / "inbox").glob("*/*.json")).read_text())
        assert sidecar["backend_extra"]["remote"]["worker"] in (a.name, b.name)
        status = json.loads(run_cli("status", "--json", config=cfg).stdout)
    remote = {w["name"]: w for w in status["remote_workers"]}
    assert set(remote) == {a.name, b.name}
    assert sum(w["stats"]["jobs"] for w in remote.values()) == 20  # no duplicate execution
    assert all(w["backends"] == {"astro": "fake", "enhance": "fake"} and w["schema"] == 2 for w in remote.values())
    assert not (a.folder / "data").exists() and not (b.folder / "data").exists()  # workers never touch data


def test_worker_killed_mid_job_finishes_on_another_worker(tmp_path, redis_server, workers):
    redis = redis_server()
    vt = 4
    section = celery_section(redis, visibility_timeout=vt)
    a = workers("a", redis, delay=2.0, celery=section).start()
    b = workers("b", redis, delay=2.0, celery=section).start()
    with DaemonProcess(coordinator(tmp_path, redis, visibility_timeout=vt)) as coord:
        drop_users(coord.data, 1)
        victim = wait_until(lambda: next((w for w in (a, b) if started_jobs(w)), None), 30, what="a task started")
        victim.kill()
        killed_at = time.monotonic()
        survivor = b if victim is a else a
        wait_until(lambda: len(inbox_pngs(coord.data)) == 1, vt + 30, what="result after the worker died")
        assert time.monotonic() - killed_at < vt + 30
        wait_until(lambda: {s for _, s, _ in states(coord.data)} == {"inbox"}, 10, what="job in inbox")
        assert_each_exactly_once(coord.data, 1)
        assert [g["worker"] for g in generations(coord.data)] == [survivor.name]


def test_coordinator_killed_reattaches_without_second_dispatch(tmp_path, redis_server, workers):
    redis = redis_server()
    w = workers("a", redis, delay=2.0).start()
    cfg = coordinator(tmp_path, redis, max_in_flight=2)
    first = DaemonProcess(cfg).start()
    try:
        drop_users(first.data, 3)
        wait_until(lambda: started_jobs(w), 30, what="a task running on the worker")
        first.kill()  # SIGKILL with one job running remotely and one in the broker's queue
    finally:
        first.close()
    with DaemonProcess(cfg) as second:
        wait_until(lambda: len(inbox_pngs(second.data)) == 3, 60, what="3 results after the restart")
        wait_until(lambda: {s for _, s, _ in states(second.data)} == {"inbox"}, 10, what="all in inbox")
        assert "re-attached to the task in flight" in second.log()
    assert_each_exactly_once(first.data, 3)
    assert set(started_jobs(w).values()) == {1}, started_jobs(w)  # no job was run twice


def test_broker_down_twenty_seconds_jobs_wait_then_finish(tmp_path, redis_server, workers):
    redis = redis_server(aof=True)
    workers("a", redis, delay=1.0).start()
    with DaemonProcess(coordinator(tmp_path, redis, max_in_flight=2)) as coord:
        drop_users(coord.data, 6)
        wait_until(lambda: inbox_pngs(coord.data), 30, what="a first result")
        redis.stop()
        down_at = time.monotonic()
        waiting = wait_until(lambda: [e for _, s, e in states(coord.data) if s == "waiting"], 20,
                             what="jobs waiting for the broker")
        assert all("broker unreachable" in e for e in waiting), waiting
        while time.monotonic() - down_at < 20:
            assert "failed" not in {s for _, s, _ in states(coord.data)}
            time.sleep(0.5)
        status = run_cli("status", config=coord.config_path).stdout
        assert "broker unreachable" in status
        redis.start()
        wait_until(lambda: len(inbox_pngs(coord.data)) == 6, 90, what="all 6 results after the broker returned")
        wait_until(lambda: {s for _, s, _ in states(coord.data)} == {"inbox"}, 10, what="all in inbox")
        assert_each_exactly_once(coord.data, 6)


def test_worker_whose_backend_cannot_load_exits_and_takes_no_job(tmp_path, redis_server):
    redis = redis_server()
    cfg = coordinator(tmp_path, redis)
    from astrowatch.backends.remote.celery_app import make_app
    from astrowatch.backends.remote.protocol import TASK_NAME
    from astrowatch.runtime.settings import load_config

    make_app(load_config(cfg)).send_task(TASK_NAME, args=[{"schema": 1}], task_id="waitingjob01", queue="astrowatch")
    bad = write_config(tmp_path / "bad", astro={"backend": "sdapi"}, enhance={"backend": "fake"},
                       sdapi={"url": f"http://127.0.0.1:{free_port()}", "connect_timeout": 1},
                       celery=celery_section(redis))
    proc = subprocess.run([sys.executable, "-m", "astrowatch", "worker", "--name", "bad@test", "--config", str(bad)],
                          cwd=bad.parent, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 69, proc.stderr
    assert "backend cannot load, taking no jobs" in proc.stderr and "127.0.0.1" in proc.stderr
    assert redis.client().llen("astrowatch") == 1  # the task is still queued, untouched


def test_worker_refuses_a_payload_schema_it_does_not_speak_and_foreign_task_names(tmp_path, redis_server, workers):
    redis = redis_server()
    w = workers("a", redis).start()
    from astrowatch.backends.remote.celery_app import make_app
    from astrowatch.backends.remote.protocol import TASK_NAME
    from astrowatch.runtime.settings import load_config

    app = make_app(load_config(coordinator(tmp_path, redis)))
    res = app.send_task(TASK_NAME, args=[{"schema": 99, "astrowatch": "9.0.0", "kind": "astro"}],
                        task_id="futurejob001", queue="astrowatch")
    answer = res.get(timeout=30)
    assert answer["status"] == "rejected"
    assert all(s in answer["message"] for s in (w.name, "schema 99", "9.0.0", "schema 2"))
    assert not started_jobs(w)  # refused before any work
    app.send_task("celery.backend_cleanup", task_id="foreign00001", queue="astrowatch")  # a Celery built-in
    wait_until(lambda: "unregistered task" in w.log().lower(), 20, what="a foreign task name refused")


@pytest.mark.parametrize("user", [None, "astrowatch"], ids=["requirepass", "acl-user"])
def test_password_protected_redis_and_the_password_is_never_logged(tmp_path, redis_server, workers, user):
    secret = "s3cr3t-Pa55word-xyz"
    redis = redis_server(password=secret, user=user)
    (tmp_path / "redis_password").write_text(secret + "\n")
    auth = {"password_file": str(tmp_path / "redis_password"), "username": user}
    w = workers("a", redis, celery=celery_section(redis, **auth)).start()
    cfg = coordinator(tmp_path, redis, **auth)
    with DaemonProcess(cfg) as coord:
        drop_users(coord.data, 2)
        wait_until(lambda: len(inbox_pngs(coord.data)) == 2, 60, what="2 results through a password-protected Redis")
        status = run_cli("status", config=cfg).stdout + run_cli("status", "--json", config=cfg).stdout
        assert "a@test" in status
        texts = [coord.log(), w.log(), status, *(p.read_text() for p in (coord.data / "logs").glob("*.jsonl")),
                 (coord.data / "state" / "daemon.json").read_text()]
    assert not any(secret in t for t in texts)


def test_sigterm_on_a_worker_finishes_its_image_then_exits(tmp_path, redis_server, workers):
    redis = redis_server()
    w = workers("a", redis, delay=2.0).start()
    with DaemonProcess(coordinator(tmp_path, redis)) as coord:
        drop_users(coord.data, 1)
        wait_until(lambda: started_jobs(w), 30, what="the task started")
        w.proc.send_signal(signal.SIGTERM)
        assert wait_gone(w.proc, 30) == 0
        assert '"task done"' in w.log()
        wait_until(lambda: len(inbox_pngs(coord.data)) == 1, 20, what="the finished image in the inbox")
        wait_until(lambda: {s for _, s, _ in states(coord.data)} == {"inbox"}, 10, what="job in inbox")
    assert_each_exactly_once(coord.data, 1)


def test_photos_travel_as_their_own_bytes_and_too_big_is_refused_with_the_fix(tmp_path, redis_server, workers):
    import os

    from harness import make_image
    from PIL import Image

    redis = redis_server()
    section = celery_section(redis, inline_max_mb=0.05)
    workers("a", redis, celery=section).start()
    with DaemonProcess(coordinator(tmp_path, redis, inline_max_mb=0.05)) as coord:
        user = coord.data / "Utilisateurs" / "gaby"
        make_image(user / "small.jpg", size=(64, 48))
        user.mkdir(parents=True, exist_ok=True)
        Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(user / "big.png")  # ~120 KB
        wait_until(lambda: (coord.data / "failed" / "gaby" / "big.png.error.json").exists(), 30, what="big refused")
        wait_until(lambda: inbox_pngs(coord.data), 30, what="the small photo enhanced")
        error = json.loads((coord.data / "failed" / "gaby" / "big.png.error.json").read_text())
    assert "celery.inline_max_mb" in error["reason"] and "shared_data_dir" in error["reason"]
    [png] = inbox_pngs(coord.data)
    with Image.open(png) as out:
        assert out.size == (128, 96)  # the worker preprocessed the JPEG, fake enhance x2


def test_a_copy_redelivered_after_visibility_timeout_is_published_once_and_skipped_once_done(
        tmp_path, redis_server, workers):
    redis = redis_server()
    section = celery_section(redis, visibility_timeout=2)  # shorter than the job: the classic trap
    w = workers("a", redis, delay=4.0, celery=section).start()
    with DaemonProcess(coordinator(tmp_path, redis, visibility_timeout=2)) as coord:
        drop_users(coord.data, 1)
        wait_until(lambda: "already done; skipped" in w.log(), 40, what="the redelivered copy skipped")
        wait_until(lambda: {s for _, s, _ in states(coord.data)} == {"inbox"}, 10, what="job in inbox")
        assert_each_exactly_once(coord.data, 1)
    assert set(started_jobs(w).values()) == {1}  # the copy was not run again


def test_second_sigterm_on_the_coordinator_stops_waiting_and_the_job_reattaches(tmp_path, redis_server, workers):
    redis = redis_server()
    w = workers("a", redis, delay=3.0).start()
    cfg = coordinator(tmp_path, redis)
    first = DaemonProcess(cfg).start()
    try:
        drop_users(first.data, 1)
        wait_until(lambda: started_jobs(w), 30, what="the task running on the worker")
        first.signal(signal.SIGTERM)
        time.sleep(0.3)
        first.signal(signal.SIGTERM)  # interrupt: stop waiting for the result
        assert first.proc.wait(10) == 0
        assert [s for _, s, _ in states(first.data)] == ["queued"]  # resumes at the next start
    finally:
        first.close()
    with DaemonProcess(cfg) as second:
        wait_until(lambda: {s for _, s, _ in states(second.data)} == {"inbox"}, 30, what="job in inbox")
        assert "re-attached to the task in flight" in second.log()
    assert_each_exactly_once(first.data, 1)
    assert set(started_jobs(w).values()) == {1}  # nothing revoked, nothing run twice


def test_shared_data_dir_sends_paths_and_the_worker_reads_the_mounted_folder(tmp_path, redis_server, workers):
    from harness import make_image

    redis = redis_server()
    coord_cfg = coordinator(tmp_path, redis, shared_data_dir=True, inline_max_mb=0.001)  # inline would refuse
    data = coord_cfg.parent / "data"
    w = workers("a", redis, celery=celery_section(redis, shared_data_dir=True), data_dir=str(data)).start()
    with DaemonProcess(coord_cfg) as coord:
        make_image(coord.data / "Utilisateurs" / "gaby" / "photo.jpg", size=(64, 48))
        drop_theme(coord.data, user="gaby")
        wait_until(lambda: len(inbox_pngs(coord.data)) == 2, 30, what="both results via the shared folder")
        wait_until(lambda: {s for _, s, _ in states(coord.data)} == {"inbox"}, 10, what="both in inbox")
    assert not any((data / "state" / "remote").iterdir())  # inputs removed once the results were read
    assert len(started_jobs(w)) == 2


def test_redis_restarted_without_persistence_loses_nothing(tmp_path, redis_server, workers):
    redis = redis_server()  # no AOF: a restart empties the queue, the results and the markers
    w = workers("a", redis, delay=1.5).start()
    with DaemonProcess(coordinator(tmp_path, redis, max_in_flight=3)) as coord:
        drop_users(coord.data, 3)
        wait_until(lambda: started_jobs(w), 30, what="a task running")
        redis.proc.kill()
        redis.proc.wait(10)
        redis.start()  # at once, empty
        wait_until(lambda: {s for _, s, _ in states(coord.data)} == {"inbox"}, 60, what="all 3 in inbox")
        assert_each_exactly_once(coord.data, 3)


@pytest.mark.parametrize("form", ["requirepass", "acl-user", "query"])
def test_a_password_in_the_broker_url_runs_exactly_once_and_is_never_printed(tmp_path, redis_server, workers, form):
    """``broker_url: redis://:pw@host:port/0`` as Celery users write it (and ``user:pw@``,
    ``?password=``): the exactly-once scenario runs, and the password appears in no output — the
    daemon's and the workers' logs (Celery's and kombu's lines included, a lost connection too),
    ``status``, ``status --json``, ``doctor``, the records."""
    from urllib.parse import quote

    secret = "s3cr3t/Pa55@word-xyz"
    enc = quote(secret, safe="")
    user = "astrowatch" if form == "acl-user" else None
    redis = redis_server(password=secret, user=user)
    url = {"requirepass": f"redis://:{enc}@127.0.0.1:{redis.port}/0",
           "acl-user": f"redis://{user}:{enc}@127.0.0.1:{redis.port}/0",
           "query": f"redis://127.0.0.1:{redis.port}/0?password={enc}"}[form]
    a = workers("a", redis, delay=0.2, celery=celery_section(redis, broker_url=url)).start()
    b = workers("b", redis, delay=0.2, celery=celery_section(redis, broker_url=url)).start()
    cfg = coordinator(tmp_path, redis, broker_url=url)
    outputs: list[str] = []
    with DaemonProcess(cfg) as coord:
        drop_users(coord.data, 6)
        wait_until(lambda: len(inbox_pngs(coord.data)) >= 6, 60, what="6 results through a password in the URL")
        wait_until(lambda: {s for _, s, _ in states(coord.data)} == {"inbox"}, 10, what="all in inbox")
        assert_each_exactly_once(coord.data, 6)
        status = json.loads(run_cli("status", "--json", config=cfg).stdout)
        assert {w["name"] for w in status["remote_workers"]} == {a.name, b.name}
        assert sum(w["stats"]["jobs"] for w in status["remote_workers"]) == 6
        outputs += [json.dumps(status), run_cli("status", config=cfg).stdout]
        doctor = run_cli("doctor", config=cfg, check=False)
        outputs.append(doctor.stdout + doctor.stderr)
        assert "passwords in the config" in doctor.stdout and "password_file" in doctor.stdout
        redis.stop()  # Celery, kombu and redis-py now print their connection errors
        wait_until(lambda: "Cannot connect" in a.log() or "connection" in a.log().lower(), 30,
                   what="the worker's broker connection error")
        doctor = run_cli("doctor", config=cfg, check=False)
        outputs += [doctor.stdout + doctor.stderr, run_cli("status", config=cfg, check=False).stdout]
        outputs += [coord.log_path.read_text(errors="replace")]
        assert coord.stop() == 0
    outputs += [a.log(), b.log(), coord.log_path.read_text(errors="replace"),
                *(p.read_text() for p in (coord.data / "logs").glob("*.jsonl")),
                (coord.data / "state" / "daemon.json").read_text()]
    leaks = [t for t in outputs if secret in t or enc in t]
    assert not leaks, leaks[0][-2000:]
