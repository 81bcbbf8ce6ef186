"""``astrowatch api`` end to end: a real uvicorn process on a loopback port, driven with
``requests``, next to the real daemon process (fake backend, 1.5 s per image so that states can
be watched), sharing one data folder.  Each test works on its own user."""

from __future__ import annotations

import http.client
import io
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from api_support import TOKEN, ApiProcess, closed_port_url, wait_state
from harness import DaemonProcess, drop_theme, run_cli, wait_until, write_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    find_spec("fastapi") is None or find_spec("uvicorn") is None or find_spec("prometheus_client") is None,
    reason="the 'api' extra (fastapi, uvicorn, prometheus_client) is not installed")]

KEYS = {"user", "state", "image", "pending", "job_id", "prompt", "backend", "error", "updated_at"}
DELAY = 1.5


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    config = write_config(root, astro={"backend": "fake"}, fake={"delay_seconds": DELAY},
                          sdapi={"url": closed_port_url(), "connect_timeout": 0.5, "max_retries": 0,
                                 "health_interval": 3600}, api={"metrics_per_user": True})
    daemon = DaemonProcess(config).start()
    api = ApiProcess(config)
    s = SimpleNamespace(root=root, data=root / "data", config=config, daemon=daemon, api=api)
    try:
        api.start()
        yield s
    finally:
        api.close()
        s.daemon.close()


def _error(resp: requests.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "hint"} and body["error"] and body["hint"], body
    return body


def _decisions(stack: SimpleNamespace, job_id: str) -> list[dict[str, Any]]:
    path = stack.data / "logs" / "reviews.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["job_id"] == job_id]


def _in_inbox(stack: SimpleNamespace, user: str) -> dict[str, Any]:
    drop_theme(stack.data, user)
    return wait_state(stack.api, f"/api/astro-image/{user}", {"inbox"})


