"""Photos as phones and chat apps make them, dropped into a running daemon.

HEIC (with an EXIF rotation, 10-bit, several images), AVIF, animated GIF → inbox results with the
right orientation and size; JPEG XL, camera RAW, a truncated HEIC → ``failed/`` with the reason
and the accepted types; ``notes.txt`` and system files are left alone.  Approving the result of a
HEIC files an image + caption that kohya sd-scripts' own loader code reads.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from harness import DaemonProcess, run_cli, wait_until, write_config
from kohya_support import load_dataset
from PIL import Image

pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is a core dependency: pip install pillow-heif")
pytestmark = pytest.mark.slow

RED, BLUE = (220, 20, 20), (20, 20, 220)
ORIENTATION = 0x0112


def halves(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """Left half red, right half blue: after EXIF orientation 6 (90° clockwise) red is on top."""
    img = Image.new("RGB", size, BLUE)
    img.paste(RED, (0, 0, size[0] // 2, size[1]))
    return img


def heic_bytes(img: Image.Image, orientation: int | None = None, **kwargs) -> bytes:
    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    if orientation:
        exif[ORIENTATION] = orientation
    buf = io.BytesIO()
    img.save(buf, format="HEIF", quality=90, exif=exif.tobytes(), **kwargs)
    return buf.getvalue()


def ten_bit_heic(size: tuple[int, int] = (64, 48)) -> bytes:
    ramp = np.linspace(0, 65535, size[0] * size[1] * 3).reshape(size[1], size[0], 3).astype(np.uint16)
    heif = pillow_heif.from_bytes(mode="RGB;16", size=size, data=ramp.tobytes())
    buf = io.BytesIO()
    heif.save(buf, quality=90)
    data = buf.getvalue()
    assert b"pixi" in data[:4096]
    return data


def animated_gif(frames: int = 3) -> bytes:
    colours = [RED, (20, 200, 20), BLUE, (240, 240, 20)][:frames]
    images = [Image.new("RGB", (40, 30), c) for c in colours]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buf.getvalue()


def avif_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="AVIF", quality=90)
    return buf.getvalue()


def results(data: Path, user: str = "gaby") -> dict[str, Path]:
    """Inbox images by source stem: ``rot.1a2b3c4d5e6f.png`` -> ``rot``."""
    inbox = data / "inbox" / user
    return {p.name.split(".")[0]: p for p in (inbox.iterdir() if inbox.is_dir() else ())
            if p.suffix in (".png", ".webp", ".jpg")}


def near(pixel, colour, tolerance: int = 40) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def test_phone_photos_in_results_or_failed_entries_never_silence(tmp_path: Path) -> None:
    config = write_config(tmp_path, astro={"language": "en"})
    with DaemonProcess(config) as d:
        folder = d.data / "Utilisateurs" / "gaby"
        folder.mkdir(parents=True)
        (folder / "rot.heic").write_bytes(heic_bytes(halves(), orientation=6))
        (folder / "deep.heic").write_bytes(ten_bit_heic())
        (folder / "pixel.avif").write_bytes(avif_bytes(halves()))
        (folder / "chat.gif").write_bytes(animated_gif(3))
        (folder / "shot.jxl").write_bytes(b"\x00\x00\x00\x0cJXL \r\n\x87\n" + os.urandom(200))
        (folder / "IMG_0042.CR2").write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00" + os.urandom(200))
        whole = heic_bytes(halves())
        (folder / "broken.heic").write_bytes(whole[: len(whole) // 2])
        (folder / "notes.txt").write_text("not a photo\n")
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")

        found = wait_until(lambda: len(results(d.data)) == 4 and results(d.data), timeout=60, what="4 results")
        failed = d.data / "failed" / "gaby"
        wait_until(lambda: len(list(failed.glob("*.error.json"))) == 3, timeout=30, what="3 failed entries")

        rot = Image.open(found["rot"])
        assert rot.size == (96, 128)  # portrait: the rotation applied, then ×2
        assert near(rot.getpixel((48, 20)), RED) and near(rot.getpixel((48, 108)), BLUE)
        assert Image.open(found["deep"]).size == (128, 96)
        assert Image.open(found["pixel"]).size == (128, 96)
        chat = Image.open(found["chat"])
        assert chat.size == (80, 60) and near(chat.getpixel((40, 30)), RED)  # the first frame

        def description(stem: str) -> str:
            return found[stem].with_name(found[stem].name.rsplit(".", 1)[0] + ".txt").read_text()

        assert "animated, 3 frames" in description("chat")
        assert "10-bit SDR source clamped to 8-bit sRGB" in description("deep")
        deep_sidecar = json.loads(found["deep"].with_suffix(".json").read_text())
        assert deep_sidecar["facts"]["bit_depth"] == 10 and deep_sidecar["facts"]["hdr"]["to_8bit"] == "clamped"
        assert deep_sidecar["facts"]["format"] == "HEIF"

        records = {p.name[: -len(".error.json")]: json.loads(p.read_text()) for p in failed.glob("*.error.json")}
        assert set(records) == {"shot.jxl", "IMG_0042.CR2", "broken.heic"}
        assert "JPEG XL" in records["shot.jxl"]["reason"]
        assert "camera RAW" in records["IMG_0042.CR2"]["reason"]
        assert "truncated or damaged" in records["broken.heic"]["reason"]
        for record in records.values():
            assert "HEIC/HEIF (.heic .heif .hif)" in record["accepted"]
            assert "AVIF (.avif)" in record["accepted"]
        assert {p.name for p in failed.iterdir() if not p.name.endswith(".json")} == set(records)

        left = {p.name for p in folder.iterdir()}
        assert left == {"notes.txt", ".DS_Store", "Thumbs.db"}  # inputs moved out; the rest untouched

        # approve the HEIC's result: kohya's own loader code finds image + caption
        os.replace(found["rot"], d.data / "approved" / found["rot"].name)
        dataset = d.data / "datasets" / "gaby"
        wait_until(lambda: (dataset / "rot.png").exists() and (dataset / "rot.txt").exists(), what="filed")
        pairs = load_dataset(dataset / "dataset.toml")
        assert [(Path(p).name, c.split(",")[0]) for p, c in pairs] == [("rot.png", "photo")]
        assert d.stop() == 0


@pytest.mark.parametrize("fmt, suffix", [("webp", ".webp"), ("jpeg", ".jpg")])
def test_enhance_format_for_results_and_dataset(tmp_path: Path, fmt: str, suffix: str) -> None:
    config = write_config(tmp_path, enhance={"backend": "lanczos", "min_side": 16, "format": fmt},
                          astro={"language": "en"})
    with DaemonProcess(config) as d:
        folder = d.data / "Utilisateurs" / "gaby"
        folder.mkdir(parents=True)
        (folder / "iphone.HEIC").write_bytes(heic_bytes(halves(), orientation=6))
        image = wait_until(lambda: results(d.data).get("iphone"), timeout=30, what="result")
        assert image.suffix == suffix and Image.open(image).size == (96, 128)
        sidecar = json.loads(image.with_suffix(".json").read_text())
        assert sidecar["image"] == image.name
        renamed = d.data / "approved" / f"mine{suffix}"  # no job id in the name: found by the embedded JSON
        os.replace(image, renamed)
        dataset = d.data / "datasets" / "gaby"
        wait_until(lambda: (dataset / f"iphone{suffix}").exists(), what="filed")
        assert [Path(p).name for p, _ in load_dataset(dataset / "dataset.toml")] == [f"iphone{suffix}"]
        assert d.stop() == 0


def test_twelve_megapixel_photo_gets_a_4096_long_side_not_8064(tmp_path: Path) -> None:
    config = write_config(tmp_path, enhance={"backend": "lanczos"},  # defaults: ×2, max_output_side 4096
                          astro={"language": "en"})
    with DaemonProcess(config) as d:
        folder = d.data / "Utilisateurs" / "gaby"
        folder.mkdir(parents=True)
        noise = np.random.default_rng(7).integers(0, 255, (3024, 4032, 3), dtype=np.uint8)
        Image.fromarray(noise).save(folder / "phone.jpg", quality=85)
        image = wait_until(lambda: results(d.data).get("phone"), timeout=90, what="result")
        assert Image.open(image).size == (4096, 3072)
        sidecar = json.loads(image.with_suffix(".json").read_text())
        scale = sidecar["facts"]["scale"]
        assert scale["requested"] == 2 and scale["used"] == pytest.approx(4096 / 4032)
        assert sidecar["params"]["scale_factor"] == pytest.approx(4096 / 4032)
        text = image.with_suffix(".txt").read_text()
        assert "max_output_side" in text and "×2" in text
        status = json.loads(run_cli("status", "--json", config=config).stdout)
        assert status["counts"] == {"inbox": 1}
        assert d.stop() == 0
