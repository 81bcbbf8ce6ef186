"""Image files: sniffing by content, safe decoding under limits, atomic PNG writes.

Every image the daemon reads goes through :func:`open_image`; every image it writes goes
through :func:`write_png` (temp file in the destination folder, fsync, ``os.replace``) so no
reader (reviewer, upstream app) ever sees a half-written file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from astrowatch.core.errors import InputError
from astrowatch.core.formats import EXT_FORMAT, HEAD_BYTES, accepted_text, label, sniff, unusable_reason
from astrowatch.storage.files import write_new_file

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

PNG_META_KEY = "astrowatch"  # our own tEXt chunk: JSON with the job id
RESULT_SUFFIX = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}  # enhance.format -> file suffix
HDR_TRANSFER = {16: "PQ", 18: "HLG"}  # ITU-T H.273 transfer_characteristics
JPEG_QUALITY = 95
_heif_registered = False


def register_heif() -> bool:
    """Teach Pillow HEIC/HEIF, once, at the first HEIF decode (pillow-heif takes ~30 ms to import)."""
    global _heif_registered
    if not _heif_registered:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            return False
        register_heif_opener()
        _heif_registered = True
    return True


def open_image(path: Path, *, max_pixels: int, max_bytes: int | None = None) -> Image.Image:
    """Decode an image fully (first frame; HEIF: the primary image), refusing what is not safe.

    Raises :class:`InputError` (never retried) naming the file and the reason: empty file,
    unknown or unusable format, extension that lies about the content, truncated data, or more
    pixels than ``max_pixels`` (decompression bombs are checked from the header, before decoding).
    ``img.info["bit_depth"]`` is set for HEIF/AVIF sources (10/12 = HDR or wide gamut).
    """
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path.name}: empty file (0 bytes)")
    if max_bytes is not None and size > max_bytes:
        raise InputError(f"{path.name}: {size} bytes is over limits.max_image_bytes={max_bytes}")
    return decode_image_bytes(path.read_bytes(), path.name, max_pixels=max_pixels)


def decode_image_bytes(data: bytes, name: str, *, max_pixels: int) -> Image.Image:
    """:func:`open_image` on bytes already read (and hashed) from one descriptor; ``name`` is the
    file's name, for its extension and for the messages."""
    from PIL import Image, UnidentifiedImageError

    path = Path(name)
    if not data:
        raise InputError(f"{path.name}: empty file (0 bytes)")
    fmt = _checked_format(path, data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise InputError(
                    f"{path.name}: {w}x{h} = {w * h} pixels is over limits.max_image_pixels={max_pixels}"
                )
            img.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{path.name}: refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, RuntimeError, EOFError) as exc:
        damaged = " (truncated or damaged; copy or export it again)" if fmt in ("heif", "avif") else ""
        detail = "the decoder does not recognise it" if isinstance(exc, UnidentifiedImageError) else exc
        raise InputError(f"{path.name}: cannot decode the {label(fmt)} image{damaged}: {detail}") from None
    if fmt in ("heif", "avif"):
        nclx = img.info.get("nclx_profile") or {}
        img.info.setdefault("bit_depth", isobmff_bit_depth(data))
        code = nclx.get("transfer_characteristics")
        img.info["transfer"] = (HDR_TRANSFER.get(code) if isinstance(code, int) else None) or isobmff_transfer(data)
    return img


def _checked_format(path: Path, data: bytes) -> str:
    """The sniffed format, if it is an accepted one that agrees with the extension (else InputError)."""
    fmt = sniff(data[:HEAD_BYTES])
    if fmt is None:
        raise InputError(f"{path.name}: not an image (unknown content; accepted: {accepted_text()})")
    if fmt not in EXT_FORMAT.values():
        why = unusable_reason(path.name, fmt) or f"{path.name}: the content is {label(fmt)}, which cannot be used"
        raise InputError(f"{why}; accepted: {accepted_text()}")
    ext_fmt = EXT_FORMAT.get(path.suffix.lower())
    if ext_fmt is not None and ext_fmt != fmt:
        raise InputError(f"{path.name}: the extension says {ext_fmt} but the content is {fmt}; rename the file")
    if fmt == "heif" and not register_heif():
        raise InputError(f"{path.name}: HEIC/HEIF support is not installed here (pip install pillow-heif), "
                         "or export the photo as JPEG")
    return fmt


def _box(data: bytes, name: bytes, limit: int = 1 << 16) -> bytes | None:
    """The payload of the first ISO-BMFF box called ``name`` in the file's head (meta is near the start)."""
    at = data.find(name, 0, limit)
    if at < 4:
        return None
    size = int.from_bytes(data[at - 4:at], "big")
    return data[at + 4:at - 4 + size] if 8 <= size <= 4096 else None


