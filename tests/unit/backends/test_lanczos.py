"""The ``lanczos`` enhance backend: exact sizes, a technical description, cancellation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from astrowatch.backends.base import CancelToken, EnhanceTask
from astrowatch.backends.lanczos import LanczosBackend
from astrowatch.backends.registry import create_backend
from astrowatch.core.config import Config
from astrowatch.core.errors import InputError, Interrupted
from astrowatch.pipeline.preprocess import preprocess


def _photo(w: int = 301, h: int = 199) -> Image.Image:
    img = Image.new("RGB", (w, h), (20, 34, 88))  # dark blue
    img.paste((222, 202, 168), (0, 0, w // 3, h))  # beige third
    return img


def _task(image: Image.Image, facts: dict | None = None, **params: object) -> EnhanceTask:
    return EnhanceTask(job_id="j1", user="gaby", image=image, source_name="photo.jpg",
                       params=dict(params), seed=1, facts=facts or {})


def _config(language: str = "en", **enhance: object) -> Config:
    cfg = Config()
    cfg.astro.language = language
    for key, value in enhance.items():
        setattr(cfg.enhance, key, value)
    return cfg


@pytest.mark.parametrize("factor", [2.0, 1.5])
def test_exact_output_size(factor: float) -> None:
    backend = create_backend("lanczos", "enhance", _config(scale_factor=factor))
    result = backend.enhance(_task(_photo()))
    assert isinstance(backend, LanczosBackend)
    assert result.image.size == (round(301 * factor), round(199 * factor))
    assert result.image.mode == "RGB"
    assert result.backend == "lanczos" and result.model is None and result.seed == 1
    assert result.params["scale_factor"] == factor
    assert result.params["unsharp_percent"] == 60 and result.params["unsharp_radius"] == 1.2
    assert result.params["unsharp_threshold"] == 3


def test_params_override_scale_factor() -> None:
    result = LanczosBackend(_config(scale_factor=2.0)).enhance(_task(_photo(100, 80), scale_factor=1.5))
    assert result.image.size == (150, 120) and result.params["scale_factor"] == 1.5


@pytest.mark.parametrize("bad", [0.5, 9, "two", None])
def test_bad_scale_factor_is_an_input_error(bad: object) -> None:
    with pytest.raises(InputError, match="params.scale_factor"):
        LanczosBackend(Config()).enhance(_task(_photo(40, 40), scale_factor=bad))


def test_unsharp_mask_sharpens() -> None:
    soft = LanczosBackend(_config(unsharp_percent=0)).enhance(_task(_photo(60, 40)))
    sharp = LanczosBackend(_config(unsharp_percent=200)).enhance(_task(_photo(60, 40)))
    assert soft.image.size == sharp.image.size
    edge = lambda im: np.abs(np.diff(np.asarray(im, dtype=np.int16)[:, :, 2], axis=1)).max()  # noqa: E731
    assert edge(sharp.image) > edge(soft.image)
    assert soft.params["unsharp_percent"] == 0


def test_description_names_size_and_colour(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    _photo(400, 300).save(path)
    cfg = _config()
    image, facts = preprocess(path, enhance=cfg.enhance, limits=cfg.limits)
    result = LanczosBackend(cfg).enhance(_task(image, facts))
    lines = result.description.splitlines()
    assert lines[0] == "photo, color, 800x600, dominant dark blue and beige"
    assert "Size: 800x600 px, upscaled ×2 from 400x300" in lines
    assert "Colour: colour" in lines


def test_description_says_grayscale_in_french(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    Image.linear_gradient("L").resize((300, 300)).save(path)
    cfg = _config("fr", scale_factor=1.5)
    image, facts = preprocess(path, enhance=cfg.enhance, limits=cfg.limits)
    result = LanczosBackend(cfg).enhance(_task(image, facts))
    lines = result.description.splitlines()
    assert lines[0].startswith("photo, grayscale, 450x450, dominant ")
    assert "Couleur : niveaux de gris" in lines
    assert "Taille : 450x450 px, agrandie ×1.5 depuis 300x300" in lines


def test_interrupt_raises_interrupted() -> None:
    token = CancelToken()
    token.request_interrupt()
    task = _task(_photo())
    task.cancel = token
    with pytest.raises(Interrupted):
        LanczosBackend(Config()).enhance(task)


def test_stop_request_does_not_interrupt() -> None:
    token = CancelToken()
    token.request_stop()  # first SIGTERM: finish the current image
    task = _task(_photo(50, 50))
    task.cancel = token
    assert LanczosBackend(Config()).enhance(task).image.size == (100, 100)
