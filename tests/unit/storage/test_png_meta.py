"""Our metadata read from a result's bytes or open file (what the reviewer opens through safefs):
a decompression bomb or a huge image is read without decoding it."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from astrowatch.storage.images import png_bytes, read_png_meta


def _claiming(width: int, height: int, png: bytes) -> bytes:
    """``png`` with an IHDR that claims ``width`` x ``height`` (CRC fixed)."""
    ihdr = png[12:16] + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def test_meta_is_read_from_bytes_and_from_an_open_file() -> None:
    data = png_bytes(Image.new("RGB", (4, 4)), meta={"job_id": "0123456789ab"})
    assert read_png_meta(data) == {"job_id": "0123456789ab"}
    assert read_png_meta(io.BytesIO(data)) == {"job_id": "0123456789ab"}
    assert read_png_meta(b"not an image") is None


def test_a_decompression_bomb_is_no_metadata_not_a_crash() -> None:
    data = png_bytes(Image.new("RGB", (4, 4)), meta={"job_id": "0123456789ab"})
    assert read_png_meta(_claiming(200_000, 200_000, data)) is None  # over 2x MAX_IMAGE_PIXELS: refused at open
    # a big (but allowed) claim: our chunk precedes the pixels, so nothing is decoded to find it
    assert read_png_meta(_claiming(9000, 9000, data)) == {"job_id": "0123456789ab"}


def test_deeply_nested_metadata_is_refused_not_a_recursion_error() -> None:
    from astrowatch.storage.images import PNG_META_KEY, png_with_text

    plain = png_bytes(Image.new("RGB", (4, 4)))
    assert read_png_meta(png_with_text(plain, {PNG_META_KEY: "[" * 100_000})) is None
