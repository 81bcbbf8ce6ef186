"""Review correctness on the real daemon: the newest theme wins, and a bounced decision returns
everything it moved to the inbox (a later redo never reads a stale sidecar left behind)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from harness import corrected_theme_bytes, inbox_images, make_image, run_cli, theme_bytes, wait_until, write_config

pytestmark = pytest.mark.slow


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _theme_results(data):
    return [i for i in inbox_images(data) if i.name.startswith("theme_gaby.")]


def _two_theme_results(d):
    """The upstream app rewrites theme_gaby.json while the first version waits for review."""
    user = d.data / "Utilisateurs" / "gaby"
    user.mkdir(parents=True)
    (user / "theme_gaby.json").write_bytes(theme_bytes("astrowatch_minimal.json"))
    old = wait_until(lambda: _theme_results(d.data), what="first theme result")[0]
    (user / "theme_gaby.json").write_bytes(corrected_theme_bytes())
    new = wait_until(lambda: [i for i in _theme_results(d.data) if i != old], what="second theme result")[0]
    return user, old, new


def _sidecar(path):
    return json.loads(path.with_suffix(".json").read_text())


def test_an_older_theme_result_never_replaces_a_newer_one_unless_forced(tmp_path, daemon_factory):
    cfg = write_config(tmp_path)
    d = daemon_factory(cfg).start()
    user, old, new = _two_theme_results(d)
    old_id, new_id = old.name.split(".")[1], new.name.split(".")[1]
    assert _sidecar(old)["source"]["sha256"] == hashlib.sha256(theme_bytes("astrowatch_minimal.json")).hexdigest()
    stale = wait_until(lambda: _sidecar(old).get("stale"), what="older result marked stale")
    assert stale["newer_job"] == new_id and "--force" in stale["note"]
    assert "stale" not in _sidecar(new)

    # Approving the older one while the newer one waits: bounced, nothing delivered.
    os.replace(old, d.data / "approved" / old.name)
    error = old.with_name(f"theme_gaby.{old_id}.error.txt")
    wait_until(lambda: old.exists() and error.exists(), what="bounced back to the inbox")
    assert "newer chart" in error.read_text() and f"astrowatch review approve {old_id} --force" in error.read_text()
    assert not (user / "theme_gaby.png").exists() and not list((d.data / "approved").iterdir())

    # The newer one is delivered; the older one approved again is still bounced.
    os.replace(new, d.data / "approved" / new.name)
    delivered = user / "theme_gaby.png"
    wait_until(delivered.exists, what="newer chart delivered")
    new_png = _sha(delivered)
    error.unlink()
    run_cli("review", "approve", old_id, config=cfg)
    wait_until(lambda: old.exists() and error.exists(), what="bounced again")
    assert _sha(delivered) == new_png

    # Forced: the reviewer really wants the older chart.
    run_cli("review", "approve", old_id, "--force", config=cfg)
    wait_until(lambda: _sha(delivered) != new_png, what="forced delivery")
    archived = d.data / "archive" / "gaby" / old_id / old.name
    assert _sha(delivered) == _sha(archived)
    reviews = [json.loads(line) for line in (d.data / "logs" / "reviews.jsonl").read_text().splitlines()]
    assert [(r["job_id"], r["forced_over"]) for r in reviews] == [(new_id, None), (old_id, new_id)]
    assert d.stop() == 0


def test_a_redo_of_an_older_theme_arrives_stale_after_the_newer_one_is_delivered(tmp_path, daemon_factory):
    d = daemon_factory(write_config(tmp_path)).start()
    user, old, new = _two_theme_results(d)
    new_id = new.name.split(".")[1]
    os.replace(new, d.data / "approved" / new.name)
    wait_until((user / "theme_gaby.png").exists, what="newer chart delivered")
    delivered = _sha(user / "theme_gaby.png")
    os.replace(old, d.data / "redo" / old.name)  # the older chart drawn again, after the delivery
    redone = wait_until(lambda: [i for i in _theme_results(d.data) if i.name != old.name], what="redo result")[0]
    assert _sidecar(redone)["parent_job"] == old.name.split(".")[1]
    stale = wait_until(lambda: _sidecar(redone).get("stale"), what="redo marked stale")
    assert stale["newer_job"] == new_id and "already delivered" in stale["note"]
    os.replace(redone, d.data / "approved" / redone.name)
    wait_until(lambda: redone.exists() and redone.with_name(redone.name.replace(".png", ".error.txt")).exists(),
               what="bounced")
    assert _sha(user / "theme_gaby.png") == delivered
    assert d.stop() == 0


def test_a_bounced_redo_returns_image_sidecar_and_caption(tmp_path, daemon_factory):
    d = daemon_factory(write_config(tmp_path)).start()
    user = d.data / "Utilisateurs" / "gaby"
    make_image(user / "p.png", (40, 30))
    image = wait_until(lambda: inbox_images(d.data), what="result")[0]
    sidecar = image.with_suffix(".json")
    good = json.loads(sidecar.read_text())
    sidecar.write_text("{ this is not json")
    redo = d.data / "redo" / "lot"
    redo.mkdir(parents=True)
    for path in (sidecar, image.with_suffix(".txt"), image):  # moved together, image last
        os.replace(path, redo / path.name)
    error = image.with_name(image.name.replace(".png", ".error.txt"))
    wait_until(lambda: image.exists() and error.exists(), what="bounced")
    assert "sidecar" in error.read_text()
    assert sidecar.exists() and image.with_suffix(".txt").exists()  # everything came back
    assert not list(redo.iterdir())  # nothing left behind

    # Fixed in the inbox, the image alone moved into redo/: the fixed sidecar is the one read.
    good["params"]["scale_factor"] = 3
    sidecar.write_text(json.dumps(good))
    os.replace(image, d.data / "redo" / image.name)
    child = wait_until(lambda: [i for i in inbox_images(d.data) if i.name != image.name], what="redo result")[0]
    assert _sidecar(child)["params"]["scale_factor"] == 3 and _sidecar(child)["parent_job"] == good["job_id"]
    assert d.stop() == 0
