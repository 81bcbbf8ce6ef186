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


def test_three_variants_from_one_request_each_sidecar_with_its_seed(tmp_path, daemon_factory, monkeypatch):
    """``astro.variants: 3`` with gpt-image-1: one request with n=3, one job, three images; each
    variant's sidecar records the seed derived for it (recorded, not honoured by the service)."""
    from astrowatch.pipeline.variants import variant_seeds

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(KEY) as server:
        cfg = write_config(tmp_path, astro={"backend": "openai", "variants": 3},
                           openai={"base_url": server.base_url, "model": "gpt-image-1", "size": "1024x1024"})
        d = daemon_factory(cfg).start()
        drop_theme(d.data)
        images = wait_until(lambda: len(inbox_images(d.data)) == 4 and inbox_images(d.data), what="3 variants + sheet")
        assert d.stop() == 0
    variants = sorted(p for p in images if ".v" in p.name)
    sidecars = [json.loads(p.with_suffix(".json").read_text()) for p in variants]
    assert server.count == 1 and server.received[0]["body"]["n"] == 3
    seeds = [s["seed"] for s in sidecars]
    assert seeds == variant_seeds(seeds[0], 3) and [s["variant"] for s in sidecars] == [1, 2, 3]
    assert all(s["backend"] == "openai" and s["params"]["seed"] == s["seed"] for s in sidecars)
    assert len({p.read_bytes() for p in variants}) == 3
