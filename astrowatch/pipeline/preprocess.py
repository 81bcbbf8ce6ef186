"""Preprocessing of a dropped photo before any enhancement backend sees it.

Decode under limits (:func:`astrowatch.storage.images.open_image`: first frame of an animation, the
primary image of a multi-image HEIF), apply the EXIF orientation, convert an embedded ICC profile
to sRGB, convert to 8-bit RGB (alpha flattened onto ``enhance.background``; 10/12-bit HEIF/AVIF
arrive already reduced to 8 bits by the decoder: clamped, not tone-mapped), enlarge small images
so the shortest side reaches ``enhance.min_side``, detect grayscale, and report the facts.

The photo is untrusted: :func:`preprocess` opens it (through :mod:`astrowatch.storage.safefs` when
it lies in the data folder) and hands the descriptor to a child process
(:mod:`astrowatch.pipeline.decoder`, run by :mod:`astrowatch.storage.sandbox`) that hashes, decodes
and converts it under ``limits.decode_memory_mb`` and ``limits.decode_timeout_seconds``; the RGB
pixels and the facts come back.  A decoder crash, a memory bomb or a hang fails that photo only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageColor, ImageOps

from astrowatch.backends.describe import is_grayscale
from astrowatch.core.errors import ConfigError, InputError
from astrowatch.storage.images import decode_image_bytes

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import EnhanceConfig, LimitsConfig

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})

TAG_ORIENTATION, TAG_MAKE, TAG_MODEL, TAG_DATETIME = 0x0112, 0x010F, 0x0110, 0x0132
TAG_EXIF_IFD, TAG_DATETIME_ORIGINAL = 0x8769, 0x9003


DECODER_MODULE = "astrowatch.pipeline.decoder"


def preprocess(
    path: Path, *, enhance: EnhanceConfig, limits: LimitsConfig, root: Path | None = None,
    sha256: str | None = None,
) -> tuple[Image.Image, dict[str, Any]]:
    """Return the RGB image ready for a backend, and the facts about it (see module doc).

    ``root``: the data folder when ``path`` lies in the shared tree (opened without following links,
    a plain single-link file only); ``sha256``: the content the job was made for (a file changed
    since is refused).  Decoding runs in a child process under the ``limits.decode_*`` limits."""
    from astrowatch.storage import sandbox  # here: the decoder child imports this module, not these

    bg = background(enhance.background)  # a config error is the operator's, raised here
    request = {"max_pixels": min(limits.max_image_pixels, enhance.max_pixels), "min_side": enhance.min_side,
               "background": list(bg)}
    with _source_fd(path, root, limits.max_image_bytes) as fd:
        header, pixels = sandbox.run_child(
            DECODER_MODULE, request, fd=fd, name=path.name, memory_mb=limits.decode_memory_mb,
            timeout_s=limits.decode_timeout_seconds, max_bytes=limits.max_image_bytes, sha256=sha256)
    w, h = header["size"]
    return Image.frombytes("RGB", (w, h), pixels), header["facts"]


def operator_file_sha256(path: Path, max_bytes: int) -> str:
    """The sha256 of a file the operator names on the command line (a regular file within
    ``max_bytes``, opened without blocking): pass it to :func:`preprocess` so that the content
    decoded is the content hashed."""
    h = hashlib.sha256()
    with _source_fd(path, None, max_bytes) as fd:
        while block := os.read(fd, 1 << 20):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _source_fd(path: Path, root: Path | None, max_bytes: int) -> Iterator[int]:
    """An open descriptor on the photo: through safefs under ``root``; else (a file the operator
    names on the command line, a remote worker's own copy) opened without blocking, and only a
    regular file within ``max_bytes``."""
    if root is not None:
        from astrowatch.storage import safefs

        with safefs.open_file(path, root=root, max_bytes=max_bytes, what="photo (limits.max_image_bytes)") as (fh, _st):
            yield fh.fileno()
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{path.name}: the file is missing ({path})") from None
    except OSError as exc:
        raise InputError(f"{path.name}: cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path.name}: is not a regular file")
        if st.st_size > max_bytes:
            raise InputError(f"{path.name}: {st.st_size} bytes is over limits.max_image_bytes={max_bytes}")
        yield fd
    finally:
        os.close(fd)


def preprocess_bytes(data: bytes, name: str, *, max_pixels: int, min_side: int,
                     bg: tuple[int, int, int]) -> tuple[Image.Image, dict[str, Any]]:
    """The work itself, on bytes already read and hashed (runs in the decoder child)."""
    path = Path(name)
    img = decode_image_bytes(data, name, max_pixels=max_pixels)
    source_size, mode, fmt = list(img.size), img.mode, (img.format or "").upper() or None
    img_frames, bit_depth, transfer = getattr(img, "n_frames", 1), img.info.get("bit_depth"), img.info.get("transfer")
    exif = exif_facts(img)
    try:
        img = ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise InputError(f"{path.name}: cannot apply the EXIF orientation ({exc})") from None
    img, icc = to_srgb(img, path.name)
    alpha = has_alpha(img)
    rgb = to_rgb(img, bg)
    grayscale = mode in GRAY_MODES or is_grayscale(rgb)
    enlarged_from = None
    if min(rgb.size) < min_side:
        enlarged_from = list(rgb.size)
        rgb = enlarge(rgb, min_side, max_pixels, path.name)
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
