"""OpenAI Images backend against a real HTTP server on 127.0.0.1 (tests/support/openai_server.py)."""

from __future__ import annotations

import email.utils
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from openai_server import FakeOpenAI, error_body

from astrowatch.backends.base import AstroTask, CancelToken
from astrowatch.backends.infotext import parse_infotext
from astrowatch.backends.openai.backend import OpenAIBackend
from astrowatch.backends.openai.support import redact, resolve_api_key, retry_after_seconds
from astrowatch.backends.registry import create_backend
from astrowatch.chart.model import Chart
from astrowatch.core.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    Interrupted,
    PermanentBackendError,
)
from astrowatch.runtime.settings import config_from_mapping

KEY = "sk-test-LEAKCANARY-5f3a9c0e7b1d4e2f"
PROMPT = "A natal chart as a night sky, Sun in Leo, Moon in Pisces: gold and indigo"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


@pytest.fixture
def server():
    with FakeOpenAI(KEY) as srv:
        yield srv


def make_backend(tmp_path: Path, base_url: str, *, start: bool = True, **openai: Any) -> OpenAIBackend:
    section = {"base_url": base_url, "max_retries": 2, "timeout": 5.0, "retry_backoff": 0.01,
               "retry_backoff_max": 0.05, **openai}
    cfg = config_from_mapping({"openai": section}, base_dir=tmp_path)
    backend = OpenAIBackend(cfg)
    if start:
        backend.start()
    return backend


def make_task(**kw: Any) -> AstroTask:
    chart = Chart(user="alice", points={})
    base = dict(job_id="job-1", user="alice", chart=chart, params={}, seed=1234, prompt=PROMPT,
                negative_prompt="blurry, text")
    return AstroTask(**{**base, **kw})


@pytest.fixture
def env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


# -- happy paths ------------------------------------------------------------------------------
def test_gpt_image_1_happy_path(server: FakeOpenAI, tmp_path: Path, env_key: None) -> None:
    backend = make_backend(tmp_path, server.base_url)
    result = backend.generate(make_task())
    assert result.image.size == (64, 64) and result.image.format == "PNG"
    assert result.backend == "openai" and result.model == "gpt-image-1"
    assert result.params == {"model": "gpt-image-1", "size": "1024x1024", "quality": "auto",
                             "seed_honoured": False, "negative_prompt_honoured": False}
    assert result.seed == 1234 and result.prompt == PROMPT
    assert "revised_prompt" not in result.extra and result.extra["usage"]["output_tokens"] == 1056
    assert result.extra["request_id"].startswith("req_") and result.extra["attempts"] == 1
    sent = server.received[0]
    assert sent["body"] == {"model": "gpt-image-1", "prompt": PROMPT, "n": 1, "size": "1024x1024",
                            "quality": "auto"}
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    info = parse_infotext(result.infotext)
    assert info["prompt"] == PROMPT and info["negative_prompt"] == ""
    assert info["Seed"] == "1234" and info["Model"] == "gpt-image-1" and info["Size"] == "1024x1024"
    assert "cannot be reproduced" in result.description


def test_dalle3_sends_b64_json_and_records_revised_prompt(server: FakeOpenAI, tmp_path: Path,
                                                          env_key: None) -> None:
    backend = make_backend(tmp_path, server.base_url, model="dall-e-3", quality="hd", size="1792x1024")
    result = backend.generate(make_task())
    body = server.received[0]["body"]
    assert body["response_format"] == "b64_json" and body["quality"] == "hd" and body["size"] == "1792x1024"
    revised = result.extra["revised_prompt"]
    assert revised.startswith("A detailed, vivid illustration")
    info = parse_infotext(result.infotext)
    assert info["Revised prompt"] == revised and info["Model"] == "dall-e-3"
    assert "rewrote the prompt" in result.description


def test_dalle3_auto_quality_is_left_to_the_service(server: FakeOpenAI, tmp_path: Path, env_key: None) -> None:
    make_backend(tmp_path, server.base_url, model="dall-e-3").generate(make_task())
    assert "quality" not in server.received[0]["body"]


