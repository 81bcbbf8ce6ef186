"""The whole reviewer flow against the real daemon process, by moving files like a person."""

from __future__ import annotations

import json
import os
import signal

import pytest
from harness import inbox_images, make_image, run_cli, theme_bytes, wait_until, write_config

pytestmark = pytest.mark.slow

SIDECAR_KEYS = {"job_id", "kind", "user", "source", "backend", "params", "seed", "timings"}


def _move_with_sidecars(image, dest_dir, sidecars=True):
    dest_dir.mkdir(parents=True, exist_ok=True)
    if sidecars:
        for suffix in (".json", ".txt"):
            side = image.with_suffix(suffix)
            if side.exists():
                os.replace(side, dest_dir / side.name)
    os.replace(image, dest_dir / image.name)


def _reviews(data):
    path = data / "logs" / "reviews.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_theme_and_photo_to_inbox_then_deliver_and_file(tmp_path, daemon_factory):
    d = daemon_factory(write_config(tmp_path)).start()
    data, user = d.data, d.data / "Utilisateurs" / "gaby"
    user.mkdir(parents=True)
    theme = theme_bytes("kerykeion_v5_subject.json")
    (user / "theme_gaby.json").write_bytes(theme)
    make_image(user / "photo.jpg", (80, 60))

    images = wait_until(lambda: len(inbox_images(data)) == 2 and inbox_images(data), what="two results")
    for image in images:
        assert image.with_suffix(".txt").read_text().strip()
        sidecar = json.loads(image.with_suffix(".json").read_text())
        assert SIDECAR_KEYS <= sidecar.keys()
    astro = next(i for i in images if i.name.startswith("theme_gaby."))
    photo = next(i for i in images if i.name.startswith("photo."))
    assert json.loads(astro.with_suffix(".json").read_text())["kind"] == "astro"
    assert (user / "theme_gaby.json").read_bytes() == theme  # the upstream app's file is never touched
    wait_until(lambda: not (user / "photo.jpg").exists(), what="original archived")

    # Approve the astro result, leaving its sidecars in the inbox.
    _move_with_sidecars(astro, data / "approved", sidecars=False)
    delivered = user / "theme_gaby.png"
    wait_until(delivered.exists, what="theme delivered")
    wait_until(lambda: not any((data / "approved").iterdir()), what="approved/ emptied")
    job_id = astro.name.split(".")[1]
    archive = data / "archive" / "gaby" / job_id
    assert {f.name for f in archive.iterdir()} >= {astro.name, astro.with_suffix(".json").name,
                                                    astro.with_suffix(".txt").name, "theme_gaby.json"}
    assert not astro.with_suffix(".json").exists()

    # Edit the caption, approve the photo into a reviewer's subfolder, sidecars moved along.
    photo.with_suffix(".txt").write_text("gaby in red light\nreviewer notes\n")
    _move_with_sidecars(photo, data / "approved" / "lot-1")
    dataset = data / "datasets" / "gaby"
    wait_until(lambda: (dataset / "photo.png").exists() and (dataset / "photo.txt").exists(), what="dataset")
    assert (dataset / "photo.txt").read_text() == "gaby in red light\n"
    assert 'caption_extension = ".txt"' in (dataset / "dataset.toml").read_text()
    wait_until(lambda: not any((data / "approved" / "lot-1").iterdir()), what="subfolder emptied")

    decisions = wait_until(lambda: len(_reviews(data)) == 2 and _reviews(data))
    assert {r["decision"] for r in decisions} == {"approve"}
    assert any(r["delivered_to"] == "Utilisateurs/gaby/theme_gaby.png" for r in decisions)
    assert any(r["caption_edited"] for r in decisions)

    # The delivered PNG is ours: a rescan (every 2 s here) must not turn it into a job.
    status = json.loads(run_cli("status", "--json", config=d.config_path).stdout)
    assert status["counts"] == {"delivered": 1, "filed": 1}
    assert d.stop() == 0
    assert any("STOPPING=1" in m for m in d.drain_messages())


