"""What a model folder must hold, checked without loading anything (start-up, ``doctor``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from astrowatch.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# kind -> (key, [alternatives of one needed file, ...])
NEEDED: dict[str, list[tuple[str, ...]]] = {
    "blip": [("config.json",), WEIGHTS, ("preprocessor_config.json", "processor_config.json"),
             ("tokenizer.json", "vocab.txt")],
    "florence2": [("config.json",), WEIGHTS, ("preprocessor_config.json", "processor_config.json"),
                  ("tokenizer.json", "vocab.json")],
    "wd14": [("model.onnx",), ("selected_tags.csv",)],
}
KEYS = {"blip": "caption.captioner_model", "florence2": "caption.captioner_model", "wd14": "caption.tagger_model"}
_hashes: dict[tuple[str, int, int], str] = {}


def folder_problem(kind: str, folder: str | Path | None) -> str | None:
    """Why ``folder`` cannot serve as a ``kind`` model (naming the folder and the missing file), or None."""
    key = KEYS[kind]
    if not folder:
        return f"{key}: not set ({kind} needs a local model folder)"
    path = Path(folder)
    if not path.is_dir():
        return f"{key}: {path} is not a folder"
    for alternatives in NEEDED[kind]:
        if not any((path / name).is_file() for name in alternatives):
            return f"{key}: {path} has no {' or '.join(alternatives)}"
    return None


def check_caption_models(config: Config) -> None:
    """Raise :class:`ConfigError` when a configured local model folder is missing a file (local
    executor only: under ``executor: celery`` the workers check their own folders)."""
    if getattr(config, "executor", "local") != "local":
        return
    c = config.caption
    problems = []
    if c.captioner in ("blip", "florence2"):
        problems.append(folder_problem(c.captioner, c.captioner_model))
    if c.tagger == "wd14":
        problems.append(folder_problem("wd14", c.tagger_model))
    found = [p for p in problems if p]
    if found:
        raise ConfigError("; ".join(found), hint="see docs/captions.md for the folders to download")


def weights_file(folder: Path) -> Path | None:
    for name in (*WEIGHTS, "model.onnx"):
        if (folder / name).is_file():
            return folder / name
    return None


def weights_sha256(folder: Path) -> str | None:
    """sha256 of the folder's weights file (cached by path, size and mtime: hashed once per load)."""
    path = weights_file(folder)
    if path is None:
        return None
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _hashes[key] = h.hexdigest()
    return _hashes[key]
