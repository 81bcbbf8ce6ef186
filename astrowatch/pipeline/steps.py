"""The steps of one job, from input file to a result in ``state/work/<job>/``.

astro:   snapshot JSON -> parse chart -> fuse prompt -> init image -> backend.generate
enhance: source image  -> preprocess -> cache lookup -> backend.enhance -> cache store

Steps raise :mod:`astrowatch.core.errors` exceptions; the worker turns those into state changes.
Nothing here touches the inbox, the ledger's state or the user folders: see publish.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astrowatch.backends.base import AstroTask, Backend, CancelToken, EnhanceTask, Progress, Result
from astrowatch.backends.caption.text import CAPTION_KEYS
from astrowatch.backends.loras import LoraPlan
from astrowatch.core.errors import InputError
from astrowatch.pipeline.feedback import sidecar_learned

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job

PIPELINE_KEYS = frozenset({"backend", "seed", "style"}) | CAPTION_KEYS  # overrides the pipeline itself consumes
SNAPSHOT_FROM = "_snapshot_from"  # param of a job made by astrowatch api: the job whose theme snapshot it uses
INIT_IMAGE_BACKENDS = frozenset({"sdxl"})  # backends that use an init/style image (others ignore it)


@dataclass
class JobContext:
    config: Config
    layout: Layout
    get_backend: Callable[[str, str], Backend]  # (kind, name or None) -> started backend
    cancel: CancelToken = field(default_factory=CancelToken)
    progress: Progress = field(default_factory=Progress)  # the worker's: status shows it


@dataclass
class Outcome:
    result: Result
    params: dict[str, Any]  # effective parameters, as the reviewer sees and edits them
    extra: dict[str, Any]  # recorded in the sidecar (fusion, facts, cache...)
    image_format: str = "png"  # the result file: png, webp or jpeg (enhance.format; astro is always png)


def backend_for(params: dict[str, Any], default_backend: str) -> str:
    """The backend a job runs on: its own ``backend`` parameter (a redo may switch), else the default."""
    return str(params.get("backend") or default_backend)


def task_params(params: dict[str, Any]) -> dict[str, Any]:
    """What the backend receives: the job's parameters less those the pipeline consumes itself."""
    return {k: v for k, v in params.items() if k not in PIPELINE_KEYS and not k.startswith("_")}


def theme_snapshot(job: Job, ctx: JobContext) -> Path:
    """The copy of the theme JSON taken at ingest (the upstream app may rewrite the original)."""
    return ctx.layout.archive_dir(job.user, job.id) / job.source_name


def run_astro(job: Job, ctx: JobContext, default_backend: str) -> Outcome:
    from astrowatch.chart.parse import parse_chart_bytes

    cfg = ctx.config
    snapshot = theme_snapshot(job, ctx)
    if not snapshot.exists():
        raise InputError(f"{job.source_name}: the snapshot taken at ingest is missing ({snapshot})")
    chart = parse_chart_bytes(snapshot.read_bytes(), user=job.user, source=job.source_name,
                              max_bytes=cfg.limits.max_json_bytes, max_depth=cfg.limits.max_json_depth)
    return generate_astro(chart, ctx, job_id=job.id, params=job.params, default_backend=default_backend,
                          work_dir=ctx.layout.archive_dir(job.user, job.id))  # a rendered wheel is kept


def generate_astro(chart: Any, ctx: JobContext, *, job_id: str, params: dict[str, Any], default_backend: str,
                   work_dir: Path) -> Outcome:
    """Fuse the prompt and generate: the one code path of the daemon and ``astrowatch generate``."""
    from astrowatch.fusion import fuse

    name = backend_for(params, default_backend)
    backend = ctx.get_backend("astro", name)
    fusion_backend = name if name in ("sdxl", "sdapi", "openai") else "sdxl"
    seed = params.get("seed")
    loras = lora_plan(backend, chart.user, params)
    fusion = fuse(chart, ctx.config, style=params.get("style"), backend=fusion_backend,
                  seed=int(seed) if seed is not None else None, triggers=loras.triggers if loras else ())
    init_image = _init_image(chart, ctx, name, work_dir, params)
    for_backend = task_params(params)
    if loras is not None:
        for_backend["loras"] = loras
    task = AstroTask(job_id=job_id, user=chart.user, chart=chart, params=for_backend, seed=fusion.seed,
                     prompt=fusion.prompt, negative_prompt=fusion.negative_prompt,
                     fusion=fusion.to_dict(), init_image=init_image, cancel=ctx.cancel,
                     progress=ctx.progress)
    result = backend.generate(task)
    description = result.description or ""
    if fusion.description and fusion.description not in description:
        description = f"{fusion.description}\n{description}".strip()
    result.description = description
    result.prompt = result.prompt or fusion.prompt
    result.negative_prompt = result.negative_prompt or fusion.negative_prompt
    effective = {"backend": name, "style": fusion.style, "seed": fusion.seed, **result.params}
    if loras is not None:
        effective["loras"] = loras.params()
    init_rel = str(init_image) if init_image else None
    if init_image is not None:
        try:
            init_rel = ctx.layout.rel(init_image)
        except Exception:
            pass
    return Outcome(result, effective, {"fusion": fusion.to_dict(), "init_image": init_rel,
                                       "loras": loras.record(ctx.config.data_dir) if loras else None,
                                       "learned": sidecar_learned(params, effective)})