def test_registry_creates_it(tmp_path: Path) -> None:
    cfg = config_from_mapping({}, base_dir=tmp_path)
    assert isinstance(create_backend("openai", "astro", cfg), OpenAIBackend)
    with pytest.raises(ConfigError):
        create_backend("openai", "enhance", cfg)


# -- the key ----------------------------------------------------------------------------------
def test_key_from_file(server: FakeOpenAI, tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text(KEY + "\n")
    (tmp_path / "key.txt").chmod(0o600)
    backend = make_backend(tmp_path, server.base_url, api_key_file="key.txt")  # relative to the config
    backend.generate(make_task())
    assert backend.describe()["key_source"] == "file"
    assert server.received[0]["headers"]["Authorization"] == f"Bearer {KEY}"


def test_key_from_systemd_credentials(server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "openai_api_key").write_text(KEY)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    backend = make_backend(tmp_path, server.base_url)
    backend.generate(make_task())
    assert backend.describe()["key_source"] == "credential"


def test_env_wins_over_file(tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text("sk-from-file")
    key = resolve_api_key(tmp_path / "key.txt", {"OPENAI_API_KEY": "sk-from-env"})
    assert (key.value, key.source) == ("sk-from-env", "env")
    assert "sk-from" not in repr(key) + str(key)


def test_no_key_is_a_start_error(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, "http://127.0.0.1:9/v1", start=False)
    with pytest.raises(ConfigError) as info:
        backend.start()
    assert "OPENAI_API_KEY" in str(info.value) and "openai.api_key_file" in str(info.value)
    assert info.value.exit_code == 78


@pytest.mark.parametrize("content, expected", [("", "is empty"), ("sk-a b", "spaces")])
def test_bad_key_file_is_a_start_error(tmp_path: Path, content: str, expected: str) -> None:
    (tmp_path / "key.txt").write_text(content)
    backend = make_backend(tmp_path, "http://127.0.0.1:9/v1", start=False, api_key_file="key.txt")
    with pytest.raises(ConfigError, match=expected):
        backend.start()


def test_missing_key_file_is_a_start_error(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, "http://127.0.0.1:9/v1", start=False, api_key_file="nope.txt")
    with pytest.raises(ConfigError, match="nope.txt"):
        backend.start()


def test_impossible_size_is_a_start_error(tmp_path: Path, env_key: None) -> None:
    backend = make_backend(tmp_path, "http://127.0.0.1:9/v1", start=False, size="1000x1000")
    with pytest.raises(ConfigError, match="openai.size"):
        backend.start()


def test_401_is_a_config_error(server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-0000000000")
    backend = make_backend(tmp_path, server.base_url)
    with pytest.raises(ConfigError) as info:
        backend.generate(make_task())
    assert "OpenAI rejected the API key (401)" in str(info.value)
    assert "check OPENAI_API_KEY / openai.api_key_file" in str(info.value)
    assert "sk-wrong" not in str(info.value) and server.count == 1
    with pytest.raises(ConfigError):
        backend.health()


# -- retries ----------------------------------------------------------------------------------
def test_429_honours_retry_after_then_succeeds(server: FakeOpenAI, tmp_path: Path, env_key: None) -> None:
    server.script("429", retry_after="1")
    backend = make_backend(tmp_path, server.base_url)
    result = backend.generate(make_task())
    assert server.count == 2 and result.extra["attempts"] == 2
    waited = server.received[1]["time"] - server.received[0]["time"]
    assert waited >= 0.95


def test_retry_after_forms() -> None:
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= retry_after_seconds({"retry-after": date}, now=now) <= 31
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_too_long_retry_after_is_not_slept_through(server: FakeOpenAI, tmp_path: Path, env_key: None) -> None:
    server.script("429", retry_after="3600")
    started = time.monotonic()
    with pytest.raises(BackendError, match="3600s") as info:
        make_backend(tmp_path, server.base_url).generate(make_task())
    assert info.value.retryable and server.count == 1 and time.monotonic() - started < 2


def test_500_retried_then_backend_error(server: FakeOpenAI, tmp_path: Path, env_key: None) -> None:
    server.script("500", times=10)
    with pytest.raises(BackendError) as info:
        make_backend(tmp_path, server.base_url, max_retries=3).generate(make_task())
    assert type(info.value) is BackendError and info.value.retryable
    assert "500" in str(info.value) and "4 attempts" in str(info.value)
    assert server.count == 4


def test_503_then_success(server: FakeOpenAI, tmp_path: Path, env_key: None) -> None:
    server.script("503")
    make_backend(tmp_path, server.base_url).generate(make_task())
    assert server.count == 2


def test_interrupt_cuts_the_backoff_wait(server: FakeOpenAI, tmp_path: Path, env_key: None) -> None:
    server.script("429", retry_after="30")
    task = make_task(cancel=CancelToken())
    threading.Timer(0.3, task.cancel.request_interrupt).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        make_backend(tmp_path, server.base_url).generate(task)
    assert time.monotonic() - started < 5 and server.count == 1


# -- permanent failures -----------------------------------------------------------------------
@pytest.mark.parametrize("model, code", [("gpt-image-1", "moderation_blocked"),
                                         ("dall-e-3", "content_policy_violation")])
def test_content_policy_is_permanent(server: FakeOpenAI, tmp_path: Path, env_key: None, model: str,
                                     code: str) -> None:
    server.script("policy")
    with pytest.raises(PermanentBackendError) as info:
        make_backend(tmp_path, server.base_url, model=model).generate(make_task())
    assert not info.value.retryable and code in str(info.value)
    assert "rejected" in str(info.value) and "safety system" in str(info.value)
    assert server.count == 1


def test_other_4xx_is_permanent_with_the_service_message(server: FakeOpenAI, tmp_path: Path, env_key: None) -> None:
    with pytest.raises(PermanentBackendError, match="Invalid value for 'model'") as info:
        make_backend(tmp_path, server.base_url, model="gpt-image-9").generate(make_task())
    assert "invalid_value" in str(info.value) and server.count == 1


def test_quota_exhausted_is_a_config_error(server: FakeOpenAI, tmp_path: Path, env_key: None) -> None:
    server.script("quota")
    with pytest.raises(ConfigError, match="quota"):
        make_backend(tmp_path, server.base_url).generate(make_task())
    assert server.count == 1


# -- no double billing ------------------------------------------------------------------------
def test_read_timeout_is_not_resent(server: FakeOpenAI, tmp_path: Path, env_key: None) -> None:
    server.script("hang", seconds=3)
    with pytest.raises(BackendError) as info:
        make_backend(tmp_path, server.base_url, timeout=0.5).generate(make_task())
    assert type(info.value) is BackendError and info.value.retryable
    assert "may have been billed" in str(info.value)
    time.sleep(0.2)
    assert server.count == 1


def test_dropped_connection_after_sending_is_not_resent(server: FakeOpenAI, tmp_path: Path, env_key: None) -> None:
    server.script("close")
    with pytest.raises(BackendError, match="may have been billed") as info:
        make_backend(tmp_path, server.base_url).generate(make_task())
    assert type(info.value) is BackendError and server.count == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_unavailable(tmp_path: Path, env_key: None) -> None:
    backend = make_backend(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(BackendUnavailable, match="3 attempts"):
        backend.generate(make_task())
    with pytest.raises(BackendUnavailable):
        backend.health()


def test_health_is_free(server: FakeOpenAI, tmp_path: Path, env_key: None) -> None:
    make_backend(tmp_path, server.base_url).health()
    assert server.models_calls == 1 and server.count == 0


# -- the fake server's own validation ---------------------------------------------------------
@pytest.mark.parametrize("body, param", [
    ({"model": "gpt-image-1"}, "prompt"),
    ({"model": "gpt-image-1", "prompt": "x", "size": "1000x1000"}, "size"),
    ({"model": "gpt-image-1", "prompt": "x", "response_format": "b64_json"}, "response_format"),
    ({"model": "dall-e-3", "prompt": "x", "n": 2}, "n"),
])
def test_fake_server_validates_like_the_service(server: FakeOpenAI, body: dict, param: str) -> None:
    resp = requests.post(f"{server.base_url}/images/generations", json=body,
                         headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"]


def test_fake_server_requires_a_key(server: FakeOpenAI) -> None:
    resp = requests.post(f"{server.base_url}/images/generations", json={"prompt": "x"}, timeout=5)
    assert resp.status_code == 401 and resp.json()["error"]["message"].startswith("You didn't provide")


# -- the key never leaks ----------------------------------------------------------------------
def _texts_of(exc: BaseException) -> list[str]:
    out: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        out += [str(seen), repr(seen), str(getattr(seen, "hint", ""))]
        seen = seen.__cause__ or seen.__context__
    return out


def test_key_never_leaks(server: FakeOpenAI, tmp_path: Path, env_key: None, caplog: pytest.LogCaptureFixture,
                         capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    backend = make_backend(tmp_path, server.base_url)
    result = backend.generate(make_task())
    texts += [repr(result), str(result.params), str(result.extra), result.infotext or "", result.description,
              repr(backend), str(backend.describe()), str(vars(backend))]
    leaky = error_body(f"bad request from key {KEY}; also sk-proj-abcdEFGH1234")
    for kind, kw in [("500", {"times": 3}), ("policy", {}), ("error", {"status": 422, "body": leaky}),
                     ("hang", {"seconds": 2}), ("close", {})]:
        server.script(kind, **kw)
        with pytest.raises(Exception) as info:
            make_backend(tmp_path, server.base_url, timeout=0.5).generate(make_task())
        texts += _texts_of(info.value)
    assert "[redacted]" in " ".join(texts)
    backend.health()
    for url in (server.base_url, f"http://127.0.0.1:{free_port()}/v1"):
        with pytest.raises(Exception) as info:
            make_backend(tmp_path, url, max_retries=0).generate(make_task(prompt=""))
        texts += _texts_of(info.value)
    out, err = capfd.readouterr()
    texts += [caplog.text, out, err]
    blob = "\n".join(texts)
    assert KEY not in blob and "LEAKCANARY" not in blob and "abcdEFGH1234" not in blob


def test_redact_scrubs_key_shapes() -> None:
    key = resolve_api_key(None, {"OPENAI_API_KEY": KEY})
    assert KEY not in redact(f"x {KEY} y", key)
    assert "sk-proj-abc123" not in redact("Incorrect API key provided: sk-proj-abc123.", None)


# -- several variants (astro.variants): n images in one request where the model takes it -------------
@pytest.mark.parametrize("model", ["gpt-image-1", "dall-e-2"])
def test_variants_are_one_request_with_n_and_each_result_has_its_seed(server, tmp_path, env_key, model) -> None:
    from astrowatch.pipeline.variants import variant_seeds

    size = "1024x1024"
    backend = make_backend(tmp_path, server.base_url, model=model, size=size)
    seeds = variant_seeds(1234, 3)
    results = backend.generate_variants(make_task(), seeds)
    assert server.count == 1 and server.received[0]["body"]["n"] == 3
    assert [r.seed for r in results] == seeds
    assert [parse_infotext(r.infotext)["Seed"] for r in results] == [str(s) for s in seeds]
    assert len({r.image.tobytes() for r in results}) == 3  # the service's three images, in order
    assert all(r.params["seed_honoured"] is False and r.extra["n"] == 3 for r in results)


def test_dall_e_3_variants_are_one_request_each(server, tmp_path, env_key) -> None:
    from astrowatch.pipeline.variants import variant_seeds

    backend = make_backend(tmp_path, server.base_url, model="dall-e-3", size="1024x1024")
    seeds = variant_seeds(1234, 2)
    results = backend.generate_variants(make_task(), seeds)
    assert server.count == 2 and [r["body"]["n"] for r in server.received] == [1, 1]  # dall-e-3 takes n=1 only
    assert [r.seed for r in results] == seeds


def test_fewer_images_than_asked_is_an_error(server, tmp_path, env_key) -> None:
    from astrowatch.pipeline.variants import variant_seeds

    server.script("error", status=200, body={"created": 1, "data": [{"b64_json": _one_png()}]})
    backend = make_backend(tmp_path, server.base_url, model="gpt-image-1", max_retries=0)
    with pytest.raises(BackendError, match="1 image"):
        backend.generate_variants(make_task(), variant_seeds(1234, 2))


def _one_png() -> str:
    from openai_server import png_b64

    return png_b64(8, 8)