def test_reject_redo_and_redelivery(tmp_path, daemon_factory):
    d = daemon_factory(write_config(tmp_path)).start()
    data, user = d.data, d.data / "Utilisateurs" / "gaby"
    user.mkdir(parents=True)
    make_image(user / "a.png", (40, 30))
    make_image(user / "b.png", (50, 20), color=(10, 200, 10))
    wait_until(lambda: len(inbox_images(data)) == 2, what="two results")
    a = next(i for i in inbox_images(data) if i.name.startswith("a."))
    b = next(i for i in inbox_images(data) if i.name.startswith("b."))

    _move_with_sidecars(a, data / "rejected")
    wait_until(lambda: not any((data / "rejected").iterdir()), what="rejected/ emptied")
    assert (data / "archive" / "gaby" / a.name.split(".")[1] / a.name).exists()
    assert not (data / "datasets" / "gaby").exists()

    sidecar = json.loads(b.with_suffix(".json").read_text())
    sidecar["params"]["scale_factor"] = 3
    b.with_suffix(".json").write_text(json.dumps(sidecar))
    _move_with_sidecars(b, data / "redo", sidecars=False)  # sidecar edited in place, in the inbox
    redo = wait_until(lambda: [i for i in inbox_images(data) if i.name.startswith("b.") and i != b], what="redo")
    from PIL import Image

    with Image.open(redo[0]) as img:
        assert img.size == (150, 60)
    child = json.loads(redo[0].with_suffix(".json").read_text())
    assert child["parent_job"] == sidecar["job_id"] and child["params"]["scale_factor"] == 3
    assert not b.with_suffix(".json").exists()  # the parent's sidecar was archived
    decisions = [r["decision"] for r in _reviews(data)]
    assert decisions == ["reject", "redo"]

    # A new theme content replaces the delivered PNG; the previous one is archived.
    (user / "theme_gaby.json").write_bytes(theme_bytes("astrowatch_minimal.json"))
    first = wait_until(lambda: [i for i in inbox_images(data) if i.name.startswith("theme_")], what="astro 1")[0]
    _move_with_sidecars(first, data / "approved")
    wait_until((user / "theme_gaby.png").exists)
    old_png = (user / "theme_gaby.png").read_bytes()
    corrected = json.loads(theme_bytes("astrowatch_minimal.json"))  # another chart (the same one in
    corrected["birth"], corrected["moon"] = "1990-08-05T15:30:00+02:00", "Aquarius"  # another format: no job)
    (user / "theme_gaby.json").write_text(json.dumps(corrected))
    second = wait_until(lambda: [i for i in inbox_images(data) if i.name.startswith("theme_")], what="astro 2")[0]
    _move_with_sidecars(second, data / "approved")
    wait_until(lambda: (user / "theme_gaby.png").read_bytes() != old_png, what="second delivery")
    previous = data / "archive" / "gaby" / second.name.split(".")[1] / "previous_theme_gaby.png"
    assert previous.read_bytes() == old_png
    d.signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0


def test_review_cli_moves_files_like_a_reviewer(tmp_path, daemon_factory):
    cfg = write_config(tmp_path)
    d = daemon_factory(cfg).start()
    data, user = d.data, d.data / "Utilisateurs" / "gaby"
    user.mkdir(parents=True)
    make_image(user / "c.jpg")
    image = wait_until(lambda: inbox_images(data), what="result")[0]
    listed = json.loads(run_cli("review", "list", "--json", config=cfg).stdout)
    assert [row["job_id"] for row in listed] == [image.name.split(".")[1]]
    run_cli("review", "approve", image.name.split(".")[1][:6], config=cfg)
    wait_until(lambda: (data / "datasets" / "gaby" / "c.png").exists(), what="filed via CLI")
    bad = run_cli("review", "reject", "ffffffffffff", config=cfg, check=False)
    assert bad.returncode != 0 and "no job" in bad.stderr


def test_review_redo_set_uses_the_generate_spelling_and_refuses_unknown_keys(tmp_path, daemon_factory):
    cfg = write_config(tmp_path)
    d = daemon_factory(cfg).start()
    data, user = d.data, d.data / "Utilisateurs" / "gaby"
    user.mkdir(parents=True)
    make_image(user / "c.jpg", (40, 30))
    image = wait_until(lambda: inbox_images(data), what="result")[0]
    job_id = image.name.split(".")[1]
    for bad in ("bogus=1", "scale_factor=3", "astro.style=cosmique", "sdxl.bogus=2"):
        proc = run_cli("review", "redo", job_id, "--set", bad, config=cfg, check=False)
        assert proc.returncode == 78, proc.stderr
        assert "unknown key; valid keys: enhance.backend, enhance.scale_factor" in proc.stderr, proc.stderr
        assert "enhance.seed" in proc.stderr and "astro.style" not in proc.stderr.split("valid keys:")[1]
    assert image.exists()  # nothing moved
    run_cli("review", "redo", job_id, "--set", "enhance.scale_factor=3", config=cfg)
    redo = wait_until(lambda: [i for i in inbox_images(data) if i != image], what="the redo's result")[0]
    assert json.loads(redo.with_suffix(".json").read_text())["params"]["scale_factor"] == 3
    from PIL import Image

    with Image.open(redo) as new, Image.open(data / "archive" / "gaby" / job_id / image.name) as old:
        assert new.width == old.width * 3 // 2  # x3 instead of the default x2
    assert d.stop() == 0
