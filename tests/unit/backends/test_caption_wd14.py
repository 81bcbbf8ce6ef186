"""The WD14 tagger on a stand-in built with onnx.helper: exactly which tags pass which threshold,
their order, no rating, underscores, kohya's preprocessing (white square padding, BGR)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from astrowatch.backends.caption.folders import check_caption_models, folder_problem, weights_sha256
from astrowatch.backends.caption.text import CaptionSettings
from astrowatch.backends.caption.wd14 import Wd14Tagger, prepare
from astrowatch.core.errors import ConfigError
from astrowatch.runtime.settings import config_from_mapping

BASE = CaptionSettings(captioner="none", captioner_model=None, captioner_prompt=None, tagger="wd14",
                       tagger_model=None, general_threshold=0.35, character_threshold=0.85, max_tags=40)
RED = Image.new("RGB", (40, 40), (255, 0, 0))


def names(tagger: Wd14Tagger, image: Image.Image, **changes: object) -> list[str]:
    tags, _ratings = tagger.tag(image, dataclasses.replace(BASE, **changes))  # type: ignore[arg-type]
    return [t.name for t in tags]


def test_exact_tags_order_thresholds_and_no_rating(tiny_wd14: Path) -> None:
    tagger = Wd14Tagger(tiny_wd14, "cpu")
    assert tagger.size == 32
    tags, ratings = tagger.tag(RED, BASE)
    # character first (0.9 >= 0.85; some_character 0.6 < 0.85 is not written although over 0.35),
    # then general by score: red 0.98, long hair 0.9, ^_^ 0.7, simple background 0.5; blue_sky 0.2 fails
    assert [t.name for t in tags] == ["hatsune miku", "red dominant", "long hair", "^_^", "simple background"]
    assert [t.category for t in tags] == ["character"] + ["general"] * 4
    assert tags[1].score == pytest.approx(0.982, abs=0.002)
    assert ratings == {"general": pytest.approx(0.95, abs=1e-3)}
    assert all(t.name != "general" for t in tags)


def test_thresholds_undesired_max_and_underscores(tiny_wd14: Path) -> None:
    tagger = Wd14Tagger(tiny_wd14, "cpu")
    assert names(tagger, RED, character_threshold=0.5)[:2] == ["hatsune miku", "some character"]
    assert "blue sky" in names(tagger, RED, general_threshold=0.15)
    assert names(tagger, RED, general_threshold=0.8) == ["hatsune miku", "red dominant", "long hair"]
    assert names(tagger, RED, undesired_tags=("simple background", "long_hair")) == \
        ["hatsune miku", "red dominant", "^_^"]
    assert names(tagger, RED, max_tags=2) == ["hatsune miku", "red dominant"]
    assert names(tagger, RED, keep_underscores=True)[:3] == ["hatsune_miku", "red_dominant", "long_hair"]


def test_bgr_order_and_white_square_padding(tiny_wd14: Path) -> None:
    tagger = Wd14Tagger(tiny_wd14, "cpu")
    blue = Image.new("RGB", (40, 40), (0, 0, 255))
    assert "blue dominant" in names(tagger, blue) and "red dominant" not in names(tagger, blue)
    # a 2:1 red strip padded with white: the B channel mean is 0.5 -> blue_dominant scores 0.5 (> 0.35);
    # stretched instead of padded it would stay at 0.018
    wide = Image.new("RGB", (64, 32), (255, 0, 0))
    assert "blue dominant" in names(tagger, wide)
    arr = prepare(wide, 32)
    assert arr.shape == (1, 32, 32, 3) and arr.dtype == np.float32
    assert arr[0, 0, 0].tolist() == [255.0, 255.0, 255.0]  # the padding is white
    assert arr[0, 16, 16].tolist() == [0.0, 0.0, 255.0]  # red in BGR, not normalised


def test_broken_folders_are_named(tiny_wd14: Path, tmp_path: Path) -> None:
    broken = tmp_path / "tagger"
    shutil.copytree(tiny_wd14, broken)
    (broken / "selected_tags.csv").unlink()
    assert folder_problem("wd14", broken) == f"caption.tagger_model: {broken} has no selected_tags.csv"
    cfg = config_from_mapping({"caption": {"tagger": "wd14", "tagger_model": str(broken)}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="selected_tags.csv"):
        check_caption_models(cfg)
    lines = (tiny_wd14 / "selected_tags.csv").read_text().splitlines()
    (broken / "selected_tags.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ConfigError, match="gives 9 scores but selected_tags.csv has 8 rows"):
        Wd14Tagger(broken, "cpu")
    assert weights_sha256(tiny_wd14) and len(weights_sha256(tiny_wd14) or "") == 64
