"""Preprocessing of dropped photos: real files written by Pillow, decoded under limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from astrowatch.config import EnhanceConfig, LimitsConfig
from astrowatch.errors import ConfigError, InputError
from astrowatch.pipeline.preprocess import preprocess

RED, BLUE = (220, 30, 30), (30, 30, 220)


def _run(path: Path, **enhance: object) -> tuple[Image.Image, dict]:
    return preprocess(path, enhance=EnhanceConfig(**{"min_side": 16, **enhance}), limits=LimitsConfig())


def _two_halves(w: int, h: int) -> Image.Image:
    img = Image.new("RGB", (w, h), BLUE)
    img.paste(RED, (0, 0, w // 2, h))  # left half red
    return img


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D"
    exif[0x0132] = "2021:07:14 18:03:00"
    exif.get_ifd(0x8769)[0x9003] = "2020:01:02 03:04:05"
    return exif


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int]) -> bool:
    return sum(abs(a - b) for a, b in zip(pixel, colour, strict=True)) < 60


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    _two_halves(80, 40).save(path, "JPEG", quality=95, exif=_exif(6))
    img, facts = _run(path)
    # Orientation 6: rotate 90° clockwise to display, so the left (red) half ends on top.
    assert img.size == (40, 80) and img.mode == "RGB"
    assert _near(img.getpixel((20, 10)), RED) and _near(img.getpixel((20, 70)), BLUE)
    assert facts["source_size"] == [80, 40] and facts["size"] == [40, 80]
    assert facts["exif"] == {"camera": "Canon EOS 5D", "date": "2020-01-02 03:04:05", "orientation": 6}
    assert facts["format"] == "JPEG" and facts["mode"] == "RGB"
    assert facts["grayscale"] is False and facts["enlarged_from"] is None
    assert facts["alpha_flattened"] is False


def test_no_exif(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    _two_halves(40, 40).save(path)
    _, facts = _run(path)
    assert facts["exif"] == {"camera": None, "date": None, "orientation": None}
    assert facts["format"] == "PNG"


def test_rgba_is_flattened_onto_background(tmp_path: Path) -> None:
    path = tmp_path / "logo.png"
    img = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    img.paste((0, 200, 0, 255), (0, 0, 20, 40))
    img.save(path)
    out, facts = _run(path, background="#ff0000")
    assert out.mode == "RGB"
    assert out.getpixel((5, 5)) == (0, 200, 0) and out.getpixel((35, 5)) == (255, 0, 0)
    assert facts["alpha_flattened"] is True and facts["mode"] == "RGBA"


def test_palette_transparency_is_flattened(tmp_path: Path) -> None:
    path = tmp_path / "icon.png"
    img = Image.new("P", (32, 32), 0)
    img.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    img.paste(1, (0, 0, 16, 32))
    img.save(path, transparency=0)
    out, facts = _run(path)
    assert out.getpixel((24, 5)) == (255, 255, 255) and out.getpixel((4, 5)) == (10, 200, 10)
    assert facts["alpha_flattened"] is True


def test_small_image_is_enlarged(tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    _two_halves(50, 30).save(path)
    out, facts = _run(path, min_side=256)
    assert out.size == (427, 256)
    assert facts["enlarged_from"] == [50, 30] and facts["size"] == [427, 256]
    assert facts["source_size"] == [50, 30]


def test_too_thin_to_enlarge_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "line.png"
    Image.new("RGB", (4000, 2), "white").save(path)
    with pytest.raises(InputError, match="line.png.*too thin"):
        _run(path, min_side=256, max_pixels=1_000_000)


@pytest.mark.parametrize(("name", "make"), [
    ("gray.png", lambda: Image.linear_gradient("L").resize((64, 64))),
    ("gray_rgb.jpg", lambda: Image.linear_gradient("L").resize((64, 64)).convert("RGB")),
    ("bits.png", lambda: Image.new("1", (64, 64), 1)),
])
def test_grayscale_detected(tmp_path: Path, name: str, make) -> None:
    path = tmp_path / name
    make().save(path)
    out, facts = _run(path)
    assert facts["grayscale"] is True and out.mode == "RGB"


def test_colour_image_is_not_grayscale(tmp_path: Path) -> None:
    path = tmp_path / "colour.jpg"
    _two_halves(64, 64).save(path)
    assert _run(path)[1]["grayscale"] is False


def test_sixteen_bit_gray_is_scaled(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    arr = np.full((32, 32), 32896, dtype=np.uint16)  # 50 % gray in 16 bits
    Image.fromarray(arr).save(path)
    out, facts = _run(path)
    assert facts["grayscale"] is True
    assert abs(out.getpixel((3, 3))[0] - 128) <= 1


def test_bomb_refused_by_max_pixels(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (3000, 3000), 0).save(path)  # a few KB on disk, 9 Mpx decoded
    with pytest.raises(InputError, match=r"bomb.png: 3000x3000 .* over"):
        _run(path, max_pixels=1_000_000)
    limits = LimitsConfig(max_image_pixels=100_000)
    with pytest.raises(InputError, match="max_image_pixels=100000"):
        preprocess(path, enhance=EnhanceConfig(), limits=limits)


def test_wrong_extension_refused(tmp_path: Path) -> None:
    path = tmp_path / "liar.jpg"
    _two_halves(20, 20).save(path, "PNG")
    with pytest.raises(InputError, match="liar.jpg: the extension says jpeg but the content is png"):
        _run(path)


def test_zero_byte_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty.jpg: empty file"):
        _run(path)


def test_truncated_jpeg_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, "JPEG", quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.jpg: cannot decode"):
        _run(path)


def test_bad_background_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "logo.png"
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(path)
    with pytest.raises(ConfigError, match="enhance.background"):
        _run(path, background="not-a-colour")
