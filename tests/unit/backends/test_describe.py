"""Technical descriptions: colour names, dominant colours, caption line and reviewer lines."""

from __future__ import annotations

import pytest
from PIL import Image

from astrowatch.backends.describe import colour_name, dominant_colours, technical_description


@pytest.mark.parametrize(("hex_colour", "en", "fr"), [
    ("#000000", "black", "noir"),
    ("#ffffff", "white", "blanc"),
    ("#1a2b5c", "dark blue", "bleu foncé"),
    ("#e0cba8", "beige", "beige"),
    ("#d42a2a", "red", "rouge"),
    ("#808080", "gray", "gris"),
    ("#3c9e3c", "green", "vert"),
    ("fff", "white", "blanc"),
])
def test_colour_names(hex_colour: str, en: str, fr: str) -> None:
    assert colour_name(hex_colour) == en
    assert colour_name(hex_colour, "fr") == fr


def test_bad_hex_is_refused() -> None:
    with pytest.raises(ValueError):
        colour_name("#12345")


def test_dominant_colours_shares() -> None:
    img = Image.new("RGB", (200, 100), (20, 34, 88))
    img.paste((222, 202, 168), (150, 0, 200, 100))  # a quarter beige
    colours = dominant_colours(img, n=5)
    assert colours[0][0] == "#142258" and colours[0][1] == pytest.approx(0.75, abs=0.02)
    assert colour_name(colours[1][0]) == "beige"
    assert sum(share for _, share in colours) == pytest.approx(1.0, abs=1e-3)
    assert colours == dominant_colours(img, n=5)  # deterministic


def test_description_lines_with_exif() -> None:
    img = Image.new("RGB", (64, 48), (20, 34, 88))
    facts = {"source_size": [48, 64], "size": [64, 48], "mode": "RGB", "format": "JPEG",
             "grayscale": False, "enlarged_from": None, "alpha_flattened": True,
             "exif": {"camera": "Canon EOS 5D", "date": "2020-01-02 03:04:05", "orientation": 6}}
    en = technical_description(img, facts, "en").splitlines()
    assert en[0] == "photo, color, 64x48, dominant dark blue"
    assert "Source: JPEG, 48x64, mode RGB" in en
    assert "Camera: Canon EOS 5D" in en and "Taken: 2020-01-02 03:04:05" in en
    assert "EXIF orientation 6 applied" in en
    assert "Transparency flattened onto the background" in en
    fr = technical_description(img, facts, "fr").splitlines()
    assert fr[0] == en[0]  # the caption line stays English
    assert "Appareil : Canon EOS 5D" in fr and "Couleurs dominantes : bleu foncé 100 %" in fr


def test_description_without_facts_detects_grayscale() -> None:
    img = Image.linear_gradient("L").convert("RGB").resize((32, 32))
    first = technical_description(img, {}).splitlines()[0]
    assert first.startswith("photo, grayscale, 32x32, dominant ")


def _facts(**extra: object) -> dict:
    return {"grayscale": False, "source_size": [40, 30], "mode": "P", "format": "GIF", **extra}


@pytest.mark.parametrize(("facts", "en", "fr"), [
    (_facts(frames=3, frame_used="first"), "Source animated, 3 frames: the first frame was enhanced",
     "Source animée, 3 images"),
    (_facts(format="HEIF", frames=2, frame_used="primary"), "Source holds 2 images: the primary image was enhanced",
     "l'image principale"),
    (_facts(format="HEIF", bit_depth=10, hdr={"transfer": "PQ", "to_8bit": "clamped"}),
     "10-bit PQ source clamped to 8-bit sRGB (scaled, no tone mapping)", "Source PQ 10 bits ramenée en sRGB 8 bits"),
    (_facts(icc={"profile": "Display P3", "converted": True}), "Colour profile Display P3 converted to sRGB",
     "Profil couleur Display P3 converti en sRGB"),
    (_facts(scale={"requested": 2.0, "used": 4096 / 4032, "max_output_side": 4096, "reason": "lowered"}),
     "Scale ×1.016 instead of ×2: the long side stays within 4096 px (enhance.max_output_side)", "au lieu de ×2"),
    (_facts(scale={"requested": 2.0, "used": 1.0, "max_output_side": 4096, "reason": "not enlarged"}),
     "Not enlarged: the long side is already at least 4096 px", "Pas d'agrandissement"),
])
def test_the_description_says_what_happened_to_the_source(facts: dict, en: str, fr: str) -> None:
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    assert en in technical_description(image, facts, "en")
    assert fr in technical_description(image, facts, "fr")


def test_an_ordinary_photo_gets_none_of_those_lines() -> None:
    text = technical_description(Image.new("RGB", (40, 30)), _facts(scale={"requested": 2.0, "used": 2.0,
                                                                            "reason": "as requested"}), "en")
    assert not any(word in text for word in ("animated", "images:", "clamped", "profile", "Scale", "enlarged"))