def isobmff_bit_depth(data: bytes) -> int | None:
    """Bits per channel from the ``pixi`` property of a HEIF/AVIF file (8, 10, 12), or None."""
    pixi = _box(data, b"pixi")
    if not pixi or len(pixi) < 6 or pixi[4] == 0:
        return None
    return max(pixi[5:5 + pixi[4]])


def isobmff_transfer(data: bytes) -> str | None:
    """'PQ' or 'HLG' when the ``colr``/``nclx`` box says the content is HDR, else None."""
    colr = _box(data, b"colr")
    if not colr or colr[:4] != b"nclx" or len(colr) < 8:
        return None
    return HDR_TRANSFER.get(int.from_bytes(colr[6:8], "big"))


def png_bytes(image: Image.Image, *, infotext: str | None = None, meta: dict[str, Any] | None = None,
              source_type: str | None = None) -> bytes:
    """``image`` as PNG with the A1111 ``parameters`` text and our JSON chunk (and, with
    ``source_type``, an XMP packet declaring the IPTC digital source type: see
    :mod:`astrowatch.storage.provenance`).

    The pixels are encoded once per image (:func:`pixel_png`, remembered on the image): the
    per-job text chunks are inserted into those bytes, nothing is decoded or compressed again --
    so the enhance cache and the inbox share one encode, and an image that arrived encoded (a
    remote worker's result, a cache hit) keeps its pixel bytes."""
    from astrowatch.storage.provenance import png_with_xmp, xmp_packet

    texts = {"parameters": infotext} if infotext else {}
    if meta:
        texts[PNG_META_KEY] = json.dumps(meta, sort_keys=True, ensure_ascii=False)
    out = png_with_text(pixel_png(image), texts) if texts else pixel_png(image)
    return png_with_xmp(out, xmp_packet(source_type=source_type)) if source_type else out


ENCODED_ATTR = "encoded_png"  # on a PIL image: its pixels already encoded as PNG (no per-job chunks)
PIXEL_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs",
                          b"IDAT", b"IEND"})


def pixel_png(image: Image.Image) -> bytes:
    """``image``'s pixels as PNG bytes without text, EXIF or XMP chunks: encoded on the first call
    (compression level 4) and remembered on the image, so every later call -- the cache entry,
    the inbox result -- writes the same bytes without encoding again.  The image must not be
    changed in place afterwards (results are not: a changed image is a new one)."""
    encoded = getattr(image, ENCODED_ATTR, None)
    if isinstance(encoded, bytes):
        return encoded
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=4)
    data = buf.getvalue()
    setattr(image, ENCODED_ATTR, data)
    return data


def png_pixels_only(png: bytes) -> bytes:
    """``png`` with only the chunks that describe pixels (:data:`PIXEL_CHUNKS`): text, EXIF, XMP
    and any other ancillary chunk dropped, nothing decompressed.  ValueError when it is not a
    well-formed PNG (a chunk running past the end, no IEND)."""
    import struct

    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    at, keep, dropped = 8, [png[:8]], False
    while at + 12 <= len(png):
        size = struct.unpack(">I", png[at:at + 4])[0]
        kind = png[at + 4:at + 8]
        end = at + 12 + size
        if end > len(png):
            raise ValueError("truncated PNG chunk")
        if kind in PIXEL_CHUNKS:
            keep.append(png[at:end])
        else:
            dropped = True
        at = end
        if kind == b"IEND":
            return b"".join(keep) if dropped else png[:at]
    raise ValueError("PNG without IEND")


