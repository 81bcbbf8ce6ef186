"""Per-image helpers for the SDXL backend: parameters, cancel, VAE decode checks.

Prompt embeddings are in :mod:`astrowatch.backends.sdxl.prompt`.  Pipelines are always called with
``output_type="latent"`` and the latents decoded here, so an all-black / NaN decode can be detected
and retried with the VAE in float32 without re-running the UNet.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog
import torch
from pydantic import ValidationError

from astrowatch.backends.base import CancelToken, Progress
from astrowatch.core.config import SdxlConfig
from astrowatch.core.errors import BackendError, InputError, Interrupted

log = structlog.get_logger("astrowatch.backends.sdxl")

# per-job overrides accepted in task.params (same names and validation as the sdxl section)
RUN_KEYS = ("steps", "cfg_scale", "width", "height", "scheduler", "refiner_switch", "upscale")
# sdxl.scheduler -> (A1111 "Sampler", A1111 "Schedule type")
A1111_SAMPLERS: dict[str, tuple[str, str | None]] = {
    "dpmpp_2m_karras": ("DPM++ 2M", "Karras"),
    "dpmpp_2m_sde_karras": ("DPM++ 2M SDE", "Karras"),
    "euler_a": ("Euler a", None),
    "euler": ("Euler", None),
    "ddim": ("DDIM", None),
}


@dataclass(frozen=True)
class RunParams:
    steps: int
    cfg_scale: float
    width: int
    height: int
    scheduler: str
    refiner_switch: float
    upscale: bool
    upscale_strength: float
    init_strength: float | None = None


def _normalise_upscale(value: Any) -> Any:
    if value in (2, 2.0, "2", "x2", True):
        return "2"
    if value in (None, False, 0, 1, "1", "none", ""):
        return "none"
    return value


def merge_params(sdxl: SdxlConfig, params: dict[str, Any]) -> RunParams:
    """The sdxl section with the job's overrides, validated like the config (InputError if bad)."""
    overrides = {k: params[k] for k in RUN_KEYS if params.get(k) is not None}
    if "upscale" in overrides:
        overrides["upscale"] = _normalise_upscale(overrides["upscale"])
    try:
        merged = SdxlConfig.model_validate({**sdxl.model_dump(), **overrides})
    except ValidationError as err:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise InputError(f"job parameters: {bad}") from None
    init_strength = _fraction(params.get("init_strength", sdxl.init_strength), "init_strength")
    upscale_strength = _fraction(params.get("upscale_strength"), "upscale_strength")
    return RunParams(
        steps=merged.steps, cfg_scale=merged.cfg_scale, width=merged.width, height=merged.height,
        scheduler=merged.scheduler, refiner_switch=merged.refiner_switch, upscale=merged.upscale == "2",
        upscale_strength=upscale_strength if upscale_strength is not None else merged.enhance_strength,
        init_strength=init_strength,
    )


def _fraction(value: Any, key: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"job parameters: {key}: {value!r} is not a number") from None
    if not 0.0 < number <= 1.0:
        raise InputError(f"job parameters: {key}: {number} is not in (0, 1]")
    return number


def round8(value: float, minimum: int = 64) -> int:
    """Nearest multiple of 8 (the VAE's scale factor), at least ``minimum``."""
    return max(minimum, int(round(value / 8.0)) * 8)


# -- cancel and step counting --------------------------------------------------------------------
@dataclass
class StepMonitor:
    """``callback_on_step_end``: counts steps and stops the pipeline between steps on interrupt."""

    cancel: CancelToken
    progress: Progress | None = None  # reported after every step: done / this pass's total
    steps: int = 0
    interrupted: bool = False
    _pass_start: int = 0

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        if step == 0:  # a new pass (base, refiner, upscale): its steps add to those done
            self._pass_start = self.steps
        self.steps += 1
        if self.progress is not None:
            in_pass = getattr(pipe, "num_timesteps", None)
            total = self._pass_start + in_pass if isinstance(in_pass, int) and in_pass > 0 else None
            self.progress.report(self.steps, max(total, self.steps) if total else None)
        if self.cancel.interrupted:
            self.interrupted = True
            pipe._interrupt = True  # the pipeline skips the remaining steps
        return callback_kwargs

    def check(self) -> None:
        """Raise Interrupted after a pipeline call that was told to stop (its output is unfinished)."""
        if self.interrupted:
            raise Interrupted(f"interrupted after {self.steps} step(s); the job resumes at the next start")


