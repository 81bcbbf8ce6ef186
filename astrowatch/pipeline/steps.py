"""The steps of one job, from input file to a result in ``state/work/<job>/``.

astro:   snapshot JSON -> parse chart -> fuse prompt -> init image -> backend.generate
enhance: source image  -> preprocess -> cache lookup -> backend.enhance -> cache store

Steps raise :mod:`astrowatch.core.errors` exceptions; the worker turns those into state changes.
Nothing here touches the inbox, the ledger's state or the user folders: see publish.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astrowatch.backends.base import AstroTask, Backend, CancelToken, EnhanceTask, Progress, Result
from astrowatch.backends.caption.text import CAPTION_KEYS, effective_settings
from astrowatch.backends.loras import LoraPlan
from astrowatch.core.errors import InputError, UnsafePathError
from astrowatch.pipeline.feedback import sidecar_learned
from astrowatch.storage import safefs

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
    from astrowatch.pipeline.seeds import SeedBook
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job

PIPELINE_KEYS = frozenset({"backend", "seed", "style", "variants"}) | CAPTION_KEYS  # overrides the pipeline itself consumes
SNAPSHOT_FROM = "_snapshot_from"  # param of a job made by astrowatch api: the job whose theme snapshot it uses
INIT_IMAGE_BACKENDS = frozenset({"sdxl"})  # backends that use an init/style image (others ignore it)


@dataclass
class JobContext:
    config: Config
    layout: Layout
    get_backend: Callable[[str, str], Backend]  # (kind, name or None) -> started backend
    cancel: CancelToken = field(default_factory=CancelToken)
    progress: Progress = field(default_factory=Progress)  # the worker's: status shows it
    seeds: SeedBook | None = None  # the daemon's: a chart is drawn again with the seed it was drawn with


@dataclass
class Outcome:
    result: Result
    params: dict[str, Any]  # effective parameters, as the reviewer sees and edits them
    extra: dict[str, Any]  # recorded in the sidecar (fusion, facts, cache...)
    image_format: str = "png"  # the result file: png, webp or jpeg (enhance.format; astro is always png)
    variants: list[Result] = field(default_factory=list)  # astro.variants > 1: every image, ``result`` first


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
    from astrowatch.storage import safefs

    cfg = ctx.config
    snapshot = theme_snapshot(job, ctx)
    try:  # one descriptor, no link followed, size checked before the read
        raw = safefs.read_bytes(snapshot, root=ctx.layout.root, max_bytes=cfg.limits.max_json_bytes, what="theme").data
    except safefs.Unreadable as exc:
        why = "is missing" if exc.gone else f"cannot be read ({exc})"
        raise InputError(f"{job.source_name}: the snapshot taken at ingest {why}: "
                         f"{ctx.layout.rel(snapshot)}") from None
    chart = parse_chart_bytes(raw, user=job.user, source=job.source_name,
                              max_bytes=cfg.limits.max_json_bytes, max_depth=cfg.limits.max_json_depth)
    params = job.params
    if ctx.seeds is not None and params.get("seed") is None:  # the seed this chart was drawn with before
        params = {**params, "seed": ctx.seeds.resolve(chart, job_id=job.id)}
    return generate_astro(chart, ctx, job_id=job.id, params=params, default_backend=default_backend,
                          work_dir=ctx.layout.archive_dir(job.user, job.id))  # a rendered wheel is kept


def generate_astro(chart: Any, ctx: JobContext, *, job_id: str, params: dict[str, Any], default_backend: str,
                   work_dir: Path, moodboard: Path | None = None) -> Outcome:
    """Fuse the prompt and generate: the one code path of the daemon and ``astrowatch generate``.

    ``moodboard``: a file the operator names (``generate --moodboard``), used instead of the user
    folder's ``moodboard.*``: the style reference with ``sdxl.ip_adapter``, else the img2img start."""
    from astrowatch.fusion import fuse

    name = backend_for(params, default_backend)
    backend = ctx.get_backend("astro", name)
    fusion_backend = name if name in ("sdxl", "sdapi", "openai") else "sdxl"
    seed = params.get("seed")
    loras = lora_plan(backend, chart.user, params)
    fusion = fuse(chart, ctx.config, style=params.get("style"), backend=fusion_backend,
                  seed=int(seed) if seed is not None else None, triggers=loras.triggers if loras else ())
    if moodboard is not None:
        init_image, init_rel, style_image, style_sha, style_rel = _given_moodboard(moodboard, ctx, name, work_dir, params)
    else:
        init_image, init_rel = _init_image(chart, ctx, name, work_dir, params)
        style_image, style_sha, style_rel = _style_reference(chart, ctx, name, work_dir)
    for_backend = task_params(params)
    if loras is not None:
        for_backend["loras"] = loras
    task = AstroTask(job_id=job_id, user=chart.user, chart=chart, params=for_backend, seed=fusion.seed,
                     prompt=fusion.prompt, negative_prompt=fusion.negative_prompt,
                     fusion=fusion.to_dict(), init_image=init_image, cancel=ctx.cancel,
                     progress=ctx.progress, style_image=style_image, style_sha256=style_sha)
    count = int(params.get("variants") or ctx.config.astro.variants)
    variants: list[Result] = []
    if count > 1:
        from astrowatch.pipeline.variants import variant_seeds

        variants = backend.generate_variants(task, variant_seeds(fusion.seed, count))
        result = variants[0]
    else:
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
    if variants:
        effective["variants"] = len(variants)
        for other in variants[1:]:
            other.description = description
            other.prompt, other.negative_prompt = other.prompt or result.prompt, other.negative_prompt or result.negative_prompt
    return Outcome(result, effective, {"fusion": fusion.to_dict(), "init_image": init_rel,
                                       "style_reference": {"path": style_rel, "sha256": style_sha} if style_rel else None,
                                       "loras": loras.record(ctx.config.data_dir) if loras else None,
                                       "learned": sidecar_learned(params, effective)}, variants=variants)


