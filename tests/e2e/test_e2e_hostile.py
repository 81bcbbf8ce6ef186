"""Hostile input: each gets a failed/ entry with a reason (or a logged skip), the daemon stays
up, and nothing is written outside the data folder."""

from __future__ import annotations

import json
import os

import pytest
from harness import inbox_images, make_image, theme_bytes, wait_until, write_config

pytestmark = pytest.mark.slow


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "data" not in p.relative_to(root).parts[:1])


def _error(data, user, name):
    path = data / "failed" / user / f"{name}.error.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_hostile_inputs_fail_cleanly_and_the_daemon_stays_up(tmp_path, daemon_factory):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.jpg"
    make_image(secret)
    truncated = make_image(tmp_path / "t.jpg", (200, 200))[:300]
    png_bytes = make_image(tmp_path / "x.png", (20, 20))
    small_jpg = make_image(tmp_path / "y.jpg", (20, 20))
    cfg = write_config(tmp_path, limits={"max_json_bytes": 20_000, "max_image_pixels": 200_000})
    d = daemon_factory(cfg).start()
    before_outside = _tree(tmp_path)
    data, users = d.data, d.data / "Utilisateurs"

    cases = {  # user -> (file name, bytes)
        "malformed": ("theme_malformed.json", b'{"name": "x", "sun": {'),
        "notobject": ("theme_notobject.json", b"[1, 2, 3]"),
        "huge": ("theme_huge.json", b'{"pad": "' + b"x" * 50_000 + b'"}'),
        "nested": ("theme_nested.json", b"[" * 5_000 + b"]" * 5_000),
        "empty": ("theme_empty.json", b""),
        "binary": ("theme_binary.json", b"\xff\xfe\x00garbage\x80"),
    }
    for user, (name, payload) in cases.items():
        (users / user).mkdir(parents=True)
        (users / user / name).write_bytes(payload)
    img = users / "imgs"
    img.mkdir()
    (img / "zero.jpg").write_bytes(b"")
    (img / "truncated.jpg").write_bytes(truncated)
    make_image(img / "bomb.png", (1000, 1000))  # 1e6 pixels > limits.max_image_pixels
    (img / "text.jpg").write_bytes(b"this is not an image at all")
    (img / "liar.jpg").write_bytes(png_bytes)  # PNG content, .jpg name
    os.symlink(secret, img / "link.jpg")
    (img / "theme_somebody.json").write_bytes(theme_bytes())
    (img / "bad\x07name.jpg").write_bytes(small_jpg)
    ctrl = users / "evil\x07user"
    ctrl.mkdir()
    make_image(ctrl / "a.jpg")
    nonutf8 = os.path.join(os.fsencode(users), b"caf\xe9")
    os.mkdir(nonutf8)
    with open(os.path.join(nonutf8, b"a.jpg"), "wb") as fh:
        fh.write(small_jpg)
    make_image(users / "ok" / "good.jpg")  # a good file among the bad ones still works

    wait_until(lambda: inbox_images(data, "ok"), timeout=30, what="the good file processed")
    for user, (name, _) in cases.items():
        err = wait_until(lambda u=user, n=name: _error(data, u, n), what=f"failed entry for {name}")
        assert err["reason"]
        # a theme over limits.max_json_bytes is refused before it is read or hashed: no job at all
        assert err["job_id"] if user != "huge" else err["job_id"] is None and "max_json_bytes" in err["reason"]
        assert (users / user / name).exists()  # the upstream app's JSON is never moved
    reasons = {n: wait_until(lambda n=n: _error(data, "imgs", n), what=n)["reason"]
               for n in ("zero.jpg", "truncated.jpg", "bomb.png", "text.jpg", "liar.jpg", "link.jpg",
                         "theme_somebody.json", "bad_name.jpg")}
    assert "empty" in reasons["zero.jpg"]
    assert "max_image_pixels" in reasons["bomb.png"]
    assert "not an image" in reasons["text.jpg"]
    assert "extension" in reasons["liar.jpg"]
    assert "symbolic link" in reasons["link.jpg"]
    assert "theme_imgs.json" in reasons["theme_somebody.json"]
    assert "depth" in _error(data, "nested", "theme_nested.json")["reason"].lower()
    assert os.path.islink(data / "failed" / "imgs" / "link.jpg")  # the link moved, not followed
    assert secret.read_bytes() and _tree(tmp_path) == before_outside  # nothing written outside data/
    assert not (data / "failed" / "evil\x07user").exists() and os.path.exists(nonutf8)  # skipped, logged
    assert "unsafe user folder" in d.log()
    assert d.proc.poll() is None
    assert d.stop() == 0
