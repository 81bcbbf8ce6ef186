"""The image types astrowatch takes, and the ones it recognises but cannot use: ONE list.

Everything that needs "which photos are accepted" reads it from here: the ingest (what becomes a
job, what gets a ``failed/`` entry with the reason), :func:`astrowatch.storage.images.open_image` (content
sniffing), ``astrowatch doctor`` and the README's folder table (a test checks they agree).

A type is recognised by its content (magic bytes, ISO-BMFF ``ftyp`` brands), never by its name
alone; the extension must agree with the content.  Nothing here imports Pillow or pillow-heif.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageType:
    fmt: str  # the name :func:`sniff` returns
    label: str  # as people know it
    extensions: tuple[str, ...]  # lower case, with the dot; the first is the usual one
    note: str = ""  # what is special about it (README, doctor)


ACCEPTED: tuple[ImageType, ...] = (
    ImageType("jpeg", "JPEG", (".jpg", ".jpeg", ".jfif")),
    ImageType("png", "PNG", (".png",)),
    ImageType("webp", "WebP", (".webp",), "animated: first frame"),
    ImageType("heif", "HEIC/HEIF", (".heic", ".heif", ".hif"), "iPhone; several images: the primary one"),
    ImageType("avif", "AVIF", (".avif",), "animated: first frame"),
    ImageType("gif", "GIF", (".gif",), "first frame"),
    ImageType("bmp", "BMP", (".bmp",)),
    ImageType("tiff", "TIFF", (".tif", ".tiff")),
)

RAW_EXTENSIONS = (".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf",
                  ".rw2", ".rwl", ".pef", ".srw", ".x3f", ".3fr", ".erf", ".kdc", ".mrw", ".iiq", ".raw")
# Looks like an image by its name or content, cannot be used: (format, label, extensions, what to do)
REFUSED: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("raw", "camera RAW", RAW_EXTENSIONS, "export a JPEG or HEIC from the camera or photo app"),
    ("jxl", "JPEG XL", (".jxl",), "export it as JPEG, PNG or AVIF"),
    ("svg", "SVG (a vector drawing)", (".svg", ".svgz"), "export it as PNG"),
    ("psd", "Photoshop PSD", (".psd", ".psb"), "export it as PNG or JPEG"),
    ("jp2", "JPEG 2000", (".jp2", ".j2k", ".jpf", ".jpx"), "export it as PNG or JPEG"),
    ("exr", "OpenEXR", (".exr",), "export it as 16-bit TIFF or PNG"),
    ("ico", "icon", (".ico", ".icns"), "export it as PNG"),
    ("heics", "HEIF image sequence", (".heics", ".avifs"), "export one still as HEIC or JPEG"),
)

IMAGE_EXTENSIONS = frozenset(ext for t in ACCEPTED for ext in t.extensions)
EXT_FORMAT = {ext: t.fmt for t in ACCEPTED for ext in t.extensions}
REFUSED_EXT = {ext: (fmt, label, fix) for fmt, label, exts, fix in REFUSED for ext in exts}
REFUSED_FMT = {fmt: (label, fix) for fmt, label, _exts, fix in REFUSED}
LABELS = {t.fmt: t.label for t in ACCEPTED}
HEAD_BYTES = 64  # enough for every signature below, ftyp compatible brands included

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"BM", "bmp"),
    (b"\xff\x0a", "jxl"),  # bare JPEG XL codestream
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "jxl"),  # JPEG XL container
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jp2"),
    (b"8BPS", "psd"),
    (b"v/1\x01", "exr"),
    (b"FUJIFILMCCD-RAW", "raw"),
)
STRONG = frozenset({"png", "jpeg", "gif", "tiff", "webp", "heif", "avif", "jxl", "jp2", "psd", "exr", "raw",
                    "heics"})
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1",
                         b"mif2", b"MiHE"})
AVIF_BRANDS = frozenset({b"avif", b"avis"})
HEVC_BRANDS = HEIF_BRANDS - {b"mif1", b"mif2"}


def sniff(head: bytes) -> str | None:
    """The format from the first bytes of a file (at least :data:`HEAD_BYTES` for HEIF/AVIF)."""
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _ftyp(head)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in head.lower()):
        return "svg"
    return None


def _ftyp(head: bytes) -> str | None:
    size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    brands = [major] + [head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)]
    if major == b"crx ":
        return "raw"  # Canon CR3
    if major in AVIF_BRANDS:
        return "avif"
    if major in HEVC_BRANDS:
        return "heif"
    if AVIF_BRANDS & set(brands):
        return "avif"  # "mif1" major, "avif" compatible
    if major == b"msf1":
        return "heics"
    if HEIF_BRANDS & set(brands):
        return "heif"
    return None  # MP4, MOV, 3GP...: video, not an image


def label(fmt: str) -> str:
    return LABELS.get(fmt) or REFUSED_FMT.get(fmt, (fmt.upper(), ""))[0]


def accepted_text() -> str:
    """'JPEG (.jpg .jpeg .jfif), PNG (.png), ...' — for error records, logs and doctor."""
    return ", ".join(f"{t.label} ({' '.join(t.extensions)})" for t in ACCEPTED)


def accepted_short() -> str:
    """'jpg, jpeg, jfif, png, ...' — the README's folder table (checked by a test)."""
    return ", ".join(ext[1:] for t in ACCEPTED for ext in t.extensions)


def unusable_reason(name: str, fmt: str | None) -> str | None:
    """Why a file that looks like an image cannot be used, or None if it is not one of those.

    ``fmt`` is the sniffed content.  An accepted format under a name that is not an image
    extension (``photo.dat`` holding a JPEG) is refused too, with the name to give it.
    """
    ext = "." + name.rsplit(".", 1)[1].lower() if "." in name else ""
    if ext in REFUSED_EXT:
        _fmt, what, fix = REFUSED_EXT[ext]
        return f"{name}: {what} files cannot be used; {fix}"
    if fmt in REFUSED_FMT and fmt in STRONG:
        what, fix = REFUSED_FMT[fmt]
        return f"{name}: the content is {what}, which cannot be used; {fix}"
    if fmt in LABELS and fmt in STRONG:
        usual = next(t.extensions[0] for t in ACCEPTED if t.fmt == fmt)
        return f"{name}: the content is a {LABELS[fmt]} image but the name does not say so; rename it to *{usual}"
    return None


def heif_support() -> str | None:
    """The pillow-heif version, or None when HEIC/HEIF cannot be decoded here (no import)."""
    spec = importlib.util.find_spec("pillow_heif")
    if spec is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pillow-heif")
    except PackageNotFoundError:
        return "unknown version"


def avif_support() -> bool:
    from PIL import features

    return bool(features.check("avif"))