@dataclass
class Timings:
    values: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def measure(self, key: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.values[key] = round(self.values.get(key, 0.0) + time.perf_counter() - start, 4)


# -- VAE ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def vae_tiling(vae: Any, enabled: bool = True) -> Iterator[None]:
    """Tiled VAE encode/decode for the duration (diffusers >= 0.40: on the VAE, not the pipe)."""
    previous = bool(getattr(vae, "use_tiling", False))
    if enabled and not previous:
        vae.enable_tiling()
    try:
        yield
    finally:
        if enabled and not previous:
            vae.disable_tiling()


@contextlib.contextmanager
def vae_float32(vae: Any) -> Iterator[None]:
    previous = vae.dtype
    vae.to(dtype=torch.float32)
    try:
        yield
    finally:
        vae.to(dtype=previous)


def decode_latents(pipe: Any, latents: torch.Tensor) -> np.ndarray:
    """Latents -> float HWC array in [0, 1] (NaN kept, so a failed decode is visible)."""
    vae = pipe.vae
    latents = latents.to(dtype=vae.dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean_t = torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std_t = torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
        latents = latents * std_t / vae.config.scaling_factor + mean_t
    else:
        latents = latents / vae.config.scaling_factor
    with torch.no_grad():
        image = vae.decode(latents, return_dict=False)[0]
    pixels: np.ndarray = pipe.image_processor.postprocess(image, output_type="np")
    return pixels


def failed_decode(array: np.ndarray) -> str | None:
    """Why a decoded image is unusable (NaN values, all black), or None if it is fine."""
    if np.isnan(array).any():
        return f"{int(np.isnan(array).sum())} NaN values in the decoded image"
    if float(np.nanmax(array)) < 0.5 / 255:
        return "every pixel is black"
    return None


def decode_checked(pipe: Any, latents: torch.Tensor) -> tuple[Any, bool]:
    """Decode; on NaN / all-black retry once with the VAE in float32. Returns (PIL image, retried)."""
    array = decode_latents(pipe, latents)
    reason = failed_decode(array)
    if reason is None:
        return pipe.numpy_to_pil(array)[0], False
    log.warning("sdxl_black_image_retry", reason=reason, vae_dtype=str(pipe.vae.dtype))
    with vae_float32(pipe.vae):
        array = decode_latents(pipe, latents.float())
    second = failed_decode(array)
    if second is not None:
        raise BackendError(
            f"black image: {second} (also after retrying the VAE decode in float32)",
            hint="use sdxl.dtype: bfloat16 or float32, or the fp16-fix VAE (sdxl.vae)",
        )
    return pipe.numpy_to_pil(array)[0], True


# -- infotext and memory advice ------------------------------------------------------------------
def infotext_fields(run: RunParams, seed: int, model: str, **extra: Any) -> dict[str, Any]:
    sampler, schedule = A1111_SAMPLERS[run.scheduler]
    fields: dict[str, Any] = {
        "Steps": run.steps, "Sampler": sampler, "Schedule type": schedule, "CFG scale": run.cfg_scale,
        "Seed": seed, "Size": f"{run.width}x{run.height}", "Model": model,
    }
    fields.update({k: v for k, v in extra.items() if v is not None})
    return {k: v for k, v in fields.items() if v is not None}


def oom_advice(width: int, height: int, *, upscale: bool, cpu_offload: bool) -> str:
    """Settings that need about half the activation memory of ``width`` x ``height``."""
    w, h = round8(width / math.sqrt(2)), round8(height / math.sqrt(2))
    tips = [f"sdxl.width: {w}", f"sdxl.height: {h}"]
    if upscale:
        tips.append("sdxl.upscale: none")
    if not cpu_offload:
        tips.append("sdxl.cpu_offload: true")
    return "try " + ", ".join(tips)
