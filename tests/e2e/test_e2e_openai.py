"""The OpenAI backend through the daemon: a redo switches one job's backend; no key is a clear
start-up error; the key never appears in sidecars, logs or status."""

from __future__ import annotations

import json
import os

import pytest
from harness import FIXTURES, drop_theme, inbox_images, run_cli, wait_until, write_config
from openai_server import FakeOpenAI

pytestmark = pytest.mark.slow
KEY = "sk-test-0123456789abcdef"


def test_redo_switches_one_job_to_openai_and_the_key_never_leaks(tmp_path, daemon_factory, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / "openai.key").write_text(KEY + "\n")
    os.chmod(tmp_path / "openai.key", 0o600)
    with FakeOpenAI(KEY) as server:
        cfg = write_config(tmp_path, openai={"base_url": server.base_url, "api_key_file": "openai.key",
                                             "retry_backoff": 0.05})
        d = daemon_factory(cfg).start()
        drop_theme(d.data)
        wheel = wait_until(lambda: inbox_images(d.data), what="wheel result")[0]
        sidecar = json.loads(wheel.with_suffix(".json").read_text())
        assert sidecar["backend"] == "wheel"
        sidecar["params"]["backend"] = "openai"
        wheel.with_suffix(".json").write_text(json.dumps(sidecar))
        wheel.rename(d.data / "redo" / wheel.name)
        redone = wait_until(lambda: [i for i in inbox_images(d.data) if i != wheel], what="openai result")[0]
        child = json.loads(redone.with_suffix(".json").read_text())
        assert child["backend"] == "openai" and child["parent_job"] == sidecar["job_id"]
        assert server.count == 1 and server.received[0]["body"]["prompt"] == child["prompt"]
        assert "(" not in child["prompt"] or ":1." not in child["prompt"]  # plain text for openai
        status = run_cli("status", "--json", config=cfg).stdout
        assert d.stop() == 0
        everything = status + d.log() + "".join(p.read_text(errors="replace") for p in d.data.rglob("*.json*"))
        assert KEY not in everything


def test_no_key_is_a_start_up_error_not_a_job_failure(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = write_config(tmp_path, astro={"backend": "openai"})
    proc = run_cli("run", config=cfg, check=False)
    assert proc.returncode == 78 and "OPENAI_API_KEY" in proc.stderr


def test_generate_backend_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(KEY) as server:
        cfg = write_config(tmp_path, openai={"base_url": server.base_url})
        out = tmp_path / "o.png"
        proc = run_cli("generate", str(FIXTURES / "themes" / "astrowatch_minimal.json"), "-o", str(out),
                       "--backend", "openai", config=cfg)
        assert "backend openai" in proc.stdout and out.exists() and server.count == 1
