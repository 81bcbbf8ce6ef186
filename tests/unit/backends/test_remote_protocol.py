"""The coordinator <-> worker payloads of ``executor: celery`` (no broker needed): JSON round trips,
sha256 checks, schema refusals, the inline size limit, credentials kept out of URLs and logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import theme_bytes

from astrowatch.backends.base import AstroTask, EnhanceTask, Result
from astrowatch.backends.remote import protocol as proto
from astrowatch.backends.remote.celery_app import redact, settings, urls, with_auth
from astrowatch.chart.parse import parse_chart_bytes
from astrowatch.core.errors import BackendError, BackendUnavailable, ConfigError, InputError
from astrowatch.runtime.settings import config_from_mapping


def chart():
    return parse_chart_bytes(theme_bytes(), user="gaby", source="theme_gaby.json", max_bytes=10**6, max_depth=64)


def image(size=(32, 24), color=(10, 200, 30)):
    from PIL import Image

    return Image.new("RGB", size, color)


def cfg(tmp_path: Path, **celery):
    limits = {"job_timeout_seconds": 60} if celery.get("visibility_timeout", 3600) <= 1800 else {}
    return config_from_mapping({"executor": "celery", "celery": celery, "limits": limits}, base_dir=tmp_path)


def test_default_executor_is_local_and_celery_section_defaults(tmp_path):
    c = config_from_mapping({}, base_dir=tmp_path)
    assert c.executor == "local"
    assert (c.celery.queue, c.celery.result_backend, c.celery.shared_data_dir) == ("astrowatch", None, False)


@pytest.mark.parametrize("url, more, error", [("amqp://h:5672//", {}, "only redis:// and rediss://"),
                                              ("redis://u:pw12@h:6379/0", {"password_file": "pw"}, "keep one")])
def test_broker_url_must_be_redis_with_its_password_given_once(tmp_path, url, more, error):
    with pytest.raises(ConfigError, match=error):
        cfg(tmp_path, broker_url=url, **more)
    cfg(tmp_path, broker_url="redis://u:pw12@h:6379/0")  # accepted (tests/unit/backends/test_celery_urls.py)


def test_astro_payload_is_json_and_the_chart_round_trips():
    c = chart()
    task = AstroTask(job_id="j1", user="gaby", chart=c, params={"size": 64}, seed=7, prompt="p", negative_prompt="n")
    payload = json.loads(json.dumps(proto.astro_payload(task, "fake", init=None)))
    assert (payload["schema"], payload["kind"], payload["backend"]) == (proto.SCHEMA, "astro", "fake")
    assert proto.chart_from_dict(payload["chart"]) == c


def test_result_round_trip_checks_the_sha256_and_names_the_worker():
    r = Result(image=image(), backend="fake", model="m", params={"a": 1}, seed=3, description="d")
    data = json.loads(json.dumps(proto.result_ok(r, worker="gpu0@h", device="cuda:0", seconds=1.5)))
    back = proto.decode_result(data, "fake")
    assert back.image.tobytes() == r.image.tobytes() and back.description == "d"
    assert back.extra["remote"]["worker"] == "gpu0@h" and back.extra["remote"]["device"] == "cuda:0"
    data["sha256"] = "0" * 64
    with pytest.raises(BackendError, match="does not match its sha256"):
        proto.decode_result(data, "fake")


def test_errors_travel_as_data_and_keep_their_class():
    data = json.loads(json.dumps(proto.result_error(InputError("bad chart"), worker="w", device=None)))
    with pytest.raises(InputError, match="bad chart.*on worker w"):
        proto.decode_result(data, "fake")
    data = proto.result_error(RuntimeError("boom"), worker="w", device=None)
    with pytest.raises(BackendError, match="RuntimeError: boom"):
        proto.decode_result(data, "fake")


def test_a_schema_the_worker_does_not_speak_is_refused_and_the_job_waits():
    reason = proto.check_schema({"schema": 3, "astrowatch": "0.2.0"}, "gpu1@h")
    assert "gpu1@h" in reason and "schema 3" in reason and "0.2.0" in reason and f"schema {proto.SCHEMA}" in reason
    assert proto.check_schema({"schema": proto.SCHEMA}, "w") is None
    rejected = proto.result_error(BackendError(reason), worker="gpu1@h", device=None, status="rejected")
    with pytest.raises(BackendUnavailable, match="gpu1@h"):  # BackendUnavailable = the job waits
        proto.decode_result(rejected, "fake")


def test_inputs_over_inline_max_mb_are_refused_with_the_fix(tmp_path):
    from astrowatch.backends.remote.client import RemoteBackend

    backend = RemoteBackend("fake", "enhance", cfg(tmp_path, inline_max_mb=0.001))
    task = EnhanceTask(job_id="j2", user="gaby", image=image((400, 400)), source_name="photo.jpg", params={},
                       seed=1)
    import random

    task.image.putdata([tuple(random.randrange(256) for _ in range(3)) for _ in range(400 * 400)])
    with pytest.raises(InputError, match=r"photo.jpg: .* over celery.inline_max_mb .*shared_data_dir"):
        backend.enhance(task)


def test_shared_data_dir_sends_a_path_inside_the_data_folder(tmp_path):
    from astrowatch.backends.remote.client import RemoteBackend

    config = cfg(tmp_path, shared_data_dir=True)
    blob = RemoteBackend("fake", "enhance", config)._blob_bytes(b"abc", "photo.jpg", "j3", "input.png")
    assert "b64" not in blob and blob["path"] == "state/remote/j3/input.png"  # not wiped by recovery
    assert proto.blob_bytes(blob, config.data_dir) == b"abc"
    with pytest.raises(InputError, match="outside"):
        proto.blob_bytes({**blob, "path": "../../etc/passwd"}, config.data_dir)


def test_password_comes_from_a_file_or_credential_and_is_redacted(tmp_path, monkeypatch):
    (tmp_path / "pw").write_text("hunter2\n")
    config = cfg(tmp_path, broker_url="rediss://redis.lan:6380/1", username="aw", password_file="pw")
    broker, backend = urls(config)
    assert broker == backend == "rediss://aw:hunter2@redis.lan:6380/1"
    assert redact(broker) == "rediss://aw:***@redis.lan:6380/1"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "redis_password").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert "from-systemd" in urls(cfg(tmp_path))[0]
    assert with_auth("redis://h/0", None, None) == "redis://h/0"


def test_celery_settings_are_json_only_acks_late_prefetch_one(tmp_path):
    s = settings(cfg(tmp_path, visibility_timeout=120))
    assert s["accept_content"] == ["json"] and s["task_serializer"] == s["result_serializer"] == "json"
    assert s["task_acks_late"] and s["task_reject_on_worker_lost"] and s["worker_prefetch_multiplier"] == 1
    assert s["broker_transport_options"]["visibility_timeout"] == 120 == s["visibility_timeout"]
    assert s["result_backend_transport_options"]["visibility_timeout"] == 120
    assert not s["result_backend_always_retry"] and settings(cfg(tmp_path), worker=True)["result_backend_always_retry"]


def test_a_remote_image_is_written_as_received_with_our_text_chunks(tmp_path):
    from PIL import Image

    from astrowatch.storage.images import read_png_meta, write_png

    r = Result(image=image((40, 30)), backend="fake")
    back = proto.decode_result(proto.result_ok(r, worker="w", device=None, seconds=0.1), "fake")
    infotext = "une femme à la crinière dorée, Steps: 30"
    write_png(tmp_path / "out.png", back.image, infotext=infotext, meta={"job_id": "j9", "user": "gaby"})
    with Image.open(tmp_path / "out.png") as img:
        img.load()
        assert img.text["parameters"] == infotext and img.tobytes() == r.image.tobytes()
    assert read_png_meta(tmp_path / "out.png") == {"job_id": "j9", "user": "gaby"}


def test_the_image_can_travel_as_raw_bytes_in_its_own_key_and_a_lost_one_is_an_error():
    store: dict[str, bytes] = {}
    r = Result(image=image(), backend="fake")
    data = proto.result_ok(r, worker="w", device=None, seconds=1, job_id="j7",
                           put_png=lambda k, v: store.__setitem__(k, v) is None)
    assert "png_b64" not in data and data["png_key"] == f"astrowatch:png:j7:{data['sha256']}" in store
    assert proto.decode_result(data, "fake", get_png=store.get).image.tobytes() == r.image.tobytes()
    store.clear()
    with pytest.raises(BackendError, match="no longer in the broker"):
        proto.decode_result(data, "fake", get_png=store.get)
    inline = proto.result_ok(r, worker="w", device=None, seconds=1, job_id="j7", put_png=lambda k, v: False)
    assert "png_b64" in inline  # Redis away: the image goes inline, Celery's result store waits for Redis