def lora_plan(backend: Backend, user: str, params: dict[str, Any]) -> LoraPlan | None:
    """The LoRA adapters of this job (backends that take them: ``plan_loras``), None when there are
    none to speak of (nothing configured, nothing asked)."""
    planner = getattr(backend, "plan_loras", None)
    if planner is None:
        return None
    plan: LoraPlan = planner(user, params.get("loras"))
    return plan if plan.uses or plan.skipped or params.get("loras") is not None else None


def _init_image(chart: Any, ctx: JobContext, backend: str, work_dir: Path,
                params: dict[str, Any]) -> tuple[Path | None, str | None]:
    """Moodboard if the user has one, else the chart wheel when ``astro.init_image: wheel`` and
    the backend will use it (sdxl with an ``init_strength``): rendering it costs ~0.25 s.

    Returns (the file the backend reads, what the sidecar records).  The moodboard lies in the
    shared tree: it is decoded by the sandboxed decoder (safe open, memory and time limits) and
    the backend reads the PNG copy written into ``work_dir``, never the user's file by name."""
    from astrowatch.storage.images import write_png

    used = backend in INIT_IMAGE_BACKENDS and params.get("init_strength", ctx.config.sdxl.init_strength) is not None
    user_dir: Path = ctx.layout.users / chart.user
    # with an adapter the moodboard is a style reference (_style_reference), not an init image
    names = [] if _adapter(ctx, backend) else [f"moodboard.{ext}" for ext in ("png", "jpg", "webp")]
    found = safefs.lstat_names(user_dir, names, root=ctx.layout.root)  # the folder reached once
    for name in names:
        candidate = user_dir / name
        st = found[name]
        if st is not None and stat.S_ISREG(st.st_mode):
            return (_moodboard_copy(candidate, ctx, work_dir) if used else None), ctx.layout.rel(candidate)
    if ctx.config.astro.init_image != "wheel" or not used:
        return None, None
    from astrowatch.backends.wheel.backend import render_wheel
    from astrowatch.storage.images import png_bytes

    path = work_dir / "wheel.png"
    try:
        ctx.layout.rel(path)
    except UnsafePathError:  # ``astrowatch generate``: a temporary folder of its own
        if not path.exists():
            write_png(path, render_wheel(chart, size=ctx.config.astro.wheel_size))
        return path, str(path)
    if safefs.lstat_or_none(path, root=ctx.layout.root) is None:  # archive/<user>/<job>/: shared, never followed
        safefs.write_bytes(path, png_bytes(render_wheel(chart, size=ctx.config.astro.wheel_size)),
                           root=ctx.layout.root)
    return path, ctx.layout.rel(path)


