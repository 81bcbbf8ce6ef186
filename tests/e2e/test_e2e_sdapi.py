"""The daemon with the SD WebUI backend against a real HTTP server on 127.0.0.1: results,
captions, the cache, and jobs that wait (without burning attempts) while the WebUI is down."""

from __future__ import annotations

import json
import sqlite3

import pytest
from harness import drop_theme, inbox_images, make_image, run_cli, wait_until, write_config
from PIL import Image
from webui_server import FakeWebUI

pytestmark = pytest.mark.slow


def _states(data):
    conn = sqlite3.connect(data / "state" / "ledger.sqlite3")
    try:
        return {src: (state, attempts) for src, state, attempts in
                conn.execute("SELECT source, state, attempts FROM jobs")}
    finally:
        conn.close()


@pytest.fixture
def webui():
    server = FakeWebUI()
    server.start()
    yield server
    server.down()


def _config(tmp_path, webui):
    return write_config(tmp_path, astro={"backend": "sdapi"},
                        enhance={"backend": "sdapi", "upscaler": "R-ESRGAN 4x+", "caption_model": "clip"},
                        sdapi={"url": webui.url, "health_interval": 0.3, "retry_backoff": 0.05,
                               "retry_backoff_max": 0.1, "max_retries": 1, "poll_interval": 0.1,
                               "width": 64, "height": 64, "steps": 4},
                        dataset={"trigger_word": "gabyface"})


def test_daemon_enhances_and_generates_through_the_webui(tmp_path, daemon_factory, webui):
    d = daemon_factory(_config(tmp_path, webui)).start()
    user = drop_theme(d.data)
    make_image(user / "photo.png", (300, 200))
    images = wait_until(lambda: len(inbox_images(d.data)) == 2 and inbox_images(d.data), what="two results")
    photo = next(i for i in images if i.name.startswith("photo."))
    with Image.open(photo) as img:
        assert img.size == (600, 400)
    assert photo.with_suffix(".txt").read_text().startswith("gabyface, ")
    astro = json.loads(next(i for i in images if i.name.startswith("theme_")).with_suffix(".json").read_text())
    assert astro["backend"] == "sdapi" and ":1." in astro["prompt"]  # A1111 weight syntax from fusion
    assert webui.completed["/sdapi/v1/extra-single-image"] == 1 and webui.completed["/sdapi/v1/txt2img"] == 1

    make_image(user / "again.png", (300, 200))  # the same pixels again: served from the cache
    again = wait_until(lambda: [i for i in inbox_images(d.data) if i.name.startswith("again.")], what="cached")[0]
    assert json.loads(again.with_suffix(".json").read_text())["cache"] == "hit"
    assert webui.posts["/sdapi/v1/extra-single-image"] == 1
    assert d.stop() == 0


def test_jobs_wait_while_the_webui_is_down_and_resume(tmp_path, daemon_factory, webui):
    d = daemon_factory(_config(tmp_path, webui)).start()
    user = d.data / "Utilisateurs" / "gaby"
    user.mkdir(parents=True)
    webui.down()
    make_image(user / "late.png", (100, 100))
    wait_until(lambda: _states(d.data).get("Utilisateurs/gaby/late.png", ("",))[0] == "waiting", what="waiting")
    status = json.loads(run_cli("status", "--json", config=d.config_path).stdout)
    assert status["counts"].get("waiting") == 1 and status["waiting"][0]["reason"]
    webui.up()
    wait_until(lambda: inbox_images(d.data), timeout=30, what="resumed after the WebUI came back")
    # the image reaches the inbox folder just before the ledger's publishing -> inbox
    wait_until(lambda: _states(d.data)["Utilisateurs/gaby/late.png"][0] != "publishing", what="published")
    state, attempts = _states(d.data)["Utilisateurs/gaby/late.png"]
    assert state == "inbox" and attempts == 1  # waiting did not burn attempts
    assert d.log().count("backend unavailable; jobs wait for it") == 1  # one line per outage
    assert d.stop() == 0


@pytest.mark.parametrize("garble", ["json", "image"])
def test_a_broken_webui_answer_is_retried_by_the_daemon(tmp_path, daemon_factory, webui, garble):
    webui.garble = garble  # the first txt2img answer is cut-off JSON / not an image
    d = daemon_factory(_config(tmp_path, webui)).start()
    drop_theme(d.data)
    wait_until(lambda: inbox_images(d.data), what="the result after one retry")
    lines = [json.loads(x) for x in (d.data / "logs" / "generations.jsonl").read_text().splitlines()]
    assert [x["status"] for x in lines] == ["retry", "ok"]
    assert ("without JSON" if garble == "json" else "undecodable image") in lines[0]["error"]
    assert d.stop() == 0
