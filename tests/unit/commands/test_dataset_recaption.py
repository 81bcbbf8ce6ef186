"""``astrowatch dataset recaption``: the tiny BLIP and the WD14 stand-in re-caption a filed dataset,
loaded once; an edited caption is kept unless --force; --dry-run writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from caption_tiny import BLIP_WORDS
from PIL import Image

from astrowatch.cli import main
from astrowatch.pipeline.dataset_captions import RECORD_NAME

pytestmark = pytest.mark.torch  # tiny BLIP / Florence-2 models: make test, not make test-fast

TAGS = ["hatsune miku", "red dominant", "long hair", "^_^"]


def test_recaption_keeps_edits_unless_forced(tmp_path: Path, tiny_blip: Path, tiny_wd14: Path, capsys) -> None:
    mapping = {"data_dir": "data", "dataset": {"trigger_word": "ohwx"},
               "caption": {"captioner": "blip", "captioner_model": str(tiny_blip), "tagger": "wd14",
                           "tagger_model": str(tiny_wd14), "undesired_tags": ["simple_background"]}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    dataset = tmp_path / "data" / "datasets" / "gaby"
    dataset.mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.new("RGB", (40, 40), (255, 0, 0)).save(dataset / f"{name}.png")
    old = "ohwx, photo, color, 40x40, dominant red"
    (dataset / "a.txt").write_text(old + "\n")  # as proposed and filed
    (dataset / "b.txt").write_text("ohwx, my own words\n")  # edited at review
    (dataset / "c.txt").write_text(old + "\n")  # no record, no ledger: nothing says it is unedited
    (dataset / "d.png").symlink_to(dataset / "a.png")  # a link is never read
    (dataset / RECORD_NAME).write_text(json.dumps({"format": 1, "images": {
        "a.png": {"job_id": "a" * 12, "proposed": old, "filed": old},
        "b.png": {"job_id": "b" * 12, "proposed": old, "filed": "ohwx, my own words"}}}))

    assert main(["dataset", "recaption", "gaby", "-c", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would re-caption datasets/gaby/a.txt" in out and "1 to re-caption, 2 kept" in out
    assert "kept datasets/gaby/b.txt: edited by a reviewer" in out
    assert (dataset / "a.txt").read_text() == old + "\n"

    assert main(["dataset", "recaption", "gaby", "-c", str(config)]) == 0
    assert "re-captioned 1, kept 2" in capsys.readouterr().out
    words = [w.strip() for w in (dataset / "a.txt").read_text().strip().split(",")]
    assert words[0] == "ohwx" and set(words[1].split()) <= set(BLIP_WORDS) and words[2:] == TAGS
    assert (dataset / "b.txt").read_text() == "ohwx, my own words\n"
    assert (dataset / "c.txt").read_text() == old + "\n"
    record = json.loads((dataset / RECORD_NAME).read_text())["images"]
    assert record["a.png"]["proposed"] == record["a.png"]["filed"] == ", ".join(words)
    assert record["a.png"]["models"]["captioner"]["name"] == "blip" and "d.png" not in record

    assert main(["dataset", "recaption", "gaby", "-c", str(config), "--force"]) == 0
    assert "re-captioned 3, kept 0" in capsys.readouterr().out
    assert (dataset / "b.txt").read_text() == (dataset / "a.txt").read_text()
    assert main(["dataset", "recaption", "../x", "-c", str(config)]) == 65
