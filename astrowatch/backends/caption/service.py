"""The caption models of one worker, as a backend of kind ``caption`` in its
:class:`~astrowatch.backends.pool.BackendPool`: started (models loaded) at the first photo,
kept across jobs, closed when a reload changes ``caption:``.  Under ``executor: celery`` it lives
in each ``astrowatch worker`` (loaded before the worker takes a job), not on the coordinator (see
docs/captions.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from astrowatch.backends.base import Backend
from astrowatch.backends.caption.folders import check_caption_models

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

    from astrowatch.backends.base import CancelToken
    from astrowatch.backends.caption.text import CaptionSettings
    from astrowatch.backends.caption.wd14 import Tag, Wd14Tagger
    from astrowatch.core.config import Config

CAPTION_KIND = "caption"
# what, when changed by a reload, needs the models loaded again (thresholds do not)
MODEL_KEYS = ("captioner", "captioner_model", "max_new_tokens", "tagger", "tagger_model", "device")


class CaptionService(Backend):
    name: ClassVar[str] = CAPTION_KIND
    kinds: ClassVar[frozenset[str]] = frozenset({CAPTION_KIND})

    def __init__(self, config: Config, device: str | None = None) -> None:
        super().__init__(config)
        self.worker_device = device
        self._captioners: dict[tuple[str, str], Any] = {}
        self._taggers: dict[str, Wd14Tagger] = {}
        self.load_seconds: dict[str, float] = {}

    def settings_key(self) -> Any:
        c = self.config.caption
        return {**{k: str(getattr(c, k)) for k in MODEL_KEYS},
                "openai": self.config.openai.model_dump(mode="json", include={"base_url", "api_key_file"})}

    def start(self) -> None:
        """Check the folders, then load the configured local models (once)."""
        check_caption_models(self.config)
        c = self.config.caption
        if c.captioner in ("blip", "florence2") and c.captioner_model:
            self.captioner(c.captioner, c.captioner_model)
        if c.tagger == "wd14" and c.tagger_model:
            self.tagger(str(c.tagger_model))

    def _device(self) -> str:
        from astrowatch.backends.caption.local import torch_device

        return torch_device(self.config.caption.device, self.worker_device)

    def captioner(self, name: str, model: str) -> Any:
        key = (name, model)
        if key not in self._captioners:
            t0 = time.monotonic()
            c = self.config.caption
            if name == "blip":
                from astrowatch.backends.caption.local import BlipCaptioner

                self._captioners[key] = BlipCaptioner(model, self._device(), c.max_new_tokens)
            elif name == "florence2":
                from astrowatch.backends.caption.local import FlorenceCaptioner

                self._captioners[key] = FlorenceCaptioner(model, self._device(), c.max_new_tokens)
            elif name == "openai":
                from astrowatch.backends.caption.chat import ChatCaptioner

                self._captioners[key] = ChatCaptioner(self.config, model)
            else:
                raise ValueError(f"no local captioner {name!r}")
            self.load_seconds[name] = round(time.monotonic() - t0, 3)
        return self._captioners[key]

    def tagger(self, folder: str) -> Wd14Tagger:
        if folder not in self._taggers:
            from astrowatch.backends.caption.wd14 import Wd14Tagger

            t0 = time.monotonic()
            device = self.config.caption.device
            if device == "auto" and self.worker_device and self.worker_device.startswith("cuda"):
                device = self.worker_device
            self._taggers[folder] = Wd14Tagger(Path(folder), device)
            self.load_seconds["wd14"] = round(time.monotonic() - t0, 3)
        return self._taggers[folder]

    def caption(self, image: Image, settings: CaptionSettings, cancel: CancelToken | None = None) -> str:
        """The model's sentence (blip, florence2, openai)."""
        assert settings.captioner_model is not None
        model = self.captioner(settings.captioner, settings.captioner_model)
        if settings.captioner == "openai":
            return str(model.caption(image, settings.captioner_prompt, cancel))
        return str(model.caption(image, settings.captioner_prompt))

    def tag(self, image: Image, settings: CaptionSettings) -> tuple[list[Tag], dict[str, float], dict[str, Any]]:
        assert settings.tagger_model is not None
        tagger = self.tagger(settings.tagger_model)
        tags, ratings = tagger.tag(image, settings)
        return tags, ratings, tagger.info()

    def model_info(self, settings: CaptionSettings) -> dict[str, Any]:
        assert settings.captioner_model is not None
        info: dict[str, Any] = self.captioner(settings.captioner, settings.captioner_model).info()
        return info

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "captioners": [f"{n}:{m}" for n, m in self._captioners],
                "taggers": list(self._taggers), "load_seconds": dict(self.load_seconds)}

    def close(self) -> None:
        for model in self._captioners.values():
            model.close()
        self._captioners.clear()
        self._taggers.clear()
