"""``executor: celery`` with captions: a real redis-server, the real coordinator and a real
``astrowatch worker`` holding the tiny BLIP and the WD14 stand-in.  The coordinator has no caption
models at all: line 1 of the inbox ``.txt`` and the sidecar's ``captions`` come from the worker,
also for a redo that only changes a threshold and hits the coordinator's cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import pytest
from caption_tiny import BLIP_WORDS
from celery_support import RedisServer, WorkerProcess, celery_section, needs_redis
from harness import DaemonProcess, inbox_images, run_cli, wait_until, write_config
from PIL import Image

pytestmark = [pytest.mark.slow, needs_redis]


@pytest.fixture
def redis():
    server = RedisServer().start()
    yield server
    server.close()


def captioned(worker: WorkerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in worker.log().splitlines()
            if line.startswith("{") and '"captioned"' in line]


def test_the_worker_captions_and_a_cached_redo_is_recaptioned_there(tmp_path, redis, tiny_blip, tiny_wd14):
    caption = {"captioner": "blip", "captioner_model": str(tiny_blip), "tagger": "wd14",
               "tagger_model": str(tiny_wd14), "device": "cpu"}
    worker = WorkerProcess(tmp_path, "cap", redis, caption=caption)
    try:
        worker.start()
        cfg = write_config(tmp_path / "coord", astro={"backend": "fake"}, enhance={"backend": "fake", "min_side": 16},
                           executor="celery", celery=celery_section(redis), dataset={"trigger_word": "ohwx"},
                           limits={"min_free_mb": 20, "job_timeout_seconds": 1})  # no caption models here
        with DaemonProcess(cfg) as coord:
            user = coord.data / "Utilisateurs" / "gaby"
            user.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (48, 48), (255, 0, 0)).save(user / "photo.png")
            image = wait_until(lambda: inbox_images(coord.data), 90, what="the captioned result")[0]
            line1 = image.with_suffix(".txt").read_text().splitlines()[0]
            sidecar = json.loads(image.with_suffix(".json").read_text())
            rec = sidecar["captions"]
            parts = [p.strip() for p in line1.split(",")]
            assert parts[0] == "ohwx" and parts[1] == rec["caption"] and set(rec["caption"].split()) <= set(BLIP_WORDS)
            assert parts[2:] == ["hatsune miku", "red dominant", "long hair", "^_^", "simple background"]
            assert rec["line"] == line1 and rec["worker"]["name"] == worker.name  # made on the worker
            assert rec["captioner"]["name"] == "blip" and rec["tagger"]["name"] == "wd14"
            assert len(captioned(worker)) == 1

            # a redo changing only a threshold: the image comes from the cache, the worker re-captions
            job_id = sidecar["job_id"]
            sidecar["params"]["general_threshold"] = 0.6  # as the review page edits it
            image.with_suffix(".json").write_text(json.dumps(sidecar))
            run_cli("review", "redo", job_id, config=cfg)
            redo = wait_until(lambda: [i for i in inbox_images(coord.data) if i.name != image.name], 90,
                              what="the redo's result")[0]
            again = json.loads(redo.with_suffix(".json").read_text())
            assert again["cache"] == "hit"
            assert again["captions"]["worker"]["name"] == worker.name and again["captions"]["general_threshold"] == 0.6
            redo_parts = [p.strip() for p in redo.with_suffix(".txt").read_text().splitlines()[0].split(",")]
            assert redo_parts[0] == "ohwx" and redo_parts[2:] == ["hatsune miku", "red dominant", "long hair", "^_^"]
            assert len(captioned(worker)) == 2
        assert not (worker.folder / "data").exists()
    finally:
        worker.close()


def test_a_worker_whose_caption_model_lacks_a_file_exits_78_naming_it(tmp_path, redis, tiny_wd14):
    broken = tmp_path / "tagger"
    shutil.copytree(tiny_wd14, broken)
    (broken / "model.onnx").unlink()
    cfg = write_config(tmp_path / "w", astro={"backend": "fake"}, enhance={"backend": "fake"}, executor="celery",
                       caption={"tagger": "wd14", "tagger_model": str(broken)}, celery=celery_section(redis),
                       limits={"job_timeout_seconds": 1})  # the worker, not the config loader, checks it
    proc = subprocess.run([sys.executable, "-m", "astrowatch", "worker", "--name", "bad@test", "--config", str(cfg)],
                          cwd=cfg.parent, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78, proc.stderr
    assert f"{broken} has no model.onnx" in proc.stderr and "taking no jobs" in proc.stderr