def png_with_text(png: bytes, texts: dict[str, str]) -> bytes:
    """``png`` with text chunks inserted after IHDR (tEXt when Latin-1, else UTF-8 iTXt, as Pillow)."""
    import struct
    import zlib

    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    chunks = []
    for key, value in texts.items():
        try:
            kind, data = b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")
        except UnicodeEncodeError:
            kind, data = b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")
        chunks.append(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))
    end_ihdr = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    return png[:end_ihdr] + b"".join(chunks) + png[end_ihdr:]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the whole new one.

    Only for paths outside the shared tree (the daemon's state file, ``--output`` of a command):
    this follows links in ``path``.  Everything under the data folder is written with
    :func:`astrowatch.storage.safefs.write_bytes` (and friends), relative to folder descriptors.

    The file gets ``0666 & ~umask`` like any ``open()`` (``mkstemp`` alone would leave ``0600``,
    which the service's group -- reviewers, the upstream app -- could not read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        write_new_file(fd, data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text (not for the shared tree: see there)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_png(path: Path, image: Image.Image, *, infotext: str | None = None, meta: dict[str, Any] | None = None) -> None:
    atomic_write_bytes(path, png_bytes(image, infotext=infotext, meta=meta))


def result_bytes(image: Image.Image, fmt: str, *, infotext: str | None = None, meta: dict[str, Any] | None = None,
                 source_type: str | None = None) -> bytes:
    """A result encoded as ``enhance.format``: png, webp (lossless) or jpeg (quality 95).

    WebP and JPEG carry the A1111 infotext in EXIF UserComment (where the WebUI writes it) and
    our JSON as an XMP property (WebP) or the JPEG comment, so a renamed result is still ours.
    ``source_type`` (an IPTC digital source type URI) goes into the XMP of every format.
    """
    if fmt == "png":
        return png_bytes(image, infotext=infotext, meta=meta, source_type=source_type)
    from PIL import Image

    from astrowatch.storage.provenance import xmp_packet

    exif = Image.Exif()
    if infotext:
        exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + infotext.encode("utf-16-be")  # UserComment
    text = json.dumps(meta or {}, sort_keys=True, ensure_ascii=False)
    buf = io.BytesIO()
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if fmt == "webp":
        xmp = xmp_packet(source_type=source_type, meta_text=text if meta else None) if meta or source_type else b""
        rgb.save(buf, format="WEBP", lossless=True, quality=20, method=1, exif=exif.tobytes(),  # fast effort
                 xmp=xmp)
    elif fmt == "jpeg":
        rgb.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=True, exif=exif.tobytes(),
                 comment=f"{PNG_META_KEY}:{text}".encode() if meta else b"",
                 xmp=xmp_packet(source_type=source_type) if source_type else b"")
    else:
        raise ValueError(f"unknown result format {fmt!r}")
    return buf.getvalue()


def _meta_text(img: Image.Image) -> str | None:
    if img.format == "PNG":  # our chunk comes before the pixels: read at open, nothing decoded
        text = img.info.get(PNG_META_KEY)
        return text if isinstance(text, str) else None
    comment = img.info.get("comment") or b""
    if isinstance(comment, bytes) and comment.startswith(PNG_META_KEY.encode() + b":"):
        return comment[len(PNG_META_KEY) + 1:].decode("utf-8", "replace")
    xmp = img.info.get("xmp") or b""
    if isinstance(xmp, bytes) and b"astrowatch:meta=" in xmp:
        import re
        from xml.sax.saxutils import unescape

        m = re.search(rb'astrowatch:meta="([^"]*)"', xmp)
        return unescape(m.group(1).decode("utf-8", "replace"), {"&quot;": '"'}) if m else None
    return None


def read_png_meta(source: Path | bytes | IO[bytes]) -> dict[str, Any] | None:
    """Our JSON (job id...) from a result image (PNG chunk, JPEG comment, WebP XMP), or None.

    ``source`` is a path (the daemon's own files), or the bytes / an open file object of a
    shared-tree file opened through :mod:`astrowatch.storage.safefs`: a file a reviewer moved is
    never opened here by name.  A decompression bomb or a broken file is ``None``."""
    from PIL import Image

    from astrowatch.storage.safefs import loads_bounded

    fp: Path | IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(fp) as img:
            raw = _meta_text(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    if not raw:
        return None
    try:
        meta = loads_bounded(raw)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def move_out(src: Path, dest: Path) -> None:
    """Move a file out of a watched folder as link + unlink, not rename.

    A rename out of a watched tree is an inotify ``IN_MOVED_FROM`` with no matching
    ``IN_MOVED_TO``; watchdog holds such events 0.5 s to pair them, and every event behind it
    waits too, so each move out used to delay ingest by half a second.  An unlink is reported at
    once.  Safe to repeat after a crash between the two steps (the link already exists).  Falls
    back to a rename where hard links are not supported, and for symlinks (moved, never followed).
    Not for the shared tree (``src``'s and ``dest``'s folders are reached through links):
    :func:`astrowatch.storage.safefs.move_out` is the same move relative to folder descriptors.
    """
    if src.is_symlink():
        os.replace(src, dest)
        return
    try:
        os.link(src, dest)
    except FileExistsError:
        if not os.path.samefile(src, dest):
            raise
    except OSError:  # no hard links here (some SMB/FAT mounts): a plain rename
        os.replace(src, dest)
        return
    os.unlink(src)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
