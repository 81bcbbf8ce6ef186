"""Preprocessing of a dropped photo before any enhancement backend sees it.

Decode under limits (:func:`astrowatch.storage.images.open_image`: first frame of an animation, the
primary image of a multi-image HEIF), apply the EXIF orientation, convert an embedded ICC profile
to sRGB, convert to 8-bit RGB (alpha flattened onto ``enhance.background``; 10/12-bit HEIF/AVIF
arrive already reduced to 8 bits by the decoder: clamped, not tone-mapped), enlarge small images
so the shortest side reaches ``enhance.min_side``, detect grayscale, and report the facts.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageColor, ImageOps

from astrowatch.backends.describe import is_grayscale
from astrowatch.core.errors import ConfigError, InputError
from astrowatch.storage.images import open_image

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import EnhanceConfig, LimitsConfig

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})

TAG_ORIENTATION, TAG_MAKE, TAG_MODEL, TAG_DATETIME = 0x0112, 0x010F, 0x0110, 0x0132
TAG_EXIF_IFD, TAG_DATETIME_ORIGINAL = 0x8769, 0x9003


def preprocess(
    path: Path, *, enhance: EnhanceConfig, limits: LimitsConfig
) -> tuple[Image.Image, dict[str, Any]]:
    """Return the RGB image ready for a backend, and the facts about it (see module doc)."""
    max_pixels = min(limits.max_image_pixels, enhance.max_pixels)
    img = open_image(path, max_pixels=max_pixels, max_bytes=limits.max_image_bytes)
    source_size, mode, fmt = list(img.size), img.mode, (img.format or "").upper() or None
    img_frames, bit_depth, transfer = getattr(img, "n_frames", 1), img.info.get("bit_depth"), img.info.get("transfer")
    exif = exif_facts(img)
    try:
        img = ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise InputError(f"{path.name}: cannot apply the EXIF orientation ({exc})") from None
    img, icc = to_srgb(img, path.name)
    alpha = has_alpha(img)
    rgb = to_rgb(img, background(enhance.background))
    grayscale = mode in GRAY_MODES or is_grayscale(rgb)
    enlarged_from = None
    if min(rgb.size) < enhance.min_side:
        enlarged_from = list(rgb.size)
        rgb = enlarge(rgb, enhance.min_side, max_pixels, path.name)
    facts = {
        "source_size": source_size, "size": list(rgb.size), "mode": mode, "format": fmt,
        "grayscale": grayscale, "enlarged_from": enlarged_from, "exif": exif, "alpha_flattened": alpha,
        **source_kind(img_frames, fmt, bit_depth, transfer), "icc": icc,
    }
    return rgb, facts


def source_kind(frames: int, fmt: str | None, bit_depth: int | None, transfer: str | None) -> dict[str, Any]:
    """Animation / multi-image / HDR facts (empty for an ordinary 8-bit still)."""
    facts: dict[str, Any] = {}
    if frames > 1:
        facts["frames"] = frames
        facts["frame_used"] = "primary" if fmt == "HEIF" else "first"
    if bit_depth and bit_depth > 8:
        facts["bit_depth"] = bit_depth
        facts["hdr"] = {"transfer": transfer or "SDR", "to_8bit": "clamped",
                        "how": "the decoder scales the samples to 8 bits; no tone mapping"}
    return facts


def to_srgb(img: Image.Image, name: str) -> tuple[Image.Image, dict[str, Any] | None]:
    """Convert an embedded ICC profile (Display P3, Adobe RGB, CMYK...) to sRGB; facts or None."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img, None
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = (ImageCms.getProfileDescription(source) or "").strip() or "unnamed"
    except (OSError, ImageCms.PyCMSError, ValueError, TypeError):
        return img, {"profile": None, "converted": False, "note": "unreadable ICC profile: assumed sRGB"}
    if "srgb" in desc.lower().replace(" ", ""):
        return img, {"profile": desc, "converted": False}
    mode = "RGBA" if img.mode == "RGBA" else "RGB"
    try:
        out = ImageCms.profileToProfile(img, source, _srgb_profile(), outputMode=mode,
                                        renderingIntent=ImageCms.Intent.PERCEPTUAL)
    except (OSError, ImageCms.PyCMSError, ValueError) as exc:
        raise InputError(f"{name}: cannot apply its ICC colour profile {desc!r} ({exc})") from None
    assert out is not None  # None only for a conversion in place (inPlace=True), not asked for here
    return out, {"profile": desc, "converted": True}


