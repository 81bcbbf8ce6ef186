"""What kohya-ss/sd-scripts does when it reads one of our datasets, quoted from its source.

Copied (not imported: sd-scripts is not installable) from kohya-ss/sd-scripts at commit
48d368fa557731ad0488c07304dfeba8c07910eb (2026-02-16):
- ``library/train_util.py``: ``IMAGE_EXTENSIONS`` (the base list; ``.avif``/``.jxl`` only with
  optional plugins), ``glob_images`` and the caption lookup of ``read_caption``
  (``os.path.splitext(img_path)[0] + caption_extension``, first line(s), must not be empty);
- ``library/config_util.py``: the DreamBooth subset / dataset keys and types of ``ConfigSanitizer``
  (a voluptuous ``Schema``; voluptuous is not installed here, so the types are checked by hand).
"""

from __future__ import annotations

import glob
import os
import tomllib
from pathlib import Path

IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP"]

GENERAL = {"shuffle_caption": bool, "caption_extension": str, "keep_tokens": int}
DATASET = {"resolution": int, "batch_size": int, "subsets": list}
DB_SUBSET = {"image_dir": str, "class_tokens": str, "num_repeats": int, "caption_extension": str}


def glob_images(directory: str, base: str = "*") -> list[str]:
    img_paths: list[str] = []
    for ext in IMAGE_EXTENSIONS:
        img_paths.extend(glob.glob(os.path.join(glob.escape(directory), base + ext)))
    return sorted(set(img_paths))


def read_caption(img_path: str, caption_extension: str) -> str | None:
    cap_path = os.path.splitext(img_path)[0] + caption_extension
    if not os.path.isfile(cap_path):
        return None
    with open(cap_path, encoding="utf-8") as f:
        lines = f.readlines()
    assert len(lines) > 0, f"caption file is empty: {cap_path}"
    return lines[0].strip()


def _typed(section: dict, schema: dict, where: str) -> None:
    for key, value in section.items():
        assert key in schema, f"{where}: kohya does not know the key {key!r}"
        assert isinstance(value, schema[key]) and not (schema[key] is int and isinstance(value, bool)), \
            f"{where}.{key}: {value!r} is not {schema[key].__name__}"


def load_dataset(toml_path: Path) -> list[tuple[str, str]]:
    """(image path, caption) for every image kohya would train on, after checking dataset.toml."""
    config = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    general = config.get("general", {})
    _typed(general, GENERAL, "general")
    pairs = []
    for dataset in config["datasets"]:
        _typed(dataset, DATASET, "datasets")
        for subset in dataset["subsets"]:
            _typed(subset, DB_SUBSET, "subsets")
            assert "image_dir" in subset, "image_dir is required"
            extension = subset.get("caption_extension", general.get("caption_extension", ".caption"))
            for image in glob_images(subset["image_dir"]):
                caption = read_caption(image, extension)
                assert caption, f"{image}: no caption kohya can read"
                pairs.append((image, caption))
    return pairs