def lora_plan(backend: Backend, user: str, params: dict[str, Any]) -> LoraPlan | None:
    """The LoRA adapters of this job (backends that take them: ``plan_loras``), None when there are
    none to speak of (nothing configured, nothing asked)."""
    planner = getattr(backend, "plan_loras", None)
    if planner is None:
        return None
    plan: LoraPlan = planner(user, params.get("loras"))
    return plan if plan.uses or plan.skipped or params.get("loras") is not None else None


def _init_image(chart: Any, ctx: JobContext, backend: str, work_dir: Path, params: dict[str, Any]) -> Path | None:
    """Moodboard if the user has one, else the chart wheel when ``astro.init_image: wheel`` and
    the backend will use it (sdxl with an ``init_strength``): rendering it costs ~0.25 s."""
    user_dir: Path = ctx.layout.users / chart.user
    for ext in ("png", "jpg", "webp"):
        candidate = user_dir / f"moodboard.{ext}"
        if candidate.is_file() and not candidate.is_symlink():
            return candidate
    if ctx.config.astro.init_image != "wheel" or backend not in INIT_IMAGE_BACKENDS:
        return None
    if params.get("init_strength", ctx.config.sdxl.init_strength) is None:
        return None
    from astrowatch.backends.wheel.backend import render_wheel
    from astrowatch.storage.images import write_png

    path = work_dir / "wheel.png"
    if not path.exists():
        write_png(path, render_wheel(chart, size=ctx.config.astro.wheel_size))
    return path


def run_enhance(job: Job, ctx: JobContext, source: Path, default_backend: str) -> Outcome:
    return enhance_image(source, ctx, job_id=job.id, user=job.user, params=job.params,
                         default_backend=default_backend, fallback_seed=int(job.source_sha256[:8], 16))


def enhance_image(source: Path, ctx: JobContext, *, job_id: str, user: str, params: dict[str, Any],
                  default_backend: str, fallback_seed: int) -> Outcome:
    """Preprocess, look up the cache, enhance: the daemon's and ``astrowatch enhance``'s path."""
    from astrowatch.pipeline.captions import caption_result
    from astrowatch.pipeline.preprocess import bounded_scale, preprocess

    cfg = ctx.config
    image, facts = preprocess(source, enhance=cfg.enhance, limits=cfg.limits)
    name = backend_for(params, default_backend)
    backend = ctx.get_backend("enhance", name)
    for_backend = task_params(params)
    requested = for_backend.get("scale_factor", cfg.enhance.scale_factor)
    factor, facts["scale"] = bounded_scale(image.size, requested, cfg.enhance.max_output_side)
    if factor != requested:
        for_backend["scale_factor"] = factor  # every backend reads its factor from the task's params
    seed = int(params.get("seed", fallback_seed))
    key = cache_key(image, name, backend, cfg, for_backend)
    cached = cache_load(ctx.layout, key)
    task = EnhanceTask(job_id=job_id, user=user, image=image, source_name=source.name,
                       params=for_backend, seed=seed, facts=facts, cancel=ctx.cancel,
                       progress=ctx.progress, source=source)
    if cached is not None:
        result, cache = cached, "hit"
    else:
        result, cache = backend.enhance(task), "miss"
        cache_store(ctx.layout, key, result)
    captions = caption_result(ctx, task, result, name, params)  # after the cache: a redo re-captions only
    effective = {"backend": name, "seed": seed, **result.params,
                 **{k: v for k, v in params.items() if k in CAPTION_KEYS}}
    return Outcome(result, effective, {"facts": facts, "cache": cache, "cache_key": key, "captions": captions,
                                       "learned": sidecar_learned(params, effective)},
                   image_format=cfg.enhance.format)


# -- enhance result cache: content hash of the preprocessed input + every parameter ------------
def cache_key(image: Any, name: str, backend: Backend, cfg: Config, params: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    settings = {"backend": name, "backend_settings": backend.settings_key(),  # pixels: not the file format
                "enhance": cfg.enhance.model_dump(mode="json", exclude={"format"}),
                "dataset": cfg.dataset.model_dump(mode="json"),
                "language": cfg.astro.language, "params": params}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _cache_paths(layout: Layout, key: str) -> tuple[Path, Path]:
    folder = layout.cache / key[:2]
    return folder / f"{key}.png", folder / f"{key}.json"


def cache_load(layout: Layout, key: str) -> Result | None:
    from PIL import Image

    png, meta = _cache_paths(layout, key)
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        with Image.open(png) as img:
            img.load()
            image = img.copy()
    except (OSError, ValueError):
        return None
    try:
        os.utime(meta)  # recently used: retention.cache_max_mb removes the least recently used first
    except OSError:
        pass
    return Result(image=image, backend=data["backend"], model=data.get("model"), params=data["params"],
                  seed=data.get("seed"), description=data.get("description", ""),
                  infotext=data.get("infotext"), extra={**data.get("extra", {}), "cache": "hit"})


def cache_store(layout: Layout, key: str, result: Result) -> None:
    from astrowatch.storage.images import atomic_write_text, write_png

    png, meta = _cache_paths(layout, key)
    write_png(png, result.image, infotext=result.infotext)
    atomic_write_text(meta, json.dumps({
        "backend": result.backend, "model": result.model, "params": result.params, "seed": result.seed,
        "description": result.description, "infotext": result.infotext, "extra": result.extra,
    }, default=str))