def _adapter(ctx: JobContext, backend: str) -> bool:
    return backend == "sdxl" and ctx.config.sdxl.ip_adapter.model is not None


def _style_reference(chart: Any, ctx: JobContext, backend: str,
                     work_dir: Path) -> tuple[Path | None, str | None, str | None]:
    """With ``sdxl.ip_adapter``: the user's ``moodboard.*`` (else, with ``fallback: last_portrait``,
    the last delivered ``theme_<user>.png``) as the style reference: (the decoded copy the backend
    reads, the sha256 of the user's file, its path for the sidecar).  Read through safefs and the
    sandboxed decoder like the init image; a changed moodboard is used by the next job."""
    if not _adapter(ctx, backend):
        return None, None, None
    user_dir: Path = ctx.layout.users / chart.user
    names = [f"moodboard.{ext}" for ext in ("png", "jpg", "webp")]
    if ctx.config.sdxl.ip_adapter.fallback == "last_portrait":
        names.append(f"theme_{chart.user}.png")
    for name in names:
        candidate = user_dir / name
        st = safefs.lstat_or_none(candidate, root=ctx.layout.root)
        if st is None or not stat.S_ISREG(st.st_mode):
            continue
        try:
            digest, _st = safefs.sha256_of(candidate, root=ctx.layout.root,
                                           max_bytes=ctx.config.limits.max_image_bytes, what="style reference")
        except safefs.Unreadable:
            continue
        return _moodboard_copy(candidate, ctx, work_dir, "style.png"), digest, ctx.layout.rel(candidate)
    return None, None, None


def _given_moodboard(source: Path, ctx: JobContext, backend: str, work_dir: Path, params: dict[str, Any],
                     ) -> tuple[Path | None, str | None, Path | None, str | None, str | None]:
    """``generate --moodboard``: an operator's file outside the shared tree, decoded by the sandboxed
    decoder (a regular file within ``limits.max_image_bytes``, the content it was hashed with).
    Returns (init image, its record, style image, its sha256, its record)."""
    from astrowatch.pipeline.preprocess import operator_file_sha256, preprocess
    from astrowatch.storage.images import write_png

    adapter = _adapter(ctx, backend)
    as_init = backend in INIT_IMAGE_BACKENDS and params.get("init_strength", ctx.config.sdxl.init_strength) is not None
    if not (adapter or as_init):
        return None, None, None, None, None
    digest = operator_file_sha256(source, ctx.config.limits.max_image_bytes)
    image, _facts = preprocess(source, enhance=ctx.config.enhance.model_copy(update={"min_side": 1}),
                               limits=ctx.config.limits, sha256=digest)
    path = work_dir / ("style.png" if adapter else "moodboard.png")
    write_png(path, image)
    if adapter:
        return None, None, path, digest, str(source)
    return path, str(source), None, None, None


def _moodboard_copy(source: Path, ctx: JobContext, work_dir: Path, name: str = "moodboard.png") -> Path:
    from astrowatch.pipeline.preprocess import preprocess
    from astrowatch.storage.images import write_png

    as_is = ctx.config.enhance.model_copy(update={"min_side": 1})  # decoded, oriented, sRGB; not enlarged
    image, _facts = preprocess(source, enhance=as_is, limits=ctx.config.limits, root=ctx.layout.root)
    path = work_dir / name
    write_png(path, image)
    return path


def run_enhance(job: Job, ctx: JobContext, source: Path, default_backend: str) -> Outcome:
    """``source`` lies in the shared tree (the user folder or the job's archive): it is opened
    through safefs and decoded in the sandboxed child, which refuses content other than the job's."""
    return enhance_image(source, ctx, job_id=job.id, user=job.user, params=job.params,
                         default_backend=default_backend, fallback_seed=int(job.source_sha256[:8], 16),
                         root=ctx.layout.root, source_sha256=job.source_sha256)


