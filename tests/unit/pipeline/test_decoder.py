"""The sandboxed decoder: a photo decoded in a child under memory and time limits, checked against
the job's hash; whatever the file does to the child fails that file with the reason, never the caller."""

from __future__ import annotations

import hashlib
import signal
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from astrowatch.core.config import EnhanceConfig, LimitsConfig
from astrowatch.core.errors import InputError
from astrowatch.pipeline.preprocess import background, preprocess, preprocess_bytes
from astrowatch.storage import sandbox

ENHANCE = EnhanceConfig(min_side=16)


def _photo(path: Path, size: tuple[int, int] = (96, 64)) -> bytes:
    img = Image.new("RGB", size, (200, 30, 60))
    img.paste((20, 40, 220), (0, 0, size[0] // 2, size[1] // 2))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the child applies the orientation
    img.save(path, format="JPEG", exif=exif)
    return path.read_bytes()


def _png_bomb(path: Path, w: int, h: int) -> None:
    """A ~250 KB RGBA PNG that decodes to w*h*4 bytes of pixels (written row by row: cheap here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = bytes(1 + 4 * w)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_the_child_gives_the_same_pixels_and_facts_as_decoding_in_process(tmp_path):
    path = tmp_path / "photo.jpg"
    data = _photo(path)
    image, facts = preprocess(path, enhance=ENHANCE, limits=LimitsConfig(), sha256=hashlib.sha256(data).hexdigest())
    here, here_facts = preprocess_bytes(data, "photo.jpg", max_pixels=ENHANCE.max_pixels, min_side=16,
                                        bg=background(ENHANCE.background))
    assert image.mode == "RGB" and image.size == here.size == (64, 96)  # EXIF orientation applied
    assert ImageChops.difference(image, here).getbbox() is None
    assert facts == here_facts and facts["exif"]["orientation"] == 6


def test_a_file_changed_since_it_was_queued_is_refused(tmp_path):
    path = tmp_path / "photo.jpg"
    _photo(path)
    with pytest.raises(InputError, match=r"photo\.jpg: the file changed since it was queued"):
        preprocess(path, enhance=ENHANCE, limits=LimitsConfig(), sha256="0" * 64)


def test_a_memory_bomb_kills_only_the_child(tmp_path):
    path = tmp_path / "bomb.png"
    _png_bomb(path, 9000, 8000)  # 288 MB of pixels: over a 256 MB address space on their own
    limits = LimitsConfig().model_copy(update={"decode_memory_mb": 256, "max_image_pixels": 80_000_000})
    enhance = ENHANCE.model_copy(update={"max_pixels": 80_000_000})
    with pytest.raises(InputError, match=r"bomb\.png: the decoder ran out of its 256 MB memory limit"):
        preprocess(path, enhance=enhance, limits=limits)


def test_a_decoder_that_takes_too_long_is_stopped(tmp_path):
    path = tmp_path / "photo.jpg"
    _photo(path)
    limits = LimitsConfig().model_copy(update={"decode_timeout_seconds": 0.01})
    with pytest.raises(InputError, match=r"photo\.jpg: the decoder took longer than 0\.01 s"):
        preprocess(path, enhance=ENHANCE, limits=limits)


def test_a_symlink_or_fifo_in_the_data_folder_is_never_handed_to_the_child(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    _photo(tmp_path / "secret.jpg")
    (root / "photo.jpg").symlink_to(tmp_path / "secret.jpg")
    with pytest.raises(InputError, match="symbolic link"):
        preprocess(root / "photo.jpg", enhance=ENHANCE, limits=LimitsConfig(), root=root)


def test_a_child_crash_or_failure_is_named(tmp_path):
    with pytest.raises(InputError, match=r"x\.jpg: the decoder crashed with signal SIGSEGV"):
        sandbox._parse(b"", b"", -signal.SIGSEGV, name="x.jpg", memory_mb=2048, what="decoder")
    with pytest.raises(InputError, match=r"x\.jpg: the decoder failed \(exit code 1: KeyError: 'x'\)"):
        sandbox._parse(b"", b"Traceback...\nKeyError: 'x'", 1, name="x.jpg", memory_mb=2048, what="decoder")
    with pytest.raises(InputError, match="ran out of its 2048 MB"):
        sandbox._parse(b"", b"MemoryError", 1, name="x.jpg", memory_mb=2048, what="decoder")


def test_an_undecodable_file_fails_with_the_decoders_reason(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_photo(tmp_path / "ok.jpg")[:200])
    with pytest.raises(InputError, match=r"photo\.jpg: cannot decode"):
        preprocess(path, enhance=ENHANCE, limits=LimitsConfig())
