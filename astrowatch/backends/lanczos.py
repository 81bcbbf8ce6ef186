"""The ``lanczos`` enhance backend: Pillow Lanczos upscale plus a mild unsharp mask, on the CPU.

The default when no WebUI and no model are available.  The output is exactly
``round(w * f) x round(h * f)`` for a scale factor ``f``; the description is technical.
"""

from __future__ import annotations

from typing import Any, ClassVar

from PIL import Image, ImageFilter

from astrowatch.backends.base import Backend, EnhanceTask, Result
from astrowatch.backends.describe import technical_description
from astrowatch.core.errors import InputError

UNSHARP_RADIUS = 1.2
UNSHARP_THRESHOLD = 3
MAX_SCALE = 8.0


class LanczosBackend(Backend):
    """Upscale with Pillow's Lanczos filter; no model, no GPU, no network."""

    name: ClassVar[str] = "lanczos"
    kinds: ClassVar[frozenset[str]] = frozenset({"enhance"})

    def settings_key(self) -> Any:
        e = self.config.enhance
        return {"scale_factor": e.scale_factor, "unsharp_percent": e.unsharp_percent}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "scale_factor": self.config.enhance.scale_factor}

    def enhance(self, task: EnhanceTask) -> Result:
        factor = _number(task.params, "scale_factor", self.config.enhance.scale_factor, 1.0, MAX_SCALE)
        percent = int(_number(task.params, "unsharp_percent", self.config.enhance.unsharp_percent, 0, 500))
        task.cancel.check()
        source = task.image if task.image.mode == "RGB" else task.image.convert("RGB")
        image = upscale(source, factor)
        task.cancel.check()
        if percent > 0:
            image = image.filter(ImageFilter.UnsharpMask(UNSHARP_RADIUS, percent, UNSHARP_THRESHOLD))
            task.cancel.check()
        facts = {**task.facts, "upscaled_from": list(source.size), "scale_factor": factor}
        description = technical_description(image, facts, self.config.astro.language)
        task.cancel.check()
        params = {
            "scale_factor": factor, "resample": "lanczos", "unsharp_percent": percent,
            "unsharp_radius": UNSHARP_RADIUS, "unsharp_threshold": UNSHARP_THRESHOLD,
        }
        return Result(image=image, backend=self.name, model=None, params=params, seed=task.seed,
                      description=description)


def output_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """``round(w * f) x round(h * f)``, never below one pixel."""
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def upscale(image: Image.Image, factor: float) -> Image.Image:
    size = output_size(image.size, factor)
    if size == image.size:
        return image.copy()
    return image.resize(size, Image.Resampling.LANCZOS)


def _number(params: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"params.{key}: {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"params.{key}: {value!r} is not a number") from None
    if not low <= number <= high:
        raise InputError(f"params.{key}: {number:g} is out of range ({low:g}..{high:g})")
    return number
