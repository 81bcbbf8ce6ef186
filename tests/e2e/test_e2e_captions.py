"""The real daemon on the CPU backend with a tiny BLIP and the WD14 stand-in: line 1 of the
result's caption, the sidecar's record, a reviewer's tag edit, and the dataset line filed."""

from __future__ import annotations

import json

import pytest
from caption_tiny import BLIP_WORDS
from harness import inbox_images, run_cli, wait_until, write_config
from PIL import Image

pytestmark = pytest.mark.slow


def test_photo_is_captioned_tagged_edited_and_filed(tmp_path, daemon_factory, tiny_blip, tiny_wd14):
    cfg = write_config(tmp_path, enhance={"backend": "lanczos", "min_side": 16},
                       dataset={"trigger_word": "ohwx"},
                       caption={"captioner": "blip", "captioner_model": str(tiny_blip), "tagger": "wd14",
                                "tagger_model": str(tiny_wd14), "device": "cpu"})
    d = daemon_factory(cfg).start()
    user = d.data / "Utilisateurs" / "gaby"
    user.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 48), (255, 0, 0)).save(user / "photo.png")
    image = wait_until(lambda: inbox_images(d.data), timeout=60, what="the captioned result")[0]
    text = image.with_suffix(".txt").read_text().splitlines()
    sidecar = json.loads(image.with_suffix(".json").read_text())
    rec = sidecar["captions"]
    parts = [p.strip() for p in text[0].split(",")]
    assert parts[0] == "ohwx" and parts[1] == rec["caption"] and set(rec["caption"].split()) <= set(BLIP_WORDS)
    assert parts[2:] == ["hatsune miku", "red dominant", "long hair", "^_^", "simple background"]
    assert rec["captioner"]["name"] == "blip" and rec["tagger"]["name"] == "wd14"
    assert text[1].startswith("photo, color")  # technical, off line 1

    # the reviewer drops a tag and puts another first, then approves: what they left is filed
    edited = ", ".join(["ohwx", "long hair", rec["caption"], "hatsune miku", "^_^"])
    image.with_suffix(".txt").write_text(edited + "\n" + "\n".join(text[1:]) + "\n")
    run_cli("review", "approve", sidecar["job_id"][:6], config=cfg)
    filed = d.data / "datasets" / "gaby" / "photo.txt"
    wait_until(filed.exists, timeout=30, what="filed into the dataset")
    assert filed.read_text() == edited + "\n"
    assert "keep_tokens = 1" in (d.data / "datasets" / "gaby" / "dataset.toml").read_text()
    assert d.stop() == 0


def test_missing_model_file_is_named_at_start(tmp_path, tiny_wd14):
    import shutil

    broken = tmp_path / "tagger"
    shutil.copytree(tiny_wd14, broken)
    (broken / "model.onnx").unlink()
    cfg = write_config(tmp_path, caption={"tagger": "wd14", "tagger_model": str(broken)})
    out = run_cli("doctor", config=cfg, check=False)
    assert f"{broken} has no model.onnx" in out.stdout
