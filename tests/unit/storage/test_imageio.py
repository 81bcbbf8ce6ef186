"""Image files: content sniffing, atomic writes, PNG metadata, moves out of watched folders."""

from __future__ import annotations

import os

import pytest
from harness import make_image

from astrowatch.core.errors import InputError
from astrowatch.storage.images import atomic_write_bytes, move_out, open_image, read_png_meta, sniff, write_png


def test_sniff_by_content_not_extension(tmp_path):
    assert sniff(make_image(tmp_path / "a.png")[:16]) == "png"
    assert sniff(make_image(tmp_path / "a.jpg")[:16]) == "jpeg"
    assert sniff(make_image(tmp_path / "a.webp")[:16]) == "webp"
    assert sniff(make_image(tmp_path / "a.bmp")[:16]) == "bmp"
    assert sniff(make_image(tmp_path / "a.tiff", fmt="TIFF")[:16]) == "tiff"
    assert sniff(b"GIF89a....") == "gif"
    assert sniff(b"%PDF-1.7....") is None


def test_open_image_refuses_bombs_before_decoding(tmp_path):
    make_image(tmp_path / "big.png", (500, 500))
    with pytest.raises(InputError, match="max_image_pixels"):
        open_image(tmp_path / "big.png", max_pixels=1000)
    assert open_image(tmp_path / "big.png", max_pixels=10**6).size == (500, 500)


def test_png_carries_infotext_and_our_job_chunk(tmp_path):
    from PIL import Image

    write_png(tmp_path / "r.png", Image.new("RGB", (8, 8)), infotext="a\nSteps: 1, Seed: 2, Size: 8x8",
              meta={"job_id": "0123456789ab"})
    assert read_png_meta(tmp_path / "r.png") == {"job_id": "0123456789ab"}
    with Image.open(tmp_path / "r.png") as img:
        assert img.text["parameters"].startswith("a\n")
    assert read_png_meta(tmp_path / "missing.png") is None


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_bytes(tmp_path / "x.bin", b"1")
    atomic_write_bytes(tmp_path / "x.bin", b"22")
    assert (tmp_path / "x.bin").read_bytes() == b"22" and os.listdir(tmp_path) == ["x.bin"]


def test_move_out_is_link_then_unlink_and_safe_to_repeat(tmp_path):
    src, dest = tmp_path / "in.jpg", tmp_path / "out.jpg"
    src.write_bytes(b"data")
    os.link(src, dest)  # a crash after the link, before the unlink
    move_out(src, dest)
    assert not src.exists() and dest.read_bytes() == b"data"
    other = tmp_path / "other.jpg"
    other.write_bytes(b"x")
    dest2 = tmp_path / "taken.jpg"
    dest2.write_bytes(b"y")
    with pytest.raises(FileExistsError):
        move_out(other, dest2)  # never overwrites a different file
    link = tmp_path / "link.jpg"
    os.symlink("/etc/hostname", link)
    move_out(link, tmp_path / "moved-link.jpg")
    assert os.path.islink(tmp_path / "moved-link.jpg") and not os.path.lexists(link)


@pytest.mark.parametrize("fmt, suffix, pil", [("png", ".png", "PNG"), ("webp", ".webp", "WEBP"),
                                              ("jpeg", ".jpg", "JPEG")])
def test_results_in_every_format_carry_our_job_id(tmp_path, fmt, suffix, pil):
    from PIL import Image

    from astrowatch.storage.images import result_bytes

    path = tmp_path / f"renamed{suffix}"
    image = Image.new("RGB", (32, 24), (10, 200, 30))
    atomic_write_bytes(path, result_bytes(image, fmt, infotext="a cat\nSteps: 20", meta={"job_id": 'a"<&>b'}))
    with Image.open(path) as img:
        assert img.format == pil and img.size == (32, 24)
        if fmt == "webp":
            assert list(img.convert("RGB").getdata()) == list(image.getdata())  # lossless
        if fmt != "png":
            comment = img.getexif().get_ifd(0x8769)[0x9286]
            assert comment == b"UNICODE\x00" + "a cat\nSteps: 20".encode("utf-16-be")  # where A1111 puts it
    assert read_png_meta(path) == {"job_id": 'a"<&>b'}


@pytest.mark.parametrize("name, content, words", [
    ("drawing.png", b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "drawing.png: the content is SVG"),
    ("shot.jpg", b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(40),
     "shot.jpg: the content is JPEG XL, which cannot be used"),
])
def test_an_unusable_format_under_an_accepted_name_says_what_it_is(tmp_path, name, content, words):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=words) as info:
        open_image(tmp_path / name, max_pixels=10**6)
    assert "accepted: JPEG (.jpg .jpeg .jfif)" in str(info.value)


def test_bit_depth_and_hdr_transfer_from_the_heif_avif_boxes():
    """What open_image reads for an AVIF (Pillow reports neither): the pixi and colr/nclx properties."""
    from astrowatch.storage.images import isobmff_bit_depth, isobmff_transfer

    def box(name: bytes, payload: bytes) -> bytes:
        return (8 + len(payload)).to_bytes(4, "big") + name + payload

    pixi = box(b"pixi", bytes(4) + bytes([3, 10, 10, 10]))
    pq = box(b"colr", b"nclx" + (9).to_bytes(2, "big") + (16).to_bytes(2, "big") + (9).to_bytes(2, "big") + b"\x80")
    srgb = box(b"colr", b"nclx" + (1).to_bytes(2, "big") + (13).to_bytes(2, "big") + (6).to_bytes(2, "big") + b"\x80")
    head = box(b"ftyp", b"avif" + bytes(4) + b"mif1") + box(b"meta", bytes(4) + box(b"iprp", pixi + pq))
    assert isobmff_bit_depth(head) == 10 and isobmff_transfer(head) == "PQ"
    assert isobmff_transfer(box(b"ftyp", b"avif") + srgb) is None
    assert isobmff_bit_depth(b"no boxes here") is None
