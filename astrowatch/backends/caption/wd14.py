"""WD14 taggers (SmilingWolf's ``wd-*-tagger-v2/v3``): ``model.onnx`` + ``selected_tags.csv``,
run with onnxruntime exactly as kohya's ``tag_images_by_wd14_tagger.py`` prepares the image:
pad to a square with white, resize to the model's input size, RGB -> BGR, float32 0..255."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from astrowatch.backends.caption.folders import weights_sha256
from astrowatch.backends.caption.text import CaptionSettings, tag_text
from astrowatch.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

GENERAL, CHARACTER, RATING = 0, 4, 9
CATEGORY_NAMES = {GENERAL: "general", CHARACTER: "character", RATING: "rating"}


@dataclass(frozen=True)
class Tag:
    name: str  # as written on line 1 (underscores handled)
    score: float
    category: str  # general | character

    def record(self) -> dict[str, Any]:
        return {"tag": self.name, "score": round(self.score, 4), "category": self.category}


def read_tags(path: Path) -> list[tuple[str, int]]:
    """(name, category) per row of ``selected_tags.csv`` (columns tag_id,name,category,count)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"caption.tagger_model: {path} cannot be read: {exc}") from None
    if not rows or not {"name", "category"} <= set(rows[0]):
        raise ConfigError(f"caption.tagger_model: {path} is not a WD14 tag list "
                          "(expected the columns tag_id,name,category,count)")
    try:
        return [(row["name"], int(row["category"])) for row in rows]
    except (TypeError, ValueError):
        raise ConfigError(f"caption.tagger_model: {path}: a category is not a number") from None


def prepare(image: Image, size: int) -> np.ndarray:
    """``[1, size, size, 3]`` float32 BGR 0..255: white square padding, area resize when shrinking."""
    from PIL import Image as PILImage

    rgb = image.convert("RGB")
    side = max(rgb.size)
    square = PILImage.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    if side != size:
        method = PILImage.Resampling.BOX if side > size else PILImage.Resampling.LANCZOS
        square = square.resize((size, size), method)
    array = np.asarray(square, dtype=np.float32)[:, :, ::-1]  # RGB -> BGR
    return np.ascontiguousarray(array)[None, ...]


def providers(device: str) -> tuple[list[Any], str]:
    """onnxruntime execution providers for ``device`` (CUDA when asked or auto and present)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        index = int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], f"cuda:{index}"
    if device.startswith("cuda"):
        raise ConfigError(f"caption.device {device}: onnxruntime has no CUDA execution provider here",
                          hint="install onnxruntime-gpu (make ORT_EXTRA=caption-gpu) or set caption.device: cpu")
    return ["CPUExecutionProvider"], "cpu"


class Wd14Tagger:
    """One loaded tagger (loaded once per worker, kept across jobs)."""

    def __init__(self, folder: Path, device: str = "auto") -> None:
        self.folder = folder
        self.tags = read_tags(folder / "selected_tags.csv")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("caption.tagger wd14 needs onnxruntime",
                              hint="pip install 'astrowatch[caption]' (or [caption-gpu])") from None
        chosen, self.device = providers(device)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(folder / "model.onnx"), sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConfigError(f"caption.tagger_model: {folder / 'model.onnx'} cannot be loaded: {exc}") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        shape = list(first.shape)
        side = shape[1] if len(shape) == 4 else None
        if not isinstance(side, int) or shape[3] != 3:
            raise ConfigError(f"caption.tagger_model: {folder / 'model.onnx'} does not take [N, S, S, 3] images "
                              f"(input shape {shape})")
        self.size = side
        outputs = self.session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != len(self.tags):
            raise ConfigError(f"caption.tagger_model: {folder}: model.onnx gives {outputs[-1]} scores but "
                              f"selected_tags.csv has {len(self.tags)} rows")
        self.sha256 = weights_sha256(folder)

    def info(self) -> dict[str, Any]:
        return {"name": "wd14", "folder": str(self.folder), "sha256": self.sha256, "input_size": self.size,
                "device": self.device}

    def scores(self, image: Image) -> np.ndarray:
        out = self.session.run(None, {self.input_name: prepare(image, self.size)})[0]
        scores = np.asarray(out, dtype=np.float32).reshape(-1)
        if scores.shape[0] != len(self.tags):
            raise ConfigError(f"caption.tagger_model: {self.folder}: {scores.shape[0]} scores for "
                              f"{len(self.tags)} tags")
        return scores

    def tag(self, image: Image, settings: CaptionSettings) -> tuple[list[Tag], dict[str, float]]:
        """(tags written on line 1, rating scores).  Character tags first, then general, each by
        score (highest first; ties in the CSV's order); undesired ones dropped; at most max_tags."""
        return select(self.tags, self.scores(image), settings)


def select(tags: list[tuple[str, int]], scores: np.ndarray,
           settings: CaptionSettings) -> tuple[list[Tag], dict[str, float]]:
    undesired = {u.strip().replace(" ", "_").lower() for u in settings.undesired_tags if u.strip()}
    chosen: list[tuple[int, float, int, str]] = []
    ratings: dict[str, float] = {}
    for index, ((name, category), score) in enumerate(zip(tags, scores.tolist(), strict=True)):
        if category == RATING:
            ratings[name] = round(float(score), 4)
            continue
        threshold = settings.character_threshold if category == CHARACTER else settings.general_threshold
        if category not in (GENERAL, CHARACTER) or score < threshold:
            continue
        if name.replace(" ", "_").lower() in undesired:
            continue
        chosen.append((0 if category == CHARACTER else 1, -float(score), index, name))
    chosen.sort()
    if settings.max_tags:
        chosen = chosen[:settings.max_tags]
    out = [Tag(tag_text(name, settings.keep_underscores), -neg, "character" if group == 0 else "general")
           for group, neg, _i, name in chosen]
    return out, ratings
