"""Helpers shared by the sdapi tests: config with short timeouts, tasks, test images."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webui_server import FakeWebUI

from astrowatch.backends.base import AstroTask, CancelToken, EnhanceTask
from astrowatch.backends.sdapi.backend import SdapiBackend
from astrowatch.core.config import Config
from astrowatch.runtime.settings import config_from_mapping

FAST_SDAPI = {"connect_timeout": 1.0, "read_timeout": 5.0, "max_retries": 3, "retry_backoff": 0.01,
              "retry_backoff_max": 0.05, "poll_interval": 0.05, "width": 128, "height": 96}


def make_config(url: str, tmp: Path, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {"sdapi": {"url": url, **FAST_SDAPI, **sections.pop("sdapi", {})}}
    data.update(sections)
    return config_from_mapping(data, base_dir=tmp)


def make_backend(server: FakeWebUI, tmp: Path, *, start: bool = True, **sections: dict[str, Any]) -> SdapiBackend:
    backend = SdapiBackend(make_config(server.url, tmp, **sections))
    if start:
        backend.start()
    return backend


def photo(size: tuple[int, int] = (100, 80), colour: tuple[int, int, int] = (200, 30, 30),
          mode: str = "RGB") -> Image.Image:
    """A small test picture with some structure (a uniform image would be 'blank')."""
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    draw.rectangle((size[0] // 10, size[1] // 8, size[0] // 2, size[1] // 2), fill=(20, 40, 220))
    draw.ellipse((size[0] // 2, size[1] // 2, size[0] - 5, size[1] - 5), fill=(240, 240, 40))
    return image.convert("L").convert("RGB") if mode == "gray" else image


def enhance_task(image: Image.Image | None = None, cancel: CancelToken | None = None,
                 facts: dict[str, Any] | None = None, **params: Any) -> EnhanceTask:
    return EnhanceTask(job_id="job1", user="alice", image=image or photo(), source_name="photo.jpg",
                       params=params, seed=1234, facts=facts or {}, cancel=cancel or CancelToken())


def astro_task(seed: int = 42, cancel: CancelToken | None = None, **params: Any) -> AstroTask:
    return AstroTask(job_id="job2", user="alice", chart=None, params=params, seed=seed,  # type: ignore[arg-type]
                     prompt="(cosmic:1.2) wheel, [nebula], gold", negative_prompt="blurry, text",
                     cancel=cancel or CancelToken())