def test_the_life_of_a_users_picture(stack) -> None:
    api = stack.api
    first = api.get("/api/astro-image/lina")
    assert first.status_code == 200
    assert first.json() == {**dict.fromkeys(KEYS), "user": "lina", "state": "none"}  # every key, even unknown
    drop_theme(stack.data, "busy")  # keeps the one worker busy, so lina's job is seen queued
    wait_state(api, "/api/astro-image/busy", {"running"})
    drop_theme(stack.data, "lina")
    seen: list[str] = []

    def in_inbox() -> dict[str, Any] | None:
        body = api.get("/api/astro-image/lina").json()
        assert set(body) == KEYS
        if not seen or seen[-1] != body["state"]:
            seen.append(body["state"])
        return body if body["state"] == "inbox" else None

    body = wait_until(in_inbox, 30, interval=0.02, what="lina's result in the inbox")
    assert [s for s in seen if s != "publishing"] == ["none", "queued", "running", "inbox"]  # publishing: ms
    assert body["image"] is None and body["backend"] == "fake" and body["error"] is None
    assert body["prompt"] and body["updated_at"]
    assert body["pending"] == f"/api/jobs/{body['job_id']}/image.png"
    pending = api.get(body["pending"])
    inbox_file = next((stack.data / "inbox" / "lina").glob("*.png"))
    assert pending.headers["content-type"] == "image/png" and pending.content == inbox_file.read_bytes()

    assert api.post(f"/api/jobs/{body['job_id']}/approve").status_code == 202
    final = wait_state(api, "/api/astro-image/lina", {"approved"})
    assert final["image"] == "/api/astro-image/lina/image.png" and final["pending"] is None
    png = api.get(final["image"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content == (stack.data / "Utilisateurs" / "lina" / "theme_lina.png").read_bytes()
    assert png.headers["cache-control"] == "no-cache" and png.headers["etag"]
    again = api.get(final["image"], headers={"If-None-Match": png.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert [(r["decision"], r["via"]) for r in _decisions(stack, body["job_id"])] == [("approve", "api")]


def test_post_with_a_backend_switches_it_for_that_job_only(stack) -> None:
    from PIL import Image

    api = stack.api
    assert _in_inbox(stack, "noor")["backend"] == "fake"
    resp = api.post("/api/astro-image/noor?backend=wheel")
    assert resp.status_code == 202
    body = resp.json()
    assert body["state"] == "queued" and body["status_url"] == f"/api/jobs/{body['job_id']}"
    job = wait_state(api, body["status_url"], {"inbox"})
    assert job["backend"] == "wheel" and job["params"] == {"backend": "wheel"}
    assert Image.open(io.BytesIO(api.get(job["image"]).content)).size == (256, 256)  # astro.wheel_size
    sidecar = json.loads(next((stack.data / "inbox" / "noor").glob(f"*.{job['job_id']}.json")).read_text())
    assert sidecar["backend"] == "wheel"
    plain = api.post("/api/astro-image/noor", json={"seed": 42}).json()
    job = wait_state(api, plain["status_url"], {"inbox"})
    assert job["backend"] == "fake" and job["params"] == {"seed": 42}  # the configured backend again


def test_approve_reject_and_redo_through_the_api(stack) -> None:
    api = stack.api
    first = _in_inbox(stack, "rey")["job_id"]
    assert api.post(f"/api/jobs/{first}/reject").json() == {
        "job_id": first, "decision": "reject", "state": "inbox", "status_url": f"/api/jobs/{first}"}
    assert wait_state(api, f"/api/jobs/{first}", {"rejected"})["decision"] == "reject"
    assert not list((stack.data / "inbox" / "rey").glob(f"*{first}*"))
    assert list((stack.data / "archive" / "rey" / first).glob(f"*{first}.png"))
    body = _error(api.post(f"/api/jobs/{first}/approve"), 409)
    assert "not awaiting review" in body["error"] and "rejected" in body["error"]

    second = wait_state(api, api.post("/api/astro-image/rey").json()["status_url"], {"inbox"})["job_id"]
    resp = api.post(f"/api/jobs/{second}/redo", json={"params": {"seed": 7}, "caption": "a lion at dusk"})
    assert resp.status_code == 202
    _error(api.post(f"/api/jobs/{second}/approve"), 409)  # already moved into redo/
    redone = wait_state(api, f"/api/jobs/{second}", {"redone"})
    child = wait_state(api, f"/api/jobs/{redone['redo_job_id']}", {"inbox"})
    assert child["params"] == {"seed": 7} and child["parent_id"] == second
    assert json.loads(next((stack.data / "inbox" / "rey").glob(f"*{child['job_id']}.json")).read_text())["seed"] == 7

    assert api.post(f"/api/jobs/{child['job_id']}/approve").status_code == 202
    wait_state(api, f"/api/jobs/{child['job_id']}", {"delivered"})
    log = [(r["decision"], r["via"], r["overrides"])
           for j in (first, second, child["job_id"]) for r in _decisions(stack, j)]
    assert log == [("reject", "api", None), ("redo", "api", {"seed": 7}), ("approve", "api", None)]
    assert (stack.data / "archive" / "rey" / second / f"theme_rey.{second}.txt").read_text() == "a lion at dusk\n"


def test_a_decision_by_moving_the_file_is_recorded_as_files(stack) -> None:
    job = _in_inbox(stack, "moe")["job_id"]
    image = next((stack.data / "inbox" / "moe").glob("*.png"))
    image.rename(stack.data / "approved" / image.name)
    wait_state(stack.api, f"/api/jobs/{job}", {"delivered"})
    assert [r["via"] for r in _decisions(stack, job)] == ["files"]


def test_a_flood_of_generation_requests_for_one_user_gets_429_with_retry_after(stack) -> None:
    _in_inbox(stack, "flood")
    answers = [stack.api.post("/api/astro-image/flood", json={"seed": seed}) for seed in range(6)]
    statuses = [r.status_code for r in answers]
    assert statuses[:3] == [202, 202, 202] and 429 in statuses[3:], statuses
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.headers["retry-after"] == "30" and "max_pending_per_user" in _error(refused, 429)["error"]
    assert stack.api.post("/api/astro-image/flood", json={"seed": 0}).status_code == 202  # the same: that job
    for bad in (".hidden", "x" * 300, "%20spaced", "a%01b"):  # user names are checked as folder names
        _error(stack.api.post(f"/api/astro-image/{bad}"), 400)


def test_401_without_the_right_bearer_token(stack) -> None:
    base = stack.api.base
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN}):
        for path in ("/api/inbox", "/api/astro-image/lina", "/api/astro-image/lina/image.png"):
            resp = requests.get(base + path, headers=headers, timeout=10)
            _error(resp, 401)
            assert resp.headers["www-authenticate"] == "Bearer" and TOKEN not in resp.text
    _error(requests.post(base + "/api/astro-image/lina", timeout=10), 401)
    _error(requests.get(base + f"/api/inbox?token={TOKEN}", timeout=10), 401)
    assert requests.get(base + "/healthz", timeout=10).status_code == 200  # no token needed
    assert requests.get(base + "/metrics", timeout=10).status_code == 200
    paths = requests.get(base + "/openapi.json", timeout=10).json()["paths"]  # for the upstream developers
    assert {"/api/astro-image/{user}", "/api/astro-image/{user}/image.png", "/api/jobs/{job_id}", "/api/inbox",
            "/api/jobs/{job_id}/approve", "/api/jobs/{job_id}/reject", "/api/jobs/{job_id}/redo"} <= set(paths)


def test_404_409_413_422_are_json_with_a_hint(stack) -> None:
    api = stack.api
    _in_inbox(stack, "ida")
    assert "no job" in _error(api.get("/api/jobs/0123456789ab"), 404)["error"]
    _error(api.post("/api/jobs/0123456789ab/approve"), 404)
    assert "no readable theme" in _error(api.post("/api/astro-image/nobody"), 404)["error"]
    assert "no delivered picture" in _error(api.get("/api/astro-image/ida/image.png"), 404)["error"]
    _error(api.get("/api/nothing-here"), 404)
    _error(api.http.delete(api.base + "/api/inbox", timeout=10), 405)

    big = json.dumps({"seed": 1, "style": "x" * 70_000})
    assert "64 KB" in _error(api.post("/api/astro-image/ida", data=big,
                                      headers={"Content-Type": "application/json"}), 413)["error"]
    chunked = (b"x" * 8192 for _ in range(10))  # no Content-Length: counted while read
    _error(api.post("/api/astro-image/ida", data=chunked, headers={"Content-Type": "application/json"}), 413)

    body = _error(api.post("/api/astro-image/ida", json={"seed": 1, "colour": "red"}), 422)
    assert "colour" in body["error"] and "seed, style" in body["hint"]
    body = _error(api.post("/api/astro-image/ida?backend=dalle"), 422)
    assert "dalle" in body["error"] and body["hint"] == "valid backends: wheel, fake, sdxl, sdapi, openai"
    assert "steps" in _error(api.post("/api/astro-image/ida?steps=40"), 422)["error"]
    assert "figuratif" in _error(api.post("/api/astro-image/ida", json={"style": "baroque"}), 422)["hint"]
    _error(api.post("/api/astro-image/ida", json={"seed": "many"}), 422)
    _error(api.post("/api/astro-image/ida", json=[1, 2]), 422)
    _error(api.post("/api/astro-image/ida", data=b"{not json", headers={"Content-Type": "application/json"}), 422)
    job = api.get("/api/astro-image/ida").json()["job_id"]
    _error(api.post(f"/api/jobs/{job}/approve", json={"caption": "ok", "params": {}}), 422)
    _error(api.post(f"/api/jobs/{job}/redo", json={"params": {"_snapshot_from": "x"}}), 422)
    assert "wheel" in _error(api.post(f"/api/jobs/{job}/redo", json={"params": {"backend": "dalle"}}), 422)["hint"]
    assert api.get(f"/api/jobs/{job}").json()["state"] == "inbox"  # none of that decided anything


def _raw(stack: SimpleNamespace, method: str, path: str) -> tuple[int, bytes, str]:
    """Send ``path`` byte for byte (requests/urllib3 would normalise ``..`` and ``%2e%2e``)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.api.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.putheader("Content-Length", "0")
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("content-type") or ""
    finally:
        conn.close()


TRAVERSALS = [
    "/api/astro-image/..", "/api/astro-image/%2e%2e", "/api/astro-image/..%2f..%2fstate",
    "/api/astro-image/%2e%2e%2f%2e%2e/image.png", "/api/astro-image/../../state/ledger.sqlite3",
    "/api/astro-image/a%5cb", "/api/astro-image/%5c..%5c..", "/api/astro-image/%00", "/api/astro-image/lina%00",
    "/api/astro-image/%2fetc%2fpasswd", "/api/astro-image/%2fetc%2fpasswd/image.png", "/api/astro-image/.hidden",
    "/api/astro-image/_review", "/api/astro-image/" + "x" * 250, "/api/astro-image/" + "%C3%A9" * 101,
    "/api/astro-image/%20lina", "/api/jobs/..", "/api/jobs/%2e%2e/image.png", "/api/jobs/..%2f..%2fledger",
    "/api/jobs/%00", "/api/jobs/" + "a" * 300, "/api/inbox?user=..", "/api/inbox?user=%2fetc", "/api/inbox?user=a%00",
]


def test_path_traversal_attempts_are_refused(stack) -> None:
    outside = stack.root / "secret.png"
    outside.write_bytes(b"\x89PNG not for you")
    sym = stack.data / "Utilisateurs" / "sym"
    sym.mkdir(parents=True)
    (sym / "theme_sym.png").symlink_to(outside)
    before = sorted(p for p in stack.root.rglob("*") if stack.data not in p.parents)
    for path in TRAVERSALS:
        for method in ("GET", "POST"):
            status, body, ctype = _raw(stack, method, path)
            assert 400 <= status < 500, (method, path, status, body[:200])
            assert ctype.startswith("application/json"), (method, path, ctype)
            assert set(json.loads(body)) == {"error", "hint"} and b"not for you" not in body
    assert _raw(stack, "GET", "/api/astro-image/sym/image.png")[0] == 404  # a symlink is never served
    assert sorted(p for p in stack.root.rglob("*") if stack.data not in p.parents) == before


def test_fifty_parallel_identical_posts_make_one_job(stack) -> None:
    _in_inbox(stack, "zed")
    other = ApiProcess(stack.config, token=None).start()  # a second API process, no token: loopback only
    try:
        def post(i: int) -> requests.Response:
            base, headers = (stack.api.base, {"Authorization": f"Bearer {TOKEN}"}) if i % 2 else (other.base, {})
            return requests.post(base + "/api/astro-image/zed?backend=sdapi", headers=headers, timeout=60)

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(post, range(50)))
    finally:
        other.close()
    assert [a.status_code for a in answers] == [202] * 50
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert sum(a.json()["created"] for a in answers) == 1
    job = wait_state(stack.api, answers[0].json()["status_url"], {"waiting"})  # the WebUI is down: it waits
    assert job["backend"] == "sdapi" and job["error"]
    again = stack.api.post("/api/astro-image/zed?backend=sdapi").json()  # still pending: the same job
    assert again["job_id"] == job["job_id"] and again["created"] is False
    waiting = json.loads(run_cli("status", "--json", config=stack.config).stdout)["waiting"]
    assert Counter(r["user"] for r in waiting)["zed"] == 1


def _quiet(stack: SimpleNamespace) -> dict[str, Any] | None:
    """``status --json`` once nothing is in flight and the daemon's state file (its worker stats,
    rewritten every 2 s) is newer than the ledger's last change."""
    import sqlite3
    from contextlib import closing

    status = json.loads(run_cli("status", "--json", config=stack.config).stdout)
    busy = {"queued", "running", "publishing", "deciding", "failing"} & set(status["counts"])
    moving = any(p.is_file() for d in ("approved", "rejected", "redo") for p in (stack.data / d).rglob("*"))
    with closing(sqlite3.connect(stack.data / "state" / "ledger.sqlite3")) as db:
        last_change = db.execute("SELECT MAX(at) FROM history").fetchone()[0]
    return None if busy or moving or status["daemon"]["updated_at"] <= last_change else status


def test_metrics_parse_and_match_status_json(stack) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    broken = stack.data / "Utilisateurs" / "kim"
    broken.mkdir(parents=True)
    (broken / "theme_kim.json").write_text('{"planets": ')  # a failed job (bad input)
    _in_inbox(stack, "ana")
    stack.api.post("/api/astro-image/ana?backend=sdapi")  # a job waiting for its backend
    wait_until(lambda: stack.api.get("/api/astro-image/kim").json()["state"] == "failed", 30)
    wait_state(stack.api, "/api/astro-image/ana", {"waiting"})
    status = wait_until(lambda: _quiet(stack), 60, interval=0.3, what="no job in flight")

    public = requests.get(stack.api.base + "/metrics", timeout=10)
    assert public.status_code == 200 and 'user="' not in public.text  # no user name without the token
    assert "astrowatch_inbox_results_all" in public.text
    resp = requests.get(stack.api.base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert resp.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    assert all(name.startswith("astrowatch_") for name in families)

    def samples(family: str, suffix: str = "") -> list[tuple[dict[str, str], float]]:
        return [(s.labels, s.value) for s in families[family].samples if s.name == family + suffix]

    jobs = Counter()
    for labels, value in samples("astrowatch_jobs"):
        jobs[labels["state"]] += int(value)
    assert {s: n for s, n in jobs.items() if n} == status["counts"]
    inbox = {lb["user"]: v for lb, v in samples("astrowatch_inbox_results")}
    assert inbox == Counter(i["user"] for i in status["inbox"])
    waiting = {lb["backend"]: v for lb, v in samples("astrowatch_waiting_jobs")}
    assert sum(waiting.values()) == len(status["waiting"]) >= 1 and waiting["sdapi"] >= 1
    assert samples("astrowatch_waiting_oldest_seconds")[0][1] > 0
    failures = {lb["reason"]: v for lb, v in samples("astrowatch_failures", "_total")}
    assert sum(failures.values()) == status["counts"]["failed"] == failures["input"]
    produced = sum(w["stats"]["jobs"] for w in status["daemon"]["workers"])
    assert sum(v for _, v in samples("astrowatch_image_seconds", "_count")) == produced
    fake = {lb["le"]: v for lb, v in samples("astrowatch_image_seconds", "_bucket") if lb["backend"] == "fake"}
    assert fake["1.0"] == 0 and fake["+Inf"] > 0  # fake.delay_seconds = 1.5
    assert samples("astrowatch_daemon_up")[0][1] == 1.0 and status["daemon"]["running"]
    assert 0 < time.time() - samples("astrowatch_last_success_timestamp_seconds")[0][1] < 600


def test_the_token_never_leaks(stack) -> None:
    wrong = "wrong-token-that-must-not-leak-42"
    resp = requests.get(stack.api.base + "/api/inbox", headers={"Authorization": f"Bearer {wrong}"}, timeout=10)
    assert wrong not in resp.text and TOKEN not in resp.text
    assert TOKEN not in stack.api.get("/api/inbox").text and TOKEN not in stack.api.get("/openapi.json").text
    for path in stack.root.rglob("*"):  # logs of both processes, the ledger, every sidecar and jsonl
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert TOKEN.encode() not in data and wrong.encode() not in data, path


def test_healthz_is_503_while_the_daemon_is_stopped_and_decisions_wait_for_it(stack) -> None:
    job = _in_inbox(stack, "pia")["job_id"]
    assert requests.get(stack.api.base + "/healthz", timeout=10).json()["status"] == "ok"
    assert stack.daemon.stop() == 0
    resp = requests.get(stack.api.base + "/healthz", timeout=10)
    assert resp.status_code == 503 and "not running" in resp.json()["reasons"][0]
    assert "astrowatch_daemon_up 0.0" in requests.get(stack.api.base + "/metrics", timeout=10).text
    assert stack.api.post(f"/api/jobs/{job}/approve").status_code == 202  # the file moves; nobody acts yet
    pending = stack.api.get("/api/astro-image/pia").json()
    assert pending["state"] == "inbox" and pending["pending"] is None and pending["image"] is None
    stack.daemon.close()
    stack.daemon = DaemonProcess(stack.config).start()
    assert wait_state(stack.api, "/api/astro-image/pia", {"approved"})["image"] == "/api/astro-image/pia/image.png"
    wait_until(lambda: requests.get(stack.api.base + "/healthz", timeout=10).status_code == 200, 20)
