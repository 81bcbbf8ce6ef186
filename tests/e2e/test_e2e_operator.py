"""Operator recovery on the real daemon: paused backends (credentials or quota refused mid-run),
styles checked when the config loads, and ``astrowatch retry``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3

import pytest
from harness import drop_theme, inbox_images, make_image, run_cli, wait_until, write_config
from openai_server import FakeOpenAI
from webui_server import FakeWebUI

pytestmark = pytest.mark.slow
KEY, NEW_KEY = "sk-test-0123456789abcdef", "sk-test-fedcba9876543210"


def jobs(data):
    conn = sqlite3.connect(data / "state" / "ledger.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY created_at, rowid")]
    finally:
        conn.close()


def by_user(data, kind="astro"):
    return {j["user"]: j for j in jobs(data) if j["kind"] == kind}


def results(data, user):
    return inbox_images(data, user)


# -- paused backends --------------------------------------------------------------------------------

def test_revoked_openai_key_pauses_its_jobs_until_fixed_and_sighup(tmp_path, daemon_factory, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    key_file = tmp_path / "openai.key"
    key_file.write_text(KEY + "\n")
    os.chmod(key_file, 0o600)
    with FakeOpenAI(KEY) as server:
        cfg = write_config(tmp_path, astro={"backend": "openai"},
                           openai={"base_url": server.base_url, "api_key_file": "openai.key", "retry_backoff": 0.05},
                           sdapi={"health_interval": 60})  # only SIGHUP can trigger the re-check in time
        d = daemon_factory(cfg).start()
        server.script("policy")  # a content refusal stays this job's own failure
        drop_theme(d.data, "ann")
        wait_until(lambda: by_user(d.data).get("ann", {}).get("state") == "failed", what="refused prompt failed")
        drop_theme(d.data, "bob")
        wait_until(lambda: results(d.data, "bob"), what="backend still running after a refusal")

        server.api_key = "sk-revoked-elsewhere-000"  # the key is revoked mid-run
        for user in ("cy", "dee"):
            drop_theme(d.data, user)
        make_image(d.data / "Utilisateurs" / "cy" / "photo.png")  # another backend: keeps running
        wait_until(lambda: [by_user(d.data).get(u, {}).get("state") for u in ("cy", "dee")] == ["waiting"] * 2,
                   what="both jobs waiting")
        wait_until(lambda: results(d.data, "cy"), what="the enhance job is not held up")
        assert server.count == 3  # ann, bob, and one refused request: the second job was not sent
        status = json.loads(run_cli("status", "--json", config=cfg).stdout)
        assert {w["reason"].split(":")[0] for w in status["waiting"]} == {"backend openai paused"}
        assert all("rejected the API key (401)" in w["reason"] for w in status["waiting"])
        wait_until(lambda: "paused backend openai" in run_cli("status", config=cfg).stdout,  # state file: every 2 s
                   what="status names the paused backend")
        assert not (d.data / "failed" / "cy").exists() and not (d.data / "failed" / "dee").exists()

        key_file.write_text(NEW_KEY + "\n")  # the operator installs a new key
        server.api_key = NEW_KEY
        d.signal(signal.SIGHUP)
        wait_until(lambda: results(d.data, "cy") and results(d.data, "dee") and len(results(d.data, "cy")) == 2,
                   timeout=20, what="paused jobs completed after SIGHUP")
        assert [by_user(d.data)[u]["attempts"] for u in ("cy", "dee")] == [1, 1]  # waiting burnt nothing

        server.script("quota")  # out of quota: the same pause, not a failure
        drop_theme(d.data, "eve")
        wait_until(lambda: by_user(d.data).get("eve", {}).get("state") == "waiting", what="quota pause")
        assert "insufficient_quota" in by_user(d.data)["eve"]["error"]
        d.signal(signal.SIGHUP)  # (the fake answers normally after one quota error)
        wait_until(lambda: results(d.data, "eve"), what="resumed after the quota came back")
        assert d.stop() == 0
        assert KEY not in d.log() and NEW_KEY not in d.log()


def test_webui_401_mid_run_pauses_it_and_a_health_check_resumes(tmp_path, daemon_factory):
    with FakeWebUI() as webui:
        cfg = write_config(tmp_path, enhance={"backend": "sdapi", "caption_model": "none"},
                           sdapi={"url": webui.url, "health_interval": 0.3, "retry_backoff": 0.05,
                                  "max_retries": 1})
        d = daemon_factory(cfg).start()
        user = d.data / "Utilisateurs" / "gaby"
        make_image(user / "one.png")
        wait_until(lambda: results(d.data, "gaby"), what="first enhancement")
        webui.auth = "alice:s3cret"  # the WebUI is restarted with --api-auth
        make_image(user / "two.png", color=(10, 200, 10))
        drop_theme(d.data)  # astro runs on the wheel: not held up
        wait_until(lambda: by_user(d.data, "enhance").get("gaby", {}).get("state") == "waiting", what="waiting")
        wait_until(lambda: any(i.name.startswith("theme_gaby.") for i in results(d.data, "gaby")), what="astro")
        assert "sdapi.auth" in by_user(d.data, "enhance")["gaby"]["error"]
        assert not (d.data / "failed").exists() or not list((d.data / "failed").rglob("*"))
        webui.auth = None  # fixed on the WebUI side: the next health check resumes the job
        wait_until(lambda: len(results(d.data, "gaby")) == 3, what="resumed by the health check")
        assert by_user(d.data, "enhance")["gaby"]["attempts"] == 1
        assert d.stop() == 0


# -- styles -------------------------------------------------------------------------------------------

def test_a_bad_style_is_refused_at_start_by_doctor_and_on_sighup(tmp_path, daemon_factory):
    cfg = write_config(tmp_path, astro={"backend": "wheel", "wheel_size": 256, "style": "cosmic"})
    proc = run_cli("run", config=cfg, check=False)
    assert proc.returncode == 78
    assert "astro.style: unknown style 'cosmic'; valid styles: cosmique, figuratif, symbolique" in proc.stderr
    doctor = run_cli("doctor", config=cfg, check=False)
    assert doctor.returncode == 1 and "unknown style 'cosmic'" in doctor.stdout

    (tmp_path / "styles.yaml").write_text("cosmic: {extends: cosmique}\n")
    cfg = write_config(tmp_path, astro={"backend": "wheel", "wheel_size": 256, "style": "cosmic",
                                        "styles_file": "styles.yaml"})
    d = daemon_factory(cfg).start()
    write_config(tmp_path, astro={"backend": "wheel", "wheel_size": 256, "style": "cosmik"})
    d.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in d.log(), what="refusal logged")
    assert "unknown style 'cosmik'" in d.log()
    drop_theme(d.data, fixture="kerykeion_v5_subject.json")  # a chart that names no style itself
    image = wait_until(lambda: inbox_images(d.data), what="a result with the old config")[0]
    assert json.loads(image.with_suffix(".json").read_text())["params"]["style"] == "cosmic"
    assert d.stop() == 0


# -- retry ---------------------------------------------------------------------------------------------

def test_retry_runs_a_failed_photo_again_once_while_the_daemon_runs(tmp_path, daemon_factory):
    cfg = write_config(tmp_path, enhance={"backend": "fake"}, fake={"raise_error": "permanent"})
    d = daemon_factory(cfg).start()
    user = d.data / "Utilisateurs" / "gaby"
    make_image(user / "photo.png")
    failed = d.data / "failed" / "gaby"
    wait_until(lambda: (failed / "photo.png.error.json").exists(), what="failed entry")
    parent = by_user(d.data, "enhance")["gaby"]
    assert parent["state"] == "failed"

    write_config(tmp_path, enhance={"backend": "fake"}, fake={"raise_error": "none"})  # the cause is fixed
    d.signal(signal.SIGHUP)
    wait_until(lambda: "config reloaded by worker" in d.log(), what="reloaded")
    first = run_cli("retry", parent["id"][:8], config=cfg).stdout
    second = run_cli("retry", parent["id"], config=cfg).stdout  # twice: still one job
    child = wait_until(lambda: [j for j in jobs(d.data) if j["parent_id"] == parent["id"]], what="child")[0]
    assert f"retried as job {child['id']}" in first and f"already retried as job {child['id']}" in second
    result = wait_until(lambda: results(d.data, "gaby"), what="retried result in the inbox")[0]
    sidecar = json.loads(result.with_suffix(".json").read_text())
    assert sidecar["parent_job"] == parent["id"] and sidecar["job_id"] == child["id"]
    assert not failed.exists() or not list(failed.iterdir())  # the failed/ entry was taken back
    assert (d.data / "archive" / "gaby" / parent["id"] / "photo.png.error.json").exists()
    assert len([j for j in jobs(d.data) if j["kind"] == "enhance"]) == 2
    assert "already retried" in run_cli("retry", parent["id"], config=cfg).stdout
    assert d.stop() == 0


def test_retry_failed_while_the_daemon_is_stopped_runs_at_its_next_start(tmp_path, daemon_factory):
    cfg = write_config(tmp_path, astro={"backend": "fake"}, fake={"raise_error": "permanent"})
    d = daemon_factory(cfg).start()
    theme = drop_theme(d.data) / "theme_gaby.json"
    drop_theme(d.data, "lou")
    wait_until(lambda: [j["state"] for j in jobs(d.data)] == ["failed", "failed"], what="two failures")
    assert d.stop() == 0
    original = theme.read_bytes()
    write_config(tmp_path, astro={"backend": "fake"}, fake={"raise_error": "none"})

    assert run_cli("retry", "--failed", "--since", "2099-01-01", config=cfg).stdout.strip() == "no failed job to retry"
    bad = run_cli("retry", "--failed", "ffff", config=cfg, check=False)
    assert bad.returncode == 78 and "not both" in bad.stderr
    out = run_cli("retry", "--failed", "--user", "gaby", "--since", "1h", config=cfg).stdout
    assert out.count("retried as job") == 1 and "Utilisateurs/gaby/theme_gaby.json" in out
    assert run_cli("retry", "--failed", "--user", "gaby", config=cfg).stdout.strip() == "no failed job to retry"
    queued = [j for j in jobs(d.data) if j["state"] == "queued"]
    assert len(queued) == 1 and queued[0]["user"] == "gaby" and queued[0]["parent_id"]

    again = daemon_factory(cfg).start()
    result = wait_until(lambda: results(d.data, "gaby"), what="result after the start")[0]
    assert json.loads(result.with_suffix(".json").read_text())["parent_job"] == queued[0]["parent_id"]
    assert theme.read_bytes() == original  # the upstream app's file was never touched
    assert not results(d.data, "lou") and by_user(d.data)["lou"]["state"] == "failed"  # not asked for
    missing = run_cli("retry", "0123456789ab", config=cfg, check=False)
    assert missing.returncode == 66 and "no job" in missing.stderr
    assert again.stop() == 0
