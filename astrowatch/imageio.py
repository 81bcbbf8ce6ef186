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
from typing import Any

from .errors import InputError

# Magic bytes -> format name.  Extension alone is never trusted.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
EXT_FORMAT = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp", ".bmp": "bmp",
              ".tif": "tiff", ".tiff": "tiff"}
PNG_META_KEY = "astrowatch"  # our own tEXt chunk: JSON with the job id


def sniff(head: bytes) -> str | None:
    """Return the image format from the first bytes of a file, or None."""
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def sniff_file(path: Path) -> str | None:
    with open(path, "rb") as fh:
        return sniff(fh.read(16))


def open_image(path: Path, *, max_pixels: int, max_bytes: int | None = None):
    """Decode an image fully, refusing what is not safe to process.

    Raises :class:`InputError` (never retried) naming the file and the reason: empty file,
    unknown format, extension that lies about the content, truncated data, or more pixels
    than ``max_pixels`` (decompression bombs are checked from the header, before decoding).
    """
    from PIL import Image

    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path.name}: empty file (0 bytes)")
    if max_bytes is not None and size > max_bytes:
        raise InputError(f"{path.name}: {size} bytes is over limits.max_image_bytes={max_bytes}")
    data = path.read_bytes()
    fmt = sniff(data[:16])
    if fmt is None:
        raise InputError(f"{path.name}: not an image (unknown content; accepted: jpg, png, webp, bmp, tiff)")
    ext_fmt = EXT_FORMAT.get(path.suffix.lower())
    if ext_fmt is not None and ext_fmt != fmt:
        raise InputError(f"{path.name}: the extension says {ext_fmt} but the content is {fmt}; rename the file")
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
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path.name}: cannot decode image ({exc})") from None
    return img


def png_bytes(image, *, infotext: str | None = None, meta: dict[str, Any] | None = None) -> bytes:
    """Encode ``image`` as PNG with the A1111 ``parameters`` text and our JSON chunk.  An image that
    arrived already encoded (``encoded_png``: a remote worker's result) keeps its bytes: the text
    chunks are inserted, nothing is decoded or compressed again."""
    from PIL import PngImagePlugin

    encoded = getattr(image, "encoded_png", None)
    if encoded is not None:
        texts = {"parameters": infotext} if infotext else {}
        if meta:
            texts[PNG_META_KEY] = json.dumps(meta, sort_keys=True, ensure_ascii=False)
        return png_with_text(encoded, texts)

    info = PngImagePlugin.PngInfo()
    if infotext:
        info.add_text("parameters", infotext)
    if meta:
        info.add_text(PNG_META_KEY, json.dumps(meta, sort_keys=True, ensure_ascii=False))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


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
    """Write ``data`` to ``path`` so readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    """Sidecars and error records: indented UTF-8 JSON, one trailing newline, written atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_text_or_none(path: Path) -> str | None:
    """A UTF-8 text file the reviewer may have moved, edited or broken: None if unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def read_json_or_none(path: Path) -> Any:
    """The same for a JSON file: None if missing, unreadable or not JSON."""
    text = read_text_or_none(path)
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def write_png(path: Path, image, *, infotext: str | None = None, meta: dict[str, Any] | None = None) -> None:
    atomic_write_bytes(path, png_bytes(image, infotext=infotext, meta=meta))


def read_png_meta(path: Path) -> dict[str, Any] | None:
    """Our JSON chunk from a PNG (job id...), or None if absent or not a PNG."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            raw = img.text.get(PNG_META_KEY) if hasattr(img, "text") else None
    except (OSError, SyntaxError, ValueError):
        return None
    if not raw:
        return None
    try:
        meta = json.loads(raw)
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
