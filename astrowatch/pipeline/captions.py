"""The caption step of an enhance job, after the upscale (or the cache): line 1 of the result's
description becomes ``trigger, the captioner's sentence, tag, tag, ...``; the technical
description follows for the reviewer; the sidecar records the models, the settings, the caption and
every proposed tag with its score.  It runs on every backend and on a cache hit, so a redo with
another captioner or other thresholds re-captions without upscaling again.  Under ``executor:
celery`` :func:`model_captions` runs on the ``astrowatch worker`` (its models, its device) and the
record comes back in ``Result.captions``; here only line 1 is put in place."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from astrowatch.backends.caption.service import CAPTION_KIND, CaptionService
from astrowatch.backends.caption.text import Line, compose, effective_settings

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

    from astrowatch.backends.base import Backend, CancelToken, EnhanceTask, Result
    from astrowatch.backends.caption.text import CaptionSettings
    from astrowatch.core.config import Config


class JobContext(Protocol):
    """What the step needs of :class:`astrowatch.pipeline.steps.JobContext`."""

    @property
    def config(self) -> Config: ...

    @property
    def get_backend(self) -> Callable[[str, str], Backend]: ...

    @property
    def cancel(self) -> CancelToken: ...


def technical_text(result: Result, trigger: str) -> str:
    """The backend's description less any training caption it put on line 1 (the WebUI's)."""
    lines = [ln for ln in (result.description or "").splitlines() if ln.strip()]
    if lines and result.extra.get("caption_text"):
        lines = lines[1:]
    if lines and trigger and lines[0].lower().startswith(trigger.lower() + ","):
        lines[0] = lines[0][len(trigger) + 1:].strip()
    return "\n".join(lines)


def sdapi_caption(ctx: JobContext, result: Result | None, task: EnhanceTask,
                  model: str) -> tuple[str, dict[str, Any]]:
    """The WebUI's interrogate: taken from the sdapi result when it asked the same model (no second
    call; a failed interrogate there is not repeated), else asked now."""
    info: dict[str, Any] = {"name": "sdapi", "model": model}
    if result is not None and result.backend == "sdapi" and result.extra.get("caption") in (f"webui:{model}", "technical"):
        return str(result.extra.get("caption_text") or ""), {**info, "webui": result.extra.get("webui")}
    from astrowatch.backends.sdapi.backend import SdapiBackend

    backend = ctx.get_backend("enhance", "sdapi")
    assert isinstance(backend, SdapiBackend)
    return backend.interrogate(task, model), {**info, "webui": backend.describe().get("url")}


def service(ctx: JobContext) -> CaptionService:
    service = ctx.get_backend(CAPTION_KIND, CAPTION_KIND)
    assert isinstance(service, CaptionService)
    return service


def model_captions(config: Config, settings: CaptionSettings, image: Image, service: Callable[[], CaptionService],
                   sdapi: Callable[[str], tuple[str, dict[str, Any]]], cancel: CancelToken | None,
                   trigger: str | None = None) -> dict[str, Any]:
    """What the configured models propose for ``image``: the sidecar's ``captions`` record, whose
    ``line`` is line 1 (``trigger, caption, tag, tag``).  Also used by ``astrowatch dataset recaption``
    and by ``astrowatch worker`` (``trigger``: the coordinator's ``dataset.trigger_word``)."""
    trigger = (config.dataset.trigger_word if trigger is None else trigger).strip()
    caption, captioner = "", {"name": settings.captioner}
    if settings.captioner == "sdapi" and settings.captioner_model:
        caption, captioner = sdapi(settings.captioner_model)
    elif settings.captioner in ("blip", "florence2", "openai"):
        caption = service().caption(image, settings, cancel)
        captioner = service().model_info(settings)
    if settings.captioner_prompt and settings.captioner != "none":
        captioner["prompt"] = settings.captioner_prompt
    tags: list[Any] = []
    ratings: dict[str, float] = {}
    tagger: dict[str, Any] = {"name": settings.tagger}
    if settings.tagger == "wd14":
        if cancel is not None:
            cancel.check()
        tags, ratings, tagger = service().tag(image, settings)
    line = Line(trigger, caption, [t.name for t in tags]).text()
    record: dict[str, Any] = {"line": line, "caption": caption, "captioner": captioner, "tagger": tagger,
                              "tags": [t.record() for t in tags], "ratings": ratings, **settings.record()}
    if settings.why:
        record["why"] = settings.why
    return record


def caption_result(ctx: JobContext, task: EnhanceTask, result: Result, backend: str,
                   params: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``result.description`` (line 1 = the training line); return the sidecar's ``captions``:
    the record a remote worker made (``result.captions``), else the one made here."""
    config = ctx.config
    record = result.captions
    if record is None:
        settings: CaptionSettings = effective_settings(config, backend, params)
        record = model_captions(config, settings, task.image, lambda: service(ctx),
                                lambda model: sdapi_caption(ctx, result, task, model), ctx.cancel)
    result.description = compose(record["line"], technical_text(result, config.dataset.trigger_word.strip()))
    return record
