"""The config is the daemon's, secrets stay secret, the API gives nothing away (issue 22):
``init`` under ``UMask=0002`` writes the config 0640 and tightens one it owns; a group-writable
config or key file makes the daemon refuse to start, naming the file; no API key or token appears
in any log line, status output or file of the tree, even when a server echoes the key back;
``/metrics`` without the token carries no user names; more than ``api.max_pending_per_user``
generation requests for one user get 429 with Retry-After.  (The API runs as the service uid.)"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from importlib.util import find_spec

import pytest
import requests
from api_support import TOKEN
from harness import wait_until
from hostile import api_process, files_containing, site_fixture  # noqa: F401  (fixture)
from openai_server import FakeOpenAI, error_body

pytestmark = pytest.mark.slow
needs_api = pytest.mark.skipif(find_spec("fastapi") is None or find_spec("uvicorn") is None,
                               reason="the 'api' extra (fastapi, uvicorn) is not installed")
KEY = "sk-hostile-" + "q7" * 20


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_under_umask_0002_writes_the_config_0640_and_tightens_its_own(site):
    home = site.srv / "fresh"
    site.attack(["mkdir", str(home)], as_=site.service)
    site.daemon_uid.cli("init", str(home))  # no --config: writes fresh/config.yaml
    assert _mode(home / "config.yaml") == 0o640, oct(_mode(home / "config.yaml"))
    site.daemon_uid.python("import os, sys; os.chmod(sys.argv[1], 0o664)", str(home / "config.yaml"))
    site.daemon_uid.cli("init", str(home))
    assert _mode(home / "config.yaml") == 0o640, "init did not tighten a group-writable config it owns"


def _refused_run(site):
    """``astrowatch run`` as the service uid: it must exit at once (not run) when refusing."""
    try:
        return site.daemon_uid.cli("run", "--config", str(site.config), check=False, timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("the daemon started (ran 20 s) instead of refusing its config") from None


def test_a_group_writable_config_or_key_file_is_refused_naming_it(site):
    site.init()
    os.chmod(site.config, 0o660)
    proc = _refused_run(site)
    assert proc.returncode != 0 and str(site.config) in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
    key = site.etc / "openai_api_key"
    key.write_text(KEY + "\n")
    if site.as_root:
        os.chown(key, site.service.uid, site.group)
    os.chmod(key, 0o660)
    site.configure(astro={"backend": "openai"}, openai={"api_key_file": str(key), "base_url": "http://127.0.0.1:9"})
    proc = _refused_run(site)
    assert proc.returncode != 0 and str(key) in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
    assert KEY not in proc.stdout + proc.stderr


@needs_api
def test_no_key_or_token_in_any_log_status_or_file(site):
    key = site.etc / "openai_api_key"
    key.write_text(KEY + "\n")
    if site.as_root:
        os.chown(key, site.service.uid, site.group)
    os.chmod(key, 0o600)
    with FakeOpenAI(KEY) as server:
        # a hostile (or buggy) server that echoes the key in its error message
        server.script("error", times=10, status=400, body=error_body(f"bad request from key {KEY}"))
        site.configure(openai={"api_key_file": str(key), "base_url": server.base_url, "max_retries": 0})
        d = site.start()
        api = api_process(site, TOKEN).start()
        site.drop_theme("zed")
        zed = site.wait_result("zed", "theme_zed", d=d)
        sidecar = json.loads(zed.with_suffix(".json").read_text())
        sidecar["params"]["backend"] = "openai"
        from hostile import b64

        site.attack(["write", str(zed.with_suffix(".json")), b64(json.dumps(sidecar).encode())],
                    ["rename", str(zed), str(site.data / "redo" / zed.name)])
        wait_until(lambda: server.count >= 1, 30, what="the openai request")
        assert requests.get(api.base + "/api/astro-image/zed", headers={"Authorization": "Bearer wrong-token-xx"},
                            timeout=10).status_code in (401, 403)
        texts = [api.get("/api/astro-image/zed").text, requests.get(api.base + "/metrics", timeout=10).text,
                 api.get("/metrics").text]
        for who in (site.reviewer, site.service):
            for args in (("status",), ("status", "--json"), ("doctor",), ("review", "list")):
                proc = who.cli(*args, env=site.env(), check=False, timeout=60)
                texts += [proc.stdout, proc.stderr]
        api.close()
        site.stop(d)
    for secret in (KEY, TOKEN):
        hits = files_containing(site.data, secret.encode()) + files_containing(site.testlogs, secret.encode())
        hits += [f"output #{i}" for i, text in enumerate(texts) if secret in text]
        assert not hits, f"{secret[:12]}... leaked into {hits}"


@needs_api
def test_metrics_name_no_user_and_one_user_cannot_flood_the_queue(site):
    site.configure(fake={"size": 32, "delay_seconds": 1.0}, api={"max_pending_per_user": 3})
    d = site.start()
    api = api_process(site, TOKEN).start()
    for user in ("zoe-private", "quinn"):
        site.drop_theme(user)
    site.wait_result("zoe-private", "theme_zoe-private", d=d)
    site.wait_result("quinn", "theme_quinn", d=d)
    anonymous = requests.get(api.base + "/metrics", timeout=10)
    if anonymous.status_code == 200:
        assert "zoe-private" not in anonymous.text and "quinn" not in anonymous.text, anonymous.text
    else:
        assert anonymous.status_code in (401, 403)
    answers = [api.post("/api/astro-image/quinn", json={"seed": i}) for i in range(8)]
    codes = [a.status_code for a in answers]
    assert codes.count(429) >= 1, codes
    assert sum(1 for c in codes if c == 202) <= 4, codes  # 3 queued (+ one that may already run)
    for answer in answers:
        if answer.status_code == 429:
            assert answer.headers.get("Retry-After", "").strip().isdigit(), answer.headers
    jobs = [j for j in site.ledger() if j["user"] == "quinn"]
    assert len(jobs) <= 5, [j["state"] for j in jobs]
    api.close()
    site.after(d, restart=False)
