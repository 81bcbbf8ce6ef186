"""``executor: celery`` with the tiny offline SDXL on the worker: a chart and a photo go through
Redis to a real ``astrowatch worker`` that loaded the model before its first job; the coordinator
never imports torch and publishes the results as a local worker would (infotext, sizes, sidecar)."""

from __future__ import annotations

import json

import pytest
from celery_support import RedisServer, WorkerProcess, celery_section, needs_redis
from harness import DaemonProcess, drop_theme, inbox_images, make_image, wait_until, write_config
from PIL import Image
from sdxl_fixtures import tiny_sdxl  # noqa: F401

from astrowatch.backends.infotext import parse_infotext

pytestmark = [pytest.mark.slow, pytest.mark.sdxl, needs_redis]


def test_tiny_sdxl_on_a_remote_worker(tmp_path, tiny_sdxl):  # noqa: F811
    base, _ = tiny_sdxl
    sdxl = {"model": str(base), "device": "cpu", "dtype": "float32", "width": 64, "height": 64, "steps": 3,
            "scheduler": "euler"}
    redis = RedisServer().start()
    slow_ok = celery_section(redis, visibility_timeout=300)  # > the first (warm-up) image on a busy CPU
    worker = WorkerProcess(tmp_path, "gpu0", redis, celery=slow_ok, astro={"backend": "sdxl", "init_image": "none"},
                           enhance={"backend": "sdxl", "min_side": 16}, sdxl=sdxl)
    cfg = write_config(tmp_path / "coord", astro={"backend": "sdxl", "init_image": "none"},
                       enhance={"backend": "sdxl", "min_side": 16}, executor="celery",
                       sdxl={k: v for k, v in sdxl.items() if k != "model"},  # no model on the coordinator
                       celery=slow_ok, limits={"job_timeout_seconds": 290})  # below visibility_timeout
    try:
        worker.start()
        assert '"sdxl"' in worker.log()  # loaded before "ready to take jobs"
        with DaemonProcess(cfg) as coord:
            user = drop_theme(coord.data, fixture="kerykeion_v6_subject.json")
            make_image(user / "photo.png", (40, 24))
            images = wait_until(lambda: len(inbox_images(coord.data)) == 2 and inbox_images(coord.data), 180)
            maps = open(f"/proc/{coord.proc.pid}/maps").read()
            assert "libtorch" not in maps  # the coordinator never loads torch
        astro = next(i for i in images if i.name.startswith("theme_"))
        sidecar = json.loads(astro.with_suffix(".json").read_text())
        assert sidecar["backend"] == "sdxl" and sidecar["backend_extra"]["remote"]["worker"] == worker.name
        with Image.open(astro) as img:
            assert img.size == (64, 64)
            info = parse_infotext(img.text["parameters"])
        assert info["prompt"] == sidecar["prompt"] and info["Seed"] == str(sidecar["seed"]) and info["Steps"] == "3"
        with Image.open(next(i for i in images if i.name.startswith("photo."))) as img:
            assert img.size == (80, 48)
    finally:
        worker.close()
        redis.close()
