"""Preprocessing of dropped photos: real files written by Pillow, decoded under limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from astrowatch.core.config import EnhanceConfig, LimitsConfig
from astrowatch.core.errors import ConfigError, InputError
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


# -- phone photos: HEIF/AVIF, animation, HDR, ICC, output size (issue 17) ----------------------
def _heic(path: Path, img: Image.Image, **kwargs: object) -> Path:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    img.save(path, format="HEIF", quality=90, **kwargs)
    return path


def _icc_profile(swap_red_blue: bool) -> bytes:
    """A v2 matrix/TRC RGB profile built by hand: sRGB's D50 primaries, red and blue swapped if asked."""
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    red, green, blue = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
    if swap_red_blue:
        red, blue = blue, red
    text = b"Swapped test RGB\x00" if swap_red_blue else b"Plain test RGB\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 0x0233) + bytes(2)
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(*red)), (b"gXYZ", xyz(*green)),
            (b"bXYZ", xyz(*blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + bytes(12)
              + b"acsp" + bytes(24) + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + body


def test_an_icc_profile_is_converted_to_srgb_and_said(tmp_path: Path) -> None:
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (32, 32), RED).save(path, quality=95, icc_profile=_icc_profile(swap_red_blue=True))
    rgb, facts = _run(path)
    assert facts["icc"] == {"profile": "Swapped test RGB", "converted": True}
    assert rgb.getpixel((16, 16))[2] > 150 > rgb.getpixel((16, 16))[0]  # red pixels were meant as blue


def test_an_srgb_profile_is_left_alone_and_a_broken_one_is_assumed_srgb(tmp_path: Path) -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (32, 32), RED).save(tmp_path / "s.png", icc_profile=srgb)
    rgb, facts = _run(tmp_path / "s.png")
    assert facts["icc"]["converted"] is False and rgb.getpixel((1, 1)) == RED
    Image.new("RGB", (32, 32), RED).save(tmp_path / "b.png", icc_profile=b"not a profile")
    rgb, facts = _run(tmp_path / "b.png")
    assert facts["icc"]["converted"] is False and "assumed sRGB" in facts["icc"]["note"]


def test_heic_orientation_is_applied_exactly_as_for_jpeg(tmp_path: Path) -> None:
    source = _two_halves(64, 48)
    source.save(tmp_path / "a.jpg", quality=95, exif=_exif(6))
    _heic(tmp_path / "a.heic", source, exif=_exif(6).tobytes())
    jpeg, _ = _run(tmp_path / "a.jpg")
    heic, facts = _run(tmp_path / "a.heic")
    assert heic.size == jpeg.size == (48, 64) and facts["format"] == "HEIF"
    assert _near(heic.getpixel((24, 8)), RED) and _near(heic.getpixel((24, 56)), BLUE)


def test_multi_image_heic_gives_its_primary_image(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    heif = pillow_heif.from_pillow(Image.new("RGB", (64, 48), RED))
    heif.add_from_pillow(Image.new("RGB", (80, 40), BLUE))
    heif.save(tmp_path / "burst.heic", primary_index=1)
    rgb, facts = _run(tmp_path / "burst.heic")
    assert rgb.size == (80, 40) and _near(rgb.getpixel((5, 5)), BLUE)
    assert facts["frames"] == 2 and facts["frame_used"] == "primary"


def test_animated_webp_and_avif_give_their_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (40, 30), c) for c in (RED, BLUE, (30, 200, 30))]
    for name in ("a.webp", "a.avif", "a.gif"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100)
        rgb, facts = _run(tmp_path / name)
        assert _near(rgb.getpixel((20, 15)), RED), name
        assert facts["frames"] == 3 and facts["frame_used"] == "first", name


def test_heic_pixel_limits_and_bombs_as_for_jpeg(tmp_path: Path) -> None:
    _heic(tmp_path / "big.heic", Image.new("RGB", (300, 200), RED))
    with pytest.raises(InputError, match="big.heic: 300x200 = 60000 pixels is over limits.max_image_pixels=50000"):
        preprocess(tmp_path / "big.heic", enhance=EnhanceConfig(min_side=16),
                   limits=LimitsConfig(max_image_pixels=50000))


def test_a_truncated_heic_is_an_input_error_naming_it(tmp_path: Path) -> None:
    data = _heic(tmp_path / "whole.heic", _two_halves(64, 48)).read_bytes()
    (tmp_path / "cut.heic").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut.heic: cannot decode the HEIC/HEIF image \(truncated or damaged"):
        _run(tmp_path / "cut.heic")


@pytest.mark.parametrize("size, requested, limit, used", [
    ((4032, 3024), 2, 4096, 4096 / 4032),  # a 12 MP phone photo: 4096 long side, not 8064
    ((1000, 800), 2, 4096, 2),  # fits: as requested
    ((5000, 3000), 2, 4096, 1.0),  # already above: not enlarged
    ((4096, 10), 4, 4096, 1.0),  # exactly at it
    ((4032, 3024), 2, 0, 2),  # 0: no limit
])
def test_bounded_scale(size, requested, limit, used) -> None:
    from astrowatch.pipeline.preprocess import bounded_scale

    factor, facts = bounded_scale(size, requested, limit)
    assert factor == pytest.approx(used)
    assert round(max(size) * factor) <= max(limit or 10**9, max(size))  # never enlarged past the limit
    if used != requested:
        assert facts["max_output_side"] == limit and facts["requested"] == requested
        assert ("not enlarged" in facts["reason"]) == (used == 1.0)


def test_a_factor_that_is_not_a_number_is_left_for_the_backend_to_refuse() -> None:
    from astrowatch.pipeline.preprocess import bounded_scale

    assert bounded_scale((5000, 4000), "big", 4096) == ("big", {})
