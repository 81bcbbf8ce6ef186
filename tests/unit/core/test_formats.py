"""The one list of image types: sniffing by content, refusals with reasons, README and doctor agree."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from astrowatch.core.formats import ACCEPTED, IMAGE_EXTENSIONS, accepted_short, accepted_text, sniff, unusable_reason

ROOT = Path(__file__).resolve().parents[3]


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + bytes(4) + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + bytes(32)


@pytest.mark.parametrize("head, fmt", [
    (_ftyp(b"heic", b"mif1", b"heic"), "heif"),  # iPhone
    (_ftyp(b"mif1", b"heic"), "heif"),
    (_ftyp(b"heix", b"mif1"), "heif"),  # 10-bit
    (_ftyp(b"avif", b"mif1", b"miaf"), "avif"),
    (_ftyp(b"mif1", b"avif", b"miaf"), "avif"),  # generic HEIF major brand, AVIF inside
    (_ftyp(b"avis", b"msf1"), "avif"),  # animated AVIF
    (_ftyp(b"msf1", b"hevc"), "heics"),  # HEIF image sequence
    (_ftyp(b"crx ", b"isom"), "raw"),  # Canon CR3
    (_ftyp(b"isom", b"mp41"), None),  # an MP4 video is not an image
    (_ftyp(b"qt  "), None),
    (b"GIF87a\x01\x00", "gif"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(20), "jxl"),
    (b"\xff\x0a\x00", "jxl"),
    (b"<?xml version='1.0'?>\n<svg xmlns=...", "svg"),
    (b"8BPS\x00\x01", "psd"),
    (b"%PDF-1.7", None),
    (b"hello, these are my notes", None),
])
def test_sniff_by_content(head: bytes, fmt: str | None) -> None:
    assert sniff(head[:64]) == fmt


def test_pillow_encoded_heif_and_avif_are_recognised() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="AVIF")
    assert sniff(buf.getvalue()[:64]) == "avif"
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="HEIF")
    assert sniff(buf.getvalue()[:64]) == "heif"


@pytest.mark.parametrize("name, head, words", [
    ("IMG_0042.CR2", b"II*\x00", "camera RAW files cannot be used; export a JPEG or HEIC"),
    ("DSC_1.nef", b"MM\x00*", "camera RAW"),
    ("x.dng", b"II*\x00", "camera RAW"),
    ("shot.jxl", b"\xff\x0a", "JPEG XL files cannot be used"),
    ("logo.svg", b"<svg", "SVG (a vector drawing) files cannot be used; export it as PNG"),
    ("photo", b"\xff\xd8\xff\xe0", "the content is a JPEG image but the name does not say so; rename it to *.jpg"),
    ("clip.dat", _ftyp(b"heic", b"mif1"), "rename it to *.heic"),
    ("blob.bin", b"\x00\x00\x00\x0cJXL \r\n\x87\n", "the content is JPEG XL, which cannot be used"),
])
def test_things_that_look_like_images_get_a_reason(name: str, head: bytes, words: str) -> None:
    assert words in unusable_reason(name, sniff(head))


@pytest.mark.parametrize("name, head", [
    ("notes.txt", b"BMW service on Monday"),  # starts like a BMP: weak signatures never refuse
    ("notes.txt", b"<svg> is what the designer sent"),
    ("report.pdf", b"%PDF-1.7"),
    ("video.mp4", _ftyp(b"isom", b"mp41")),
    ("Thumbs.db", b"\xd0\xcf\x11\xe0"),
    ("IMG_0001.AAE", b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist'),  # iPhone edit sidecar
    ("IMG_0001.MOV", _ftyp(b"qt  ", b"qt  ")),  # the video half of a Live Photo
])
def test_things_that_are_not_images_are_not_refused(name: str, head: bytes) -> None:
    assert unusable_reason(name, sniff(head)) is None


def test_the_accepted_list_is_one_list() -> None:
    assert {".heic", ".heif", ".avif", ".gif", ".jpg", ".png", ".webp"} <= IMAGE_EXTENSIONS
    assert len({t.fmt for t in ACCEPTED}) == len(ACCEPTED)
    assert "HEIC/HEIF (.heic .heif .hif)" in accepted_text()


def test_readme_folder_table_reads_from_the_list() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `Utilisateurs/<user>/` |"))
    listed = re.search(r"photos \(([^)]*)", row)
    assert listed and listed.group(1).split(" — ")[0] == accepted_short(), \
        f"README's folder table must list: {accepted_short()}"


def test_doctor_lists_the_accepted_types_and_heic_support() -> None:
    from astrowatch.commands.doctor import _image_types

    status, detail = _image_types()
    assert detail.startswith(f"accepted: {accepted_text()}")
    assert "HEIC/HEIF support: pillow-heif 1." in detail and "AVIF support: Pillow built-in" in detail
    assert status == "ok"