@functools.cache
def _srgb_profile() -> Any:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def background(spec: str) -> tuple[int, int, int]:
    try:
        rgb = ImageColor.getrgb(spec)
    except ValueError:
        raise ConfigError(
            f"enhance.background: {spec!r} is not a colour (e.g. '#ffffff' or 'white')"
        ) from None
    return rgb[0], rgb[1], rgb[2]


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ALPHA_MODES or (img.mode in ("P", "L", "RGB") and "transparency" in img.info)


def to_rgb(img: Image.Image, bg: tuple[int, int, int]) -> Image.Image:
    """RGB with any transparency composited onto ``bg``; 16/32-bit and float gray scaled to 8 bits."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _wide_to_l(img)
    if has_alpha(img):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*bg, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img.copy()


def _wide_to_l(img: Image.Image) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64)
    top = float(arr.max()) if arr.size else 0.0
    if img.mode == "F" and top <= 1.0:
        scale = 255.0
    elif top <= 255:
        scale = 1.0
    else:
        scale = 255.0 / (65535.0 if top <= 65535 else top)
    return Image.fromarray(np.clip(np.round(arr * scale), 0, 255).astype(np.uint8))


def enlarge(img: Image.Image, min_side: int, max_pixels: int, name: str) -> Image.Image:
    """Lanczos-enlarge so the shortest side is at least ``min_side`` (aspect ratio kept)."""
    w, h = img.size
    factor = min_side / min(w, h)
    size = (max(min_side, round(w * factor)), max(min_side, round(h * factor)))
    if size[0] * size[1] > max_pixels:
        raise InputError(
            f"{name}: {w}x{h} enlarged to a {min_side}px shortest side would be {size[0]}x{size[1]}, "
            f"over {max_pixels} pixels (too thin)"
        )
    return img.resize(size, Image.Resampling.LANCZOS)


def exif_facts(img: Image.Image) -> dict[str, Any]:
    """Camera ("Make Model"), date ("YYYY-MM-DD HH:MM:SS") and orientation from EXIF, or None each."""
    try:
        exif = img.getexif()
        sub = exif.get_ifd(TAG_EXIF_IFD)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        return {"camera": None, "date": None, "orientation": None}
    orientation = exif.get(TAG_ORIENTATION)
    return {
        "camera": _camera(_text(exif.get(TAG_MAKE)), _text(exif.get(TAG_MODEL))),
        "date": _date(_text(sub.get(TAG_DATETIME_ORIGINAL)) or _text(exif.get(TAG_DATETIME))),
        "orientation": orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else None,
    }


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = "".join(ch for ch in value if ch.isprintable()).strip()
    return text[:100] or None


def _camera(make: str | None, model: str | None) -> str | None:
    if make and model and model.lower().startswith(make.lower().split()[0]):
        return model  # "Canon" + "Canon EOS 5D" -> "Canon EOS 5D"
    return " ".join(p for p in (make, model) if p) or None


def _date(raw: str | None) -> str | None:
    """EXIF "2021:07:14 18:03:00" -> "2021-07-14 18:03:00"; None if not that shape."""
    if not raw or len(raw) < 19:
        return None
    date, _, clock = raw[:19].partition(" ")
    parts = date.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or len(clock) != 8:
        return None
    if parts == ["0000", "00", "00"]:
        return None
    return f"{parts[0]}-{parts[1]}-{parts[2]} {clock}"


def bounded_scale(size: tuple[int, int], requested: Any, max_side: int) -> tuple[Any, dict[str, Any]]:
    """The scale factor to use so the result's long side stays within ``max_side`` (0: no limit).

    Returns (factor, facts).  A photo whose long side is already ``max_side`` or more gets 1.0:
    not enlarged, still cleaned, oriented, colour-managed and re-encoded.  A factor that is not
    a number is passed through untouched: the backend refuses it with its own message.
    """
    try:
        wanted = float(requested)
    except (TypeError, ValueError):
        return requested, {}
    long_side = max(size)
    if max_side <= 0 or wanted <= 1.0 or round(long_side * wanted) <= max_side:
        return requested, {"requested": wanted, "used": wanted, "reason": "as requested"}
    used = max(1.0, max_side / long_side)
    if used == 1.0:
        reason = f"not enlarged: the long side ({long_side} px) is already at or above max_output_side={max_side}"
    else:
        reason = f"lowered from ×{wanted:g} so the long side stays within max_output_side={max_side}"
    return used, {"requested": wanted, "used": used, "reason": reason, "max_output_side": max_side}
