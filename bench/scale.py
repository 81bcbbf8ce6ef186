"""Scale: what the reads, the main loop and memory cost as the history grows (issue 27).

At each ``--sizes`` N, a ledger with N jobs of history is written in bulk (many users; 10 % of
them, at most ``--pending``, waiting in the inbox; the rest filed, rejected, delivered or failed;
the counters backfilled by the daemon's own start-up code), then:

- ``inbox_p99_ms``: one user's ``GET /api/inbox?user=`` page (FastAPI TestClient, 200 requests);
- ``inbox_all_p99_ms``: the first page of all users' inbox, and a page deep in it (by cursor);
- ``status_query_ms``: :func:`astrowatch.runtime.status.collect` in-process (the summary query);
- ``status_cli_s`` / ``status_bytes``: ``astrowatch status --json`` as a subprocess, wall-clock (median of 3);
- ``metrics_ms``: ``GET /metrics`` with the token, median of 20 (the default: no per-user series);
  ``metrics_per_user_ms``: the same where ``api.metrics_per_user`` is set (one series per user);
- a daemon (fake backend, systemd watchdog every 1 s via ``WATCHDOG_USEC=2 s``) on that ledger takes
  a burst of ``--burst`` tiny photos dropped at once: ``per_job_ms`` (first drop to the last result
  in the inbox, per job), ``rss_mb`` as the last result arrives and ``rss_idle_after_mb`` 3 s later
  (idle), ``heartbeat_gap_max_s`` (longest gap between two
  ``WATCHDOG=1``); then as many review decisions at once (every result moved into ``approved/``),
  and a SIGTERM 1 s into them: ``sigterm_s`` (signal to exit).  While the burst runs, the reads
  above are timed again from a thread (``busy_*``: the daemon running, its WAL open, its writes
  going on), against the same targets.

``--stall N`` (issue 27 item 4): after the burst, a fresh daemon gets N photos at once (20,000 in the
issue) and a SIGTERM ``--stall-seconds`` into the flood: ``stall_heartbeat_gap_max_s`` and
``stall_sigterm_s`` while every file is being seen, queued and taken in batches.  ``--pending-share
1 --pending N`` puts N of the history's jobs in the inbox (the issue's "100k results pending").

``--floor N`` (issue 27 item 6) runs a daemon on N phone-like JPEGs (``--floor-size``, fake backend
×2) and, in the same run and in alternating rounds, the bare loop of :func:`floor_loop` on copies
of the same photos: ms per job in steady state (first to last result) and CPU ms per job (the process and its
decoder children, from ``/proc`` and ``getrusage``), and their ratios (target ≤ 1.1).  ``--sizes ''``
skips the history sizes.

``--soak N`` adds one daemon run that takes N photos and samples its RSS at 2k and at the end
(``rss_growth_mb``: the issue's "less than 12 MB from 2k to 10k jobs").  Targets are checked and
printed; ``--plot`` draws the curves (matplotlib) into ``bench/scale.png``.

    .venv/bin/python bench/scale.py --sizes 2000,10000,100000 --burst 2000 --plot
    .venv/bin/python bench/scale.py --sizes '' --floor 150 --floor-size 512x384
    .venv/bin/python bench/scale.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    BenchDaemon,
    loadavg,
    log,
    median,
    memory_mb,
    parse_args,
    percentile,
    save,
    scratch,
    small_png,
    verdict,
    write_bench_config,
)

TARGETS = {"inbox_p99_ms": 20.0, "status_query_ms": 50.0, "status_cli_s": 0.5, "status_bytes": 200_000,
           "metrics_ms": 10.0, "heartbeat_gap_max_s": 2.0, "sigterm_s": 2.0}
FINAL = ("delivered", "filed", "rejected", "failed")


def synthesize(data: Path, n: int, pending: int, users: int) -> None:
    """``n`` jobs of history written straight into a fresh ledger (jobs and history rows), then
    counted by the ledger's own back-fill (as at the first start after an upgrade)."""
    from astrowatch.storage.ledger import Ledger

    path = data / "state" / "ledger.sqlite3"
    Ledger(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    rng = random.Random(n)
    t0 = time.time() - n * 2.0
    inbox = min(pending, n)
    jobs, history = [], []
    for i in range(n):
        user = f"user{i % users:04d}"
        kind = "enhance" if i % 5 else "astro"
        state = "inbox" if i >= n - inbox else FINAL[rng.randrange(len(FINAL))] if i % 50 else "failed"
        at = t0 + i * 2.0
        job_id = uuid.uuid4().hex[:12]
        result = json.dumps({"image": f"p{i}.{job_id}.png", "backend": "fake"})
        jobs.append((job_id, kind, user, f"Utilisateurs/{user}/p{i}.png", f"{i:064x}", state, 1, "{}", None, 0,
                     "bench" if state == "failed" else None, None, None, result, at, at + 1.5))
        history += [(job_id, None, "queued", at, None), (job_id, "queued", "running", at + 0.1, None)]
        if state == "failed":
            history += [(job_id, "running", "failing", at + 0.2, "BackendError"),
                        (job_id, "failing", "failed", at + 0.3, None)]
        else:
            history += [(job_id, "running", "publishing", at + 0.1 + rng.uniform(0.02, 0.4), None),
                        (job_id, "publishing", "inbox", at + 1.0, None)]
            if state != "inbox":
                history += [(job_id, "inbox", "deciding", at + 1.4, None), (job_id, "deciding", state, at + 1.5, None)]
    conn.executemany("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", jobs)
    conn.executemany("INSERT INTO history(job_id, from_state, to_state, at, note) VALUES (?,?,?,?,?)", history)
    conn.execute("DELETE FROM meta WHERE key = 'counters'")
    conn.execute("COMMIT")
    conn.close()
    for u in range(users):
        (data / "Utilisateurs" / f"user{u:04d}").mkdir(parents=True, exist_ok=True)
    Ledger(path).close()  # the back-fill


def timed(fn: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def reads(cfg_path: Path, users: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from astrowatch.api.app import create_app
    from astrowatch.runtime.settings import load_config
    from astrowatch.runtime.status import collect

    config = load_config(cfg_path)
    token = "b" * 32
    auth = {"Authorization": f"Bearer {token}"}
    http = TestClient(create_app(config, token))
    rng = random.Random(1)

    def user_page() -> None:
        resp = http.get(f"/api/inbox?user=user{rng.randrange(users):04d}", headers=auth)
        assert resp.status_code == 200, resp.text

    timed(user_page, 10)  # warm: the first connection, the page cache
    user_ms = timed(user_page, 200)
    first = http.get("/api/inbox?limit=1000", headers=auth)
    deep = first.headers.get("link", "<>")[1:].split(">")[0] or "/api/inbox"
    all_ms = timed(lambda: http.get("/api/inbox", headers=auth), 50) + timed(lambda: http.get(deep, headers=auth), 50)
    timed(lambda: collect(config), 2)
    status_ms = timed(lambda: collect(config), 10)
    http.get("/metrics", headers=auth)
    metrics_ms = timed(lambda: http.get("/metrics", headers=auth), 20)
    per_user = config.model_copy(update={"api": config.api.model_copy(update={"metrics_per_user": True})})
    http_users = TestClient(create_app(per_user, token))
    http_users.get("/metrics", headers=auth)
    metrics_users_ms = timed(lambda: http_users.get("/metrics", headers=auth), 20)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli: list[float] = []
    for _ in range(3):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "astrowatch", "status", "--json", "-c", str(cfg_path)],
                              capture_output=True, env=env, cwd=cfg_path.parent)
        cli.append(time.perf_counter() - t)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    cli_s = median(cli)
    return {"inbox_p99_ms": round(percentile(user_ms, 99), 2), "inbox_p50_ms": round(percentile(user_ms, 50), 2),
            "inbox_all_p99_ms": round(percentile(all_ms, 99), 2),
            "status_query_ms": round(median(status_ms), 2), "status_cli_s": round(cli_s, 3),
            "status_bytes": len(proc.stdout), "metrics_ms": round(median(metrics_ms), 2),
            "metrics_bytes": len(http.get("/metrics", headers=auth).content),
            "metrics_per_user_ms": round(median(metrics_users_ms), 2),
            "metrics_per_user_bytes": len(http_users.get("/metrics", headers=auth).content)}


def gaps(d: BenchDaemon, since: float) -> float:
    beats = [t for t, m in d.arrivals if "WATCHDOG=1" in m and t >= since]
    return max((b - a for a, b in zip(beats, beats[1:], strict=False)), default=0.0)


def wait_states(data: Path, state: str, n: int, d: BenchDaemon, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    path = data / "state" / "ledger.sqlite3"
    while time.monotonic() < deadline:
        d.pump(0.5)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            got = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = ? AND source LIKE '%/b%'", (state,)).fetchone()[0]
        finally:
            conn.close()
        if got >= n:
            return
    raise SystemExit(f"burst not done in {timeout} s: {got}/{n} {state}")


def staged_photos(data: Path, n: int, users: int, prefix: str, seed: int) -> list[tuple[Path, Path]]:
    """``n`` tiny photos written beside the tree (``data/staging``), each with the user folder it
    is to be renamed into: the renames, done at once, are the burst."""
    staging = data / "staging"
    staging.mkdir(exist_ok=True)
    names = []
    for i in range(n):
        src = staging / f"{prefix}{i:06d}.png"
        src.write_bytes(small_png(seed + i))
        names.append((src, data / "Utilisateurs" / f"user{i % users:04d}" / src.name))
    return names


def stop_timed(d: BenchDaemon) -> float:
    """SIGTERM, then seconds until the process has exited."""
    t_sig = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc is not None
    d.proc.wait(timeout=120)
    took = time.monotonic() - t_sig
    d.drain_messages()
    return took


def burst(cfg_path: Path, data: Path, n: int, users: int) -> dict[str, Any]:
    d = BenchDaemon(cfg_path)
    d.watchdog_usec = 2_000_000  # WATCHDOG=1 every second; systemd would kill after 2 s
    d.start()
    try:
        d.pump(2.0)
        rss_idle = memory_mb(d.pid)["VmRSS"]
        names = staged_photos(data, n, users, "b", 10_000_000)
        t0 = time.monotonic()
        for src, dst in names:  # the burst: all at once (renames)
            os.replace(src, dst)
        busy: dict[str, Any] = {}
        # the reads again, while the daemon works through the burst (its WAL open, its writes going
        # on): from a thread, so that this one keeps reading the notify socket as systemd would
        reader = threading.Thread(target=lambda: busy.update(reads(cfg_path, users)), daemon=True)
        reader.start()
        wait_states(data, "inbox", n, d, timeout=max(120.0, n * 0.2))
        per_job_ms = (time.monotonic() - t0 - 0.5) * 1000 / n  # less the stability wait (0.5 s)
        reader.join(timeout=300)
        rss = memory_mb(d.pid)["VmRSS"]
        d.pump(3.0)  # idle: the memory chore gives back what the burst freed
        rss_after = memory_mb(d.pid)["VmRSS"]
        gap_burst = gaps(d, t0)
        results = sorted((data / "inbox").glob("*/b*.png"))
        t1 = time.monotonic()
        for png in results:  # as many decisions at once
            os.replace(png, data / "approved" / png.name)
        d.pump(1.0)
        sigterm_s = stop_timed(d)
        return {"per_job_ms": round(per_job_ms, 2), "rss_idle_mb": round(rss_idle, 1), "rss_mb": round(rss, 1),
                "rss_idle_after_mb": round(rss_after, 1),
                "heartbeat_gap_max_s": round(max(gap_burst, gaps(d, t1)), 2), "sigterm_s": round(sigterm_s, 2),
                "decisions": len(results), **{f"busy_{k}": v for k, v in busy.items()}}
    finally:
        d.close()


def stall(cfg_path: Path, data: Path, n: int, users: int, seconds: float) -> dict[str, Any]:
    """The main loop under a flood (issue 27 item 4): ``n`` photos dropped at once into a running
    daemon, the notify socket read for ``seconds`` (the flood's first minutes: every file seen,
    queued and taken in batches), then a SIGTERM in the middle of it.  The longest gap between two
    ``WATCHDOG=1``, the signal-to-exit time, how many results were done and how many photos the
    ledger knew at the exit (the others still lie in the user folders, for the next start's scan)."""
    d = BenchDaemon(cfg_path)
    d.watchdog_usec = 2_000_000
    d.start()
    try:
        names = staged_photos(data, n, users, "s", 30_000_000)
        d.pump(2.0)
        t0 = time.monotonic()
        for src, dst in names:
            os.replace(src, dst)
        d.pump(seconds)
        sigterm_s = stop_timed(d)
        conn = sqlite3.connect(f"file:{data / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True, timeout=30)
        try:
            done = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'inbox' AND source LIKE '%/s%'").fetchone()[0]
            known = conn.execute("SELECT COUNT(*) FROM jobs WHERE source LIKE '%/s%'").fetchone()[0]
        finally:
            conn.close()
        return {"stall_files": n, "stall_seconds": seconds, "stall_heartbeat_gap_max_s": round(gaps(d, t0), 2),
                "stall_sigterm_s": round(sigterm_s, 2), "stall_done": done, "stall_jobs_known": known}
    finally:
        d.close()


def rss_parts(pid: int) -> dict[str, float]:
    """The process's resident memory in MB by kind of mapping (``/proc/<pid>/smaps``): ``heap`` (the
    main malloc heap), ``anon`` (thread malloc arenas, Python's object arenas, SQLite's caches),
    ``file`` (the interpreter, libraries, the ledger's ``-shm`` index) and ``other`` (stacks...)."""
    parts = {"heap": 0.0, "anon": 0.0, "file": 0.0, "other": 0.0}
    kind = "other"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else ""
            kind = "heap" if name == "[heap]" else "anon" if not name else "other" if name.startswith("[") else "file"
        elif head and head[0] == "Rss:":
            parts[kind] += int(head[1]) * 1024 / 1e6
    return {k: round(v, 1) for k, v in parts.items()}


def soak(n: int, users: int, loadtag: list[float], trace: bool = False, mark: int = 2000) -> dict[str, Any]:
    """One daemon takes ``n`` photos (in batches of 500): its RSS at ``mark`` (2k) done and at the end,
    and after each batch (``samples``: RSS by kind of mapping, :func:`rss_parts`).
    ``trace``: the daemon runs under ``bench/tracemalloc_run.py``, snapshots are taken at both marks
    and the allocation sites that grew most between them are returned (``growth``)."""
    with scratch("scale-soak") as tmp:
        cfg = write_bench_config(tmp, watch={"stability_seconds": 0.5, "polling": False, "polling_interval": 2.0,
                                             "rescan_seconds": 0})
        data = tmp / "data"
        snaps = str(tmp / "tm")
        prefix = [sys.executable, str(Path(__file__).with_name("tracemalloc_run.py")), snaps] if trace else None
        d = BenchDaemon(cfg, prefix=prefix).start()
        marks: dict[str, float] = {}
        samples: list[dict[str, Any]] = []

        def snapshot(label: str) -> None:
            if trace:
                Path(snaps + ".req").write_text(label)
                while Path(snaps + ".req").exists():
                    d.pump(0.2)

        try:
            for start in range(0, n, 500):
                for i in range(start, min(start + 500, n)):
                    folder = data / "Utilisateurs" / f"user{i % users:04d}"
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f".b{i:06d}.part").write_bytes(small_png(20_000_000 + i))
                    os.replace(folder / f".b{i:06d}.part", folder / f"b{i:06d}.png")
                wait_states(data, "inbox", min(start + 500, n), d, timeout=600)
                done = min(start + 500, n)
                samples.append({"jobs": done, "rss": round(memory_mb(d.pid)["VmRSS"], 1), **rss_parts(d.pid)})
                log(f"soak: {samples[-1]}")
                if done >= min(mark, n) and "at_2k" not in marks:
                    marks["at_2k"] = memory_mb(d.pid)["VmRSS"]
                    snapshot("2k")
            d.pump(2.0)
            marks["at_end"] = memory_mb(d.pid)["VmRSS"]
            snapshot("end")
            d.stop(timeout=60)
        finally:
            d.close()
        growth: list[str] = []
        if trace:
            from tracemalloc_run import top_growth

            growth = top_growth(snaps + "-2k.snap", snaps + "-end.snap")
            log("\n".join(growth))
    return {"jobs": n, "mark": mark, **({"growth": growth} if trace else {}), "samples": samples,
            "rss_at_2k_mb": round(marks["at_2k"], 1), "rss_end_mb": round(marks["at_end"], 1),
            "rss_growth_mb": round(marks["at_end"] - marks["at_2k"], 1),
            "rss_ok": verdict(marks["at_end"] - marks["at_2k"] < 12.0), "loadavg_before": loadtag}


def photo_jpeg(i: int, width: int, height: int) -> bytes:
    """A distinct phone-like JPEG (noise on a gradient: it does not compress to nothing)."""
    import io as _io

    from PIL import Image

    noise = [Image.effect_noise((width, height), 40 + 10 * c) for c in range(3)]
    img = Image.merge("RGB", noise)
    img = Image.blend(img, Image.linear_gradient("L").resize((width, height)).convert("RGB"), 0.5)
    img.putpixel((0, 0), (i % 256, (i // 256) % 256, (i // 65536) % 256))
    buf = _io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _cpu_with_children(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` (its waited-for children: the decoder), seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _steady(ends: list[float]) -> float:
    """Milliseconds per job between the first and the last job's end (start-up excluded)."""
    ends = sorted(ends)
    return (ends[-1] - ends[0]) * 1000 / (len(ends) - 1)


def floor_loop(cfg_path: Path, sources: list[Path]) -> tuple[list[float], float]:
    """The bare loop: per photo the same safe work as the daemon's, nothing else -- the input's
    sha256 (safefs), the decode in the sandboxed child (:func:`~astrowatch.pipeline.preprocess.preprocess`),
    the same backend call, one PNG encode with the job's chunks, the writes through safefs (inbox
    image, caption, sidecar; cache image and sidecar), the result's sha256, the photo moved into
    its archive folder, and one transaction inserting the job, its history row and its outbox
    event.  Returns each job's end time (time.time()) and the CPU seconds used (children included)."""
    import hashlib
    import resource

    from astrowatch.backends.base import EnhanceTask
    from astrowatch.backends.pool import BackendPool
    from astrowatch.pipeline.preprocess import preprocess
    from astrowatch.runtime.settings import load_config
    from astrowatch.storage import safefs
    from astrowatch.storage.images import pixel_png, png_bytes
    from astrowatch.storage.layout import Layout

    config = load_config(cfg_path)
    layout = Layout(config.data_dir)
    root = layout.root
    pool = BackendPool(config, device="cpu")
    backend = pool.get("enhance", "fake")
    conn = sqlite3.connect(root / "state" / "floor.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript("CREATE TABLE IF NOT EXISTS jobs(id TEXT PRIMARY KEY, user TEXT, source TEXT, sha TEXT,"
                       " state TEXT, result TEXT, at REAL);"
                       "CREATE TABLE IF NOT EXISTS history(job_id TEXT, to_state TEXT, at REAL);"
                       "CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY, job_id TEXT, at REAL, payload TEXT)")

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    ends, cpu0 = [], cpu()
    for src in sources:
        job_id = uuid.uuid4().hex[:12]
        user = src.parent.name
        digest, _st = safefs.sha256_of(src, root=root, max_bytes=config.limits.max_image_bytes, what="photo")
        image, facts = preprocess(src, enhance=config.enhance, limits=config.limits, root=root, sha256=digest)
        result = backend.enhance(EnhanceTask(job_id=job_id, user=user, image=image, source_name=src.name,
                                             params={}, seed=1, facts=facts))
        data = png_bytes(result.image, meta={"job_id": job_id, "kind": "enhance", "user": user, "source_sha256": digest})
        stem = f"{src.stem}.{job_id}"
        inbox = layout.inbox_dir(user)
        safefs.write_text(inbox / f"{stem}.txt", result.description + "\n", root=root)
        safefs.write_json(inbox / f"{stem}.json", {"job_id": job_id, "user": user, "facts": facts}, root=root)
        safefs.write_bytes(inbox / f"{stem}.png", data, root=root)
        key = hashlib.sha256(image.tobytes()).hexdigest()
        safefs.write_bytes(layout.cache / key[:2] / f"{key}.png", pixel_png(result.image), root=root)
        safefs.write_text(layout.cache / key[:2] / f"{key}.json", json.dumps({"backend": "fake"}), root=root)
        result_sha = hashlib.sha256(data).hexdigest()
        safefs.move_out(src, layout.archive_dir(user, job_id) / src.name, root=root)
        now = time.time()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO jobs VALUES (?,?,?,?,?,?,?)", (job_id, user, str(src), digest, "inbox",
                                                                  json.dumps({"sha256": result_sha}), now))
        conn.execute("INSERT INTO history VALUES (?,?,?)", (job_id, "inbox", now))
        conn.execute("INSERT INTO events(job_id, at, payload) VALUES (?,?,?)",
                     (job_id, now, json.dumps({"type": "job.inbox", "job_id": job_id, "user": user})))
        conn.execute("COMMIT")
        ends.append(time.time())
    spent = cpu() - cpu0
    conn.close()
    pool.close()
    return ends, spent


def floor(n: int, width: int, height: int, users: int = 10, rounds: int = 6) -> dict[str, Any]:
    """Issue 27 item 6: the daemon's per-job cost against :func:`floor_loop`'s, in one run, on the
    same ``n`` photos (fresh copies for each side), in ``rounds`` alternations (the daemon takes
    n/rounds photos dropped at once, then the bare loop the same ones), so a change of load on a
    shared machine falls on both sides.  Both: ms per job between the first and the last result of
    each round (steady state: the stability wait and start-up are outside it), and CPU ms per job
    (the process and its decoder children)."""
    photos = [photo_jpeg(i, width, height) for i in range(n)]
    per = max(2, n // rounds)
    with scratch("scale-floor") as tmp:
        cfg = write_bench_config(tmp, watch={"stability_seconds": 0.5, "polling": False, "polling_interval": 2.0,
                                             "rescan_seconds": 0})
        data = tmp / "data"
        staging = data / "staging"
        staging.mkdir(parents=True)
        load = [loadavg()]
        daemon_ms = bare_ms = daemon_cpu = bare_cpu = 0.0
        done = 0
        d = BenchDaemon(cfg).start()
        try:
            d.pump(1.0)
            for start in range(0, per * rounds, per):
                batch = list(enumerate(photos))[start:start + per]
                names = []
                for i, raw in batch:
                    (staging / f"b{i:05d}.jpg").write_bytes(raw)
                    folder = data / "Utilisateurs" / f"user{i % users:02d}"
                    folder.mkdir(parents=True, exist_ok=True)
                    names.append((staging / f"b{i:05d}.jpg", folder / f"b{i:05d}.jpg"))
                t0, cpu0 = time.time(), _cpu_with_children(d.pid)
                for src, dst in names:
                    os.replace(src, dst)
                done += len(batch)
                wait_states(data, "inbox", done, d, timeout=max(300.0, per * 2.0))
                daemon_cpu += _cpu_with_children(d.pid) - cpu0
                conn = sqlite3.connect(f"file:{data / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True, timeout=30)
                ends = [r[0] for r in conn.execute("SELECT at FROM history WHERE to_state = 'inbox' AND at >= ?", (t0,))]
                conn.close()
                daemon_ms += _steady(ends) * (len(ends) - 1)
                sources = []
                for i, raw in batch:
                    folder = data / "floor-in" / f"floor{i % users:02d}"  # not watched: the daemon is up
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"f{i:05d}.jpg").write_bytes(raw)
                    sources.append(folder / f"f{i:05d}.jpg")
                bare_ends, spent = floor_loop(cfg, sources)
                bare_ms += _steady(bare_ends) * (len(bare_ends) - 1)
                bare_cpu += spent
                load.append(loadavg())
            d.stop(timeout=60)
        finally:
            d.close()
        conn = sqlite3.connect(data / "state" / "ledger.sqlite3")
        spans = conn.execute("SELECT r.at, i.at FROM history r JOIN history i ON i.job_id = r.job_id"
                             " WHERE r.to_state = 'running' AND i.to_state = 'inbox' ORDER BY r.at").fetchall()
        conn.close()
    jobs, gaps_ = per * rounds, rounds * (per - 1)
    return {"jobs": jobs, "rounds": rounds, "photo": f"{width}x{height} JPEG",
            "daemon_ms_per_job": round(daemon_ms / gaps_, 1), "floor_ms_per_job": round(bare_ms / gaps_, 1),
            "ratio": round(daemon_ms / bare_ms, 3),
            "daemon_cpu_ms_per_job": round(daemon_cpu * 1000 / jobs, 1),
            "floor_cpu_ms_per_job": round(bare_cpu * 1000 / jobs, 1), "cpu_ratio": round(daemon_cpu / bare_cpu, 3),
            "daemon_running_to_inbox_ms": round(median([(b - a) * 1000 for a, b in spans]), 1),
            "ratio_ok": verdict(daemon_ms / bare_ms <= 1.1), "cpu_ratio_ok": verdict(daemon_cpu / bare_cpu <= 1.1),
            "loadavg": load}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["jobs"] for r in rows]
    panels = [("per_job_ms", "per-job ms (burst)"), ("inbox_p99_ms", "user inbox page p99 ms"),
              ("status_cli_s", "status --json s"), ("metrics_ms", "/metrics ms"), ("rss_mb", "daemon RSS MB"),
              ("heartbeat_gap_max_s", "longest heartbeat gap s"), ("sigterm_s", "SIGTERM to exit s")]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        ax.plot(sizes, [r[key] for r in rows], marker="o")
        if key in TARGETS:
            ax.axhline(TARGETS[key], color="red", linestyle="--", linewidth=1, label="target")
            ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("jobs in the ledger")
    axes.flat[-1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def run_size(n: int, pending: int, burst_n: int, share: float = 0.1, stall_n: int = 0,
             stall_s: float = 60.0) -> dict[str, Any]:
    users = max(20, min(1000, n // 50))
    with scratch(f"scale-{n}") as tmp:
        cfg = write_bench_config(tmp, watch={"stability_seconds": 0.5, "polling": False, "polling_interval": 2.0,
                                             "rescan_seconds": 0})
        data = tmp / "data"
        for folder in ("state", "inbox", "approved", "rejected", "redo", "Utilisateurs"):
            (data / folder).mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        synthesize(data, n, min(pending, int(n * share)), users)
        log(f"{n} jobs of history written in {time.monotonic() - t:.1f} s; {users} users")
        row: dict[str, Any] = {"jobs": n, "users": users, "pending": min(pending, int(n * share)), "loadavg": loadavg()}
        row.update(reads(cfg, users))
        row.update(burst(cfg, data, burst_n, users))
        if stall_n:
            row.update(stall(cfg, data, stall_n, users, stall_s))
        row["checks"] = {key: verdict(row[key] <= v) for k, v in TARGETS.items()
                         for key in (k, f"busy_{k}") if key in row}
        log(json.dumps(row))
        return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,10000,100000", help="jobs of history, comma-separated")
    ap.add_argument("--pending", type=int, default=10_000, help="results waiting in the inbox (at most 10 %% of jobs)")
    ap.add_argument("--burst", type=int, default=2000, help="photos dropped at once, then as many decisions")
    ap.add_argument("--pending-share", type=float, default=0.1, help="at most this share of the jobs waits in the "
                    "inbox (1: every job, e.g. --sizes 100000 --pending 100000 --pending-share 1)")
    ap.add_argument("--stall", type=int, default=0, help="also: this many photos dropped at once, SIGTERM "
                    "--stall-seconds into the flood (heartbeat gap and signal-to-exit under a flood)")
    ap.add_argument("--stall-seconds", type=float, default=60.0)
    ap.add_argument("--soak", type=int, default=0, help="also: one daemon takes this many photos (RSS growth)")
    ap.add_argument("--tracemalloc", action="store_true", help="--soak under tracemalloc: what grew, by site")
    ap.add_argument("--soak-mark", type=int, default=2000, help="--soak: the first RSS sample, after this many jobs")
    ap.add_argument("--floor", type=int, default=0, help="also: the daemon's per-job cost against a bare loop's, "
                    "on this many photos (item 6)")
    ap.add_argument("--floor-size", default="512x384", help="the floor run's photos, WIDTHxHEIGHT")
    ap.add_argument("--plot", action="store_true", help="draw bench/scale.png from the results")
    args = parse_args(ap, sizes="200,1000", burst=30, pending=100)
    rows = [run_size(int(n), args.pending, args.burst, args.pending_share, args.stall, args.stall_seconds)
            for n in args.sizes.split(",") if n]
    result: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "targets": TARGETS,
                              "sizes": rows}
    if args.soak:
        result["soak"] = soak(args.soak, 50, loadavg(), trace=args.tracemalloc, mark=args.soak_mark)
    if args.floor:
        width, _, height = args.floor_size.partition("x")
        result["floor"] = floor(args.floor, int(width), int(height))
    path = save("scale", result)
    if args.plot and rows:
        plot(rows, Path(__file__).resolve().parent / "scale.png")
    print(json.dumps({"sizes": [{k: v for k, v in r.items() if k != "checks"} for r in rows],
                      "checks": [r["checks"] for r in rows], "soak": result.get("soak"),
                      "floor": result.get("floor")}, indent=1))
    log(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