def enhance_image(source: Path, ctx: JobContext, *, job_id: str, user: str, params: dict[str, Any],
                  default_backend: str, fallback_seed: int, root: Path | None = None,
                  source_sha256: str | None = None) -> Outcome:
    """Preprocess, look up the cache, enhance: the daemon's and ``astrowatch enhance``'s path.
    ``root``/``source_sha256``: see :func:`astrowatch.pipeline.preprocess.preprocess`."""
    from astrowatch.pipeline.captions import caption_result
    from astrowatch.pipeline.preprocess import bounded_scale, preprocess

    cfg = ctx.config
    image, facts = preprocess(source, enhance=cfg.enhance, limits=cfg.limits, root=root, sha256=source_sha256)
    name = backend_for(params, default_backend)
    backend = ctx.get_backend("enhance", name)
    for_backend = task_params(params)
    requested = for_backend.get("scale_factor", cfg.enhance.scale_factor)
    factor, facts["scale"] = bounded_scale(image.size, requested, cfg.enhance.max_output_side)
    if factor != requested:
        for_backend["scale_factor"] = factor  # every backend reads its factor from the task's params
    seed = int(params.get("seed", fallback_seed))
    key = cache_key(image, name, backend, cfg, for_backend)
    cached = cache_load(ctx.layout, key, max_bytes=cfg.limits.max_image_bytes)
    task_params_now = dict(for_backend)
    if name == "sdapi" and effective_settings(cfg, name, params).captioner != "sdapi":
        task_params_now["caption_model"] = "none"  # another captioner writes line 1: no WebUI interrogate
    task = EnhanceTask(job_id=job_id, user=user, image=image, source_name=source.name,
                       params=task_params_now, seed=seed, facts=facts, cancel=ctx.cancel,
                       progress=ctx.progress, source=source,
                       caption_params={k: v for k, v in params.items() if k in CAPTION_KEYS})
    if cached is not None:
        result, cache = cached, "hit"
        if cfg.executor == "celery":  # the caption models are on the workers: one captions it there
            from astrowatch.backends.remote.client import RemoteBackend

            if isinstance(backend, RemoteBackend):
                result.captions = backend.captions(task)
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


def cache_load(layout: Layout, key: str, *, max_bytes: int | None = None) -> Result | None:
    """A cached result, or None (a miss) when either file is missing, refused (a link, not a plain
    file, over ``max_bytes`` -- default: the photo bound -- or the sidecar over 1 MB) or broken.
    Both are read from descriptors opened without following links."""
    from PIL import Image

    from astrowatch.core.config import input_bound
    from astrowatch.storage import safefs
    from astrowatch.storage.images import ENCODED_ATTR, png_pixels_only

    png, meta = _cache_paths(layout, key)
    try:
        raw = safefs.read_bytes(meta, root=layout.root, max_bytes=safefs.SIDECAR_MAX_BYTES, what="cache entry")
        data = safefs.loads_bounded(raw.data.decode("utf-8"))
        pixels = png_pixels_only(safefs.read_bytes(png, root=layout.root, what="cached image",
                                                   max_bytes=max_bytes or input_bound("enhance")).data)
        with Image.open(io.BytesIO(pixels)) as img:
            img.load()
            image = img.copy()
        setattr(image, ENCODED_ATTR, pixels)  # published as these bytes plus the job's own chunks
    except (safefs.Unreadable, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict) or "backend" not in data:
        return None
    try:  # recently used: retention.cache_max_mb removes the least recently used first
        with safefs.open_dir(meta.parent, layout.root) as dfd:
            os.utime(meta.name, dir_fd=dfd, follow_symlinks=False)
    except (safefs.Unreadable, OSError):
        pass
    extra = data.get("extra")
    return Result(image=image, backend=data["backend"], model=data.get("model"), params=data["params"],
                  seed=data.get("seed"), description=data.get("description", ""),
                  infotext=data.get("infotext"), extra={**(extra if isinstance(extra, dict) else {}), "cache": "hit"})


def cache_store(layout: Layout, key: str, result: Result) -> None:
    """The result's pixels as PNG (:func:`~astrowatch.storage.images.pixel_png`: encoded once, the
    same bytes the inbox result is made of, without any job's chunks -- who asked, the job id,
    the infotext) and a sidecar with what a hit needs to describe itself (no user, no job)."""
    from astrowatch.storage import safefs
    from astrowatch.storage.images import pixel_png

    png, meta = _cache_paths(layout, key)
    safefs.write_bytes(png, pixel_png(result.image), root=layout.root)
    safefs.write_text(meta, json.dumps({
        "backend": result.backend, "model": result.model, "params": result.params, "seed": result.seed,
        "description": result.description, "infotext": result.infotext, "extra": result.extra,
    }, default=str), root=layout.root)
