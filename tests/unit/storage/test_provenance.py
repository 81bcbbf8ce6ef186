"""Generated images say so: IPTC DigitalSourceType in the XMP of PNG, JPEG and WebP (next to a
readable A1111 infotext), and a C2PA manifest that c2pa's own Reader validates against a chain made
here (only the test signer untrusted)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import pytest
from c2pa_certs import make_chain
from PIL import Image

from astrowatch.core.config import C2paConfig
from astrowatch.core.errors import ConfigError
from astrowatch.storage.images import read_png_meta, result_bytes
from astrowatch.storage.provenance import (
    COMPOSITE,
    IPTC_NS,
    TRAINED,
    Ingredient,
    load_signer,
    source_type_of,
    xmp_of,
)

c2pa = pytest.importorskip("c2pa")

INFOTEXT = "a portrait\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 64x64"


def _image() -> Image.Image:
    return Image.new("RGB", (64, 48), (200, 40, 90))


def _xmp_source_type(data: bytes) -> str | None:
    """Parse the XMP as XML (not by pattern) and return the attribute the IPTC spec names."""
    xmp = xmp_of(data)
    assert xmp is not None
    text = xmp.decode("utf-8")
    body = text[text.index("<x:xmpmeta"):text.index("</x:xmpmeta>") + len("</x:xmpmeta>")]
    root = ET.fromstring(body)
    for desc in root.iter("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description"):
        value = desc.get(f"{{{IPTC_NS}}}DigitalSourceType")
        if value:
            return value
    return None


def _infotext(data: bytes, fmt: str) -> str | None:
    with Image.open(io.BytesIO(data)) as img:
        if fmt == "png":
            return img.info.get("parameters")
        raw = img.getexif().get_ifd(0x8769).get(0x9286)
    assert raw.startswith(b"UNICODE\x00")
    return raw[8:].decode("utf-16-be")


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
@pytest.mark.parametrize("kind", [TRAINED, COMPOSITE])
def test_every_format_carries_the_source_type_next_to_the_infotext(fmt, kind):
    data = result_bytes(_image(), fmt, infotext=INFOTEXT, meta={"job_id": "abc123"}, source_type=kind)
    assert _xmp_source_type(data) == kind == source_type_of(data)
    assert _infotext(data, fmt) == INFOTEXT
    assert read_png_meta(data) == {"job_id": "abc123"}


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_an_unmarked_result_declares_nothing(fmt):
    data = result_bytes(_image(), fmt, infotext=INFOTEXT, meta={"job_id": "x"})
    assert source_type_of(data) is None


def test_an_already_encoded_png_gets_the_xmp_chunk_too():
    buf = io.BytesIO()
    _image().save(buf, format="PNG")
    img = Image.open(io.BytesIO(buf.getvalue()))
    img.encoded_png = buf.getvalue()
    data = result_bytes(img, "png", infotext=INFOTEXT, source_type=TRAINED)
    assert _xmp_source_type(data) == TRAINED and _infotext(data, "png") == INFOTEXT


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    cert, key = make_chain(tmp_path_factory.mktemp("pki"))
    return load_signer(C2paConfig(cert_file=cert, key_file=key))


def _read(data: bytes, mime: str) -> dict:
    with c2pa.Reader(mime, io.BytesIO(data)) as reader:
        return json.loads(reader.json())


def _problems(store: dict) -> set[str]:
    return {s["code"] for s in store.get("validation_status") or []}


@pytest.mark.parametrize("fmt,mime", [("png", "image/png"), ("jpeg", "image/jpeg"), ("webp", "image/webp")])
def test_a_portrait_gets_a_signed_created_manifest(signer, fmt, mime):
    data = result_bytes(_image(), fmt, infotext=INFOTEXT, meta={"job_id": "j1"}, source_type=TRAINED)
    signed = signer.sign(data, fmt, source_type=TRAINED, title=f"theme.{fmt}")
    store = _read(signed, mime)
    manifest = store["manifests"][store["active_manifest"]]
    actions = next(a["data"]["actions"] for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))
    assert actions[0]["action"] == "c2pa.created" and actions[0]["digitalSourceType"] == TRAINED
    assert _problems(store) <= {"signingCredential.untrusted"}, store.get("validation_status")
    assert _xmp_source_type(signed) == TRAINED and _infotext(signed, fmt) == INFOTEXT
    tampered = bytearray(signed)
    tampered[len(tampered) // 2] ^= 0xFF  # a changed byte breaks the hard binding
    try:
        bad = _read(bytes(tampered), mime)
    except Exception:  # the reader may refuse it outright
        return
    assert _problems(bad) - {"signingCredential.untrusted"}


def test_an_enhanced_photo_is_edited_from_its_source_ingredient(signer):
    src = io.BytesIO()
    _image().save(src, format="JPEG")
    data = result_bytes(_image().resize((128, 96)), "png", source_type=COMPOSITE)
    signed = signer.sign(data, "png", source_type=COMPOSITE, title="photo.png",
                         ingredient=Ingredient(src.getvalue(), "image/jpeg", "photo.jpg"))
    store = _read(signed, "image/png")
    manifest = store["manifests"][store["active_manifest"]]
    actions = next(a["data"]["actions"] for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.edited"]
    assert actions[1]["digitalSourceType"] == COMPOSITE
    assert [i["title"] for i in manifest["ingredients"]] == ["photo.jpg"]
    assert _problems(store) <= {"signingCredential.untrusted"}


def test_a_bad_key_or_certificate_is_refused_naming_the_file(tmp_path):
    cert, key = make_chain(tmp_path / "a")
    _other_cert, other_key = make_chain(tmp_path / "b")
    with pytest.raises(ConfigError, match="c2pa_key.pem"):
        load_signer(C2paConfig(cert_file=cert, key_file=other_key))  # not the certificate's key
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem\n")
    with pytest.raises(ConfigError, match="junk.pem"):
        load_signer(C2paConfig(cert_file=junk, key_file=key))
    with pytest.raises(ConfigError, match="go together"):
        load_signer(C2paConfig(cert_file=cert))
    assert load_signer(C2paConfig()) is None
