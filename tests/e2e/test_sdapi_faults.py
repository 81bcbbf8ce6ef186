"""SdapiBackend under faults: retry only what is safe (count the POSTs the server received),
never re-send a POST whose answer was lost, down/up, interrupt."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from sdapi_support import FakeWebUI, astro_task, enhance_task, make_backend

from astrowatch.backends.base import CancelToken
from astrowatch.core.errors import BackendError, BackendUnavailable, Interrupted

EXTRAS, TXT2IMG = "/sdapi/v1/extra-single-image", "/sdapi/v1/txt2img"
NO_CAPTION = {"caption_model": "none"}


@pytest.fixture
def server():
    with FakeWebUI() as srv:
        yield srv


def later(seconds: float, action) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer


# -- safe retries -------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [502, 503])
def test_5xx_is_retried_then_succeeds(server, tmp_path, status):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION)
    server.fail, server.fail_status = 2, status
    result = backend.enhance(enhance_task())
    assert result.image.size == (200, 160)
    assert server.posts[EXTRAS] == 3  # 2 failed + exactly 1 successful
    assert server.completed[EXTRAS] == 1


@pytest.mark.parametrize("kind", ["astro", "enhance"])
def test_malformed_json_from_the_webui_is_a_retryable_error_naming_it(server, tmp_path, kind):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION)
    server.garble = "json"
    with pytest.raises(BackendError, match="answered 200 without JSON") as err:
        backend.generate(astro_task()) if kind == "astro" else backend.enhance(enhance_task())
    assert err.value.retryable  # the worker retries the job (max_attempts), it does not crash
    path = TXT2IMG if kind == "astro" else EXTRAS
    assert server.posts[path] == 1  # a received POST whose answer is garbage is not re-sent at once
    assert (backend.generate(astro_task()) if kind == "astro" else backend.enhance(enhance_task())).image


@pytest.mark.parametrize("kind", ["astro", "enhance"])
def test_a_non_image_from_the_webui_is_a_retryable_error_naming_it(server, tmp_path, kind):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION)
    server.garble = "image"
    with pytest.raises(BackendError, match="returned an undecodable image") as err:
        backend.generate(astro_task()) if kind == "astro" else backend.enhance(enhance_task())
    assert err.value.retryable
    assert (backend.generate(astro_task()) if kind == "astro" else backend.enhance(enhance_task())).image


def test_503_forever_gives_backend_unavailable(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION)
    server.fail = 100
    with pytest.raises(BackendUnavailable, match="HTTP 503"):
        backend.enhance(enhance_task())
    assert server.posts[EXTRAS] == 4  # 1 + sdapi.max_retries (3)


def test_504_on_post_waits_for_idle_then_retries(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION)
    server.fail, server.fail_status = 1, 504
    assert backend.enhance(enhance_task()).image.size == (200, 160)
    assert server.posts[EXTRAS] == 2
    assert server.gets["/sdapi/v1/progress"] >= 1  # asked whether the WebUI was still working


def test_connection_refused_is_retried_until_the_server_is_back(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION,
                           sdapi={"max_retries": 10, "retry_backoff": 0.05, "retry_backoff_max": 0.3})
    server.down()
    later(0.3, server.up)
    result = backend.enhance(enhance_task())
    assert result.image.size == (200, 160)
    assert server.posts[EXTRAS] == 1  # refused connections never reached it


# -- never re-send a POST whose answer was lost -------------------------------------------------
def test_dropped_connection_after_receipt_is_not_resent(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION)
    server.drop = 1  # the server reads the POST, counts it, closes without answering
    with pytest.raises(BackendError) as err:
        backend.enhance(enhance_task())
    assert type(err.value) is BackendError and err.value.retryable  # the worker retries the job later
    assert "dropped the request" in str(err.value) and "not re-sent" in str(err.value)
    assert server.posts[EXTRAS] == 1
    assert server.gets["/sdapi/v1/progress"] >= 1
    assert backend.enhance(enhance_task()).image.size == (200, 160)  # the next attempt works


def test_read_timeout_is_not_resent_and_waits_while_busy(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION, sdapi={"read_timeout": 0.3})
    server.slow = 1.2
    began = time.monotonic()
    with pytest.raises(BackendError, match="dropped the request.*no answer within"):
        backend.enhance(enhance_task())
    assert time.monotonic() - began >= 1.0  # polled /progress until the WebUI was idle
    assert server.posts[EXTRAS] == 1
    assert server.gets["/sdapi/v1/progress"] >= 3


def test_concurrent_posts_block_behind_the_global_lock(server):
    import requests

    server.slow = 0.3
    seen: list[int] = []

    def post() -> None:
        requests.post(server.url + TXT2IMG, json={"width": 64, "height": 64}, timeout=5)

    threads = [threading.Thread(target=post) for _ in range(2)]
    began = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(0.1)
    seen.append(requests.get(server.url + "/sdapi/v1/progress", timeout=2).json()["state"]["job_count"])
    for t in threads:
        t.join()
    assert time.monotonic() - began >= 0.6 and seen == [1]
    assert requests.get(server.url + "/sdapi/v1/progress", timeout=2).json()["state"]["job_count"] == 0


# -- down / up ----------------------------------------------------------------------------------
def test_server_down_gives_backend_unavailable(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION)
    server.down()
    with pytest.raises(BackendUnavailable, match="no WebUI answers"):
        backend.enhance(enhance_task())
    with pytest.raises(BackendUnavailable):
        backend.generate(astro_task())
    assert server.posts[EXTRAS] == 0
    assert backend.describe()["reachable"] is False


def test_down_then_up_health_recovers(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION)
    backend.health()
    server.down()
    with pytest.raises(BackendUnavailable):
        backend.health()
    assert backend.describe()["reachable"] is False
    server.up()
    backend.health()
    assert backend.describe()["reachable"] is True
    assert backend.enhance(enhance_task()).image.size == (200, 160)


def test_unreachable_at_start_then_health_starts_it(server, tmp_path):
    server.down()
    backend = make_backend(server, tmp_path, start=False, enhance=NO_CAPTION)
    with pytest.raises(BackendUnavailable, match="start the WebUI with --api"):
        backend.start()
    server.up()
    backend.health()  # completes the start-up (lists read, names validated)
    assert "R-ESRGAN 4x+" in backend.upscalers
    assert backend.enhance(enhance_task()).image.size == (200, 160)


# -- cancellation -------------------------------------------------------------------------------
def test_interrupt_during_a_slow_request(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION)
    server.slow = 5.0
    cancel = CancelToken()
    later(0.3, cancel.request_interrupt)
    began = time.monotonic()
    with pytest.raises(Interrupted):
        backend.generate(astro_task(cancel=cancel))
    assert time.monotonic() - began < 2.5
    assert server.interrupts == 1 and server.posts[TXT2IMG] == 1


def test_interrupt_while_polling_after_a_read_timeout(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION, sdapi={"read_timeout": 0.3})
    server.slow = 5.0
    cancel = CancelToken()
    later(0.6, cancel.request_interrupt)
    with pytest.raises(Interrupted):
        backend.enhance(enhance_task(cancel=cancel))
    assert server.interrupts == 1 and server.posts[EXTRAS] == 1


def test_first_sigterm_lets_the_request_finish(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION)
    server.slow = 0.4
    cancel = CancelToken()
    later(0.1, cancel.request_stop)
    assert backend.enhance(enhance_task(cancel=cancel)).image.size == (200, 160)
    assert server.interrupts == 0


def test_already_interrupted_sends_nothing(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance=NO_CAPTION)
    cancel = CancelToken()
    cancel.request_interrupt()
    with pytest.raises(Interrupted):
        backend.enhance(enhance_task(cancel=cancel))
    assert server.posts[EXTRAS] == 0


# -- the fake server as a program (benchmarks, manual runs) ---------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=3) as resp:
        return json.loads(resp.read())


def test_runnable_as_a_program_with_a_control_endpoint(tmp_path):
    port = _free_port()
    script = Path(__file__).resolve().parents[1] / "support" / "webui_server.py"
    proc = subprocess.Popen([sys.executable, str(script), "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert "listening on" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        assert _call(url + "/sdapi/v1/samplers")[0]["name"] == "DPM++ 2M"
        assert _call(url + "/_control", {"fail": 1, "slow": 0.1})["fail"] == 1
        with pytest.raises(urllib.error.HTTPError) as err:
            _call(url + "/sdapi/v1/options")
        assert err.value.code == 503
        _call(url + "/_control", {"down_for": 0.6})
        time.sleep(0.25)
        with pytest.raises(urllib.error.URLError):
            _call(url + "/sdapi/v1/options")
        time.sleep(0.8)
        stats = _call(url + "/_control")
        assert stats["gets"]["/sdapi/v1/options"] == 1 and stats["slow"] == 0.1
    finally:
        proc.terminate()
        proc.wait(timeout=5)
