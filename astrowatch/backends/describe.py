"""Technical description of an image: dominant colours by name, size, grayscale, EXIF.

Line 1 of :func:`technical_description` is a short caption usable for training
("photo, color, 2048x1536, dominant dark blue and beige"); it is always English, the language
text encoders are trained on.  Lines 2+ are for the reviewer, in ``language`` ("en" or "fr").
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

GRAY_TOLERANCE = 10  # channel spread (0..255) still counted as gray
GRAY_QUANTILE = 0.99  # ... for this share of the pixels (JPEG chroma noise)


def is_grayscale(rgb: Image.Image) -> bool:
    """True when R, G and B are equal within :data:`GRAY_TOLERANCE` for nearly every pixel."""
    thumb = rgb.copy()
    thumb.thumbnail((256, 256), Image.Resampling.NEAREST)
    arr = np.asarray(thumb, dtype=np.int16)
    spread = arr.max(axis=2) - arr.min(axis=2)
    return bool(np.quantile(spread, GRAY_QUANTILE) <= GRAY_TOLERANCE)


# (English, French, sRGB)
COLOUR_TABLE: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("black", "noir", (0, 0, 0)),
    ("dark gray", "gris foncé", (64, 64, 64)),
    ("gray", "gris", (128, 128, 128)),
    ("light gray", "gris clair", (192, 192, 192)),
    ("white", "blanc", (255, 255, 255)),
    ("cream", "crème", (250, 240, 210)),
    ("beige", "beige", (222, 202, 168)),
    ("peach", "pêche", (240, 186, 150)),
    ("tan", "fauve", (196, 160, 112)),
    ("brown", "marron", (130, 84, 48)),
    ("dark brown", "brun foncé", (72, 46, 28)),
    ("red", "rouge", (210, 40, 40)),
    ("dark red", "rouge foncé", (128, 20, 26)),
    ("pink", "rose", (240, 160, 184)),
    ("orange", "orange", (240, 140, 40)),
    ("yellow", "jaune", (240, 222, 60)),
    ("gold", "doré", (206, 168, 52)),
    ("olive", "olive", (118, 118, 40)),
    ("khaki", "kaki", (186, 178, 120)),
    ("green", "vert", (60, 160, 60)),
    ("dark green", "vert foncé", (28, 78, 38)),
    ("light green", "vert clair", (160, 222, 140)),
    ("teal", "bleu canard", (28, 128, 128)),
    ("turquoise", "turquoise", (64, 208, 200)),
    ("light blue", "bleu clair", (172, 202, 236)),
    ("sky blue", "bleu ciel", (110, 176, 232)),
    ("blue", "bleu", (40, 90, 200)),
    ("dark blue", "bleu foncé", (20, 34, 88)),
    ("purple", "violet", (118, 50, 150)),
    ("lavender", "lavande", (190, 170, 222)),
    ("magenta", "magenta", (210, 60, 170)),
)

LABELS = {
    "en": {"size": "Size", "upscaled": "upscaled ×{f} from {w}x{h}", "source": "Source",
           "colour": "Colour", "gray": "grayscale", "color": "colour", "dominant": "Dominant colours",
           "camera": "Camera", "date": "Taken", "orientation": "EXIF orientation {o} applied",
           "enlarged": "Enlarged from {w}x{h} before processing (below the minimum side)",
           "alpha": "Transparency flattened onto the background", "sep": ": ", "pct": "{p}%",
           "animated": "Source animated, {n} frames: the first frame was enhanced",
           "multi": "Source holds {n} images: the primary image was enhanced",
           "hdr": "{b}-bit {t} source clamped to 8-bit sRGB (scaled, no tone mapping)",
           "icc": "Colour profile {p} converted to sRGB",
           "scaled": "Scale ×{u} instead of ×{r}: the long side stays within {m} px (enhance.max_output_side)",
           "kept": "Not enlarged: the long side is already at least {m} px (enhance.max_output_side)"},
    "fr": {"size": "Taille", "upscaled": "agrandie ×{f} depuis {w}x{h}", "source": "Source",
           "colour": "Couleur", "gray": "niveaux de gris", "color": "couleur",
           "dominant": "Couleurs dominantes", "camera": "Appareil", "date": "Prise de vue",
           "orientation": "Orientation EXIF {o} appliquée",
           "enlarged": "Agrandie depuis {w}x{h} avant traitement (sous le côté minimum)",
           "alpha": "Transparence aplatie sur le fond", "sep": " : ", "pct": "{p} %",
           "animated": "Source animée, {n} images : la première a été traitée",
           "multi": "La source contient {n} images : l'image principale a été traitée",
           "hdr": "Source {t} {b} bits ramenée en sRGB 8 bits (mise à l'échelle, sans tone mapping)",
           "icc": "Profil couleur {p} converti en sRGB",
           "scaled": "Facteur ×{u} au lieu de ×{r} : le grand côté reste sous {m} px (enhance.max_output_side)",
           "kept": "Pas d'agrandissement : le grand côté atteint déjà {m} px (enhance.max_output_side)"},
}


def _lab(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """sRGB (0..255) to CIE L*a*b* (D65)."""
    def lin(c: float) -> float:
        c /= 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in rgb)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


_TABLE_LAB = [(_lab(rgb), en, fr) for en, fr, rgb in COLOUR_TABLE]


def hex_to_rgb(hex_colour: str) -> tuple[int, int, int]:
    text = hex_colour.strip().lstrip("#")
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    if len(text) != 6:
        raise ValueError(f"{hex_colour!r} is not a #rrggbb colour")
    value = int(text, 16)
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def colour_name(hex_colour: str, language: str = "en") -> str:
    """The nearest common colour name (CIE L*a*b* distance), e.g. "#1a2b5c" -> "dark blue"."""
    lab = _lab(hex_to_rgb(hex_colour))
    best = min(_TABLE_LAB, key=lambda row: sum((p - q) ** 2 for p, q in zip(row[0], lab, strict=True)))
    return best[2] if language == "fr" else best[1]


def dominant_colours(image: Image.Image, n: int = 5) -> list[tuple[str, float]]:
    """Up to ``n`` (hex, share) pairs, largest share first; shares sum to 1."""
    thumb = image.convert("RGB")
    thumb.thumbnail((128, 128), Image.Resampling.BILINEAR)
    quant = thumb.quantize(colors=max(1, n), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = quant.getpalette() or []
    counts: dict[str, int] = {}
    for count, index in quant.getcolors(maxcolors=256) or []:
        if not isinstance(index, int):  # a palette image: always its palette index
            continue
        r, g, b = palette[index * 3:index * 3 + 3]
        key = f"#{r:02x}{g:02x}{b:02x}"
        counts[key] = counts.get(key, 0) + count
    total = sum(counts.values()) or 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [(hex_colour, round(count / total, 4)) for hex_colour, count in ranked]


def _named(colours: list[tuple[str, float]], language: str) -> list[tuple[str, float]]:
    """Colours merged by name, largest share first."""
    shares: dict[str, float] = {}
    for hex_colour, share in colours:
        name = colour_name(hex_colour, language)
        shares[name] = shares.get(name, 0.0) + share
    return sorted(shares.items(), key=lambda kv: -kv[1])


def _join_and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def caption_line(image: Image.Image, grayscale: bool, colours: list[tuple[str, float]]) -> str:
    """"photo, color, 2048x1536, dominant dark blue and beige" (English, short)."""
    named = _named(colours, "en")
    main = [name for name, share in named if share >= 0.08][:2] or [named[0][0]]
    w, h = image.size
    return f"photo, {'grayscale' if grayscale else 'color'}, {w}x{h}, dominant {_join_and(main)}"


def technical_description(image: Image.Image, facts: dict[str, Any], language: str = "en") -> str:
    """Caption line, then reviewer lines: size, source, colour, dominant colours, EXIF."""
    words = LABELS.get(language, LABELS["en"])
    grayscale = bool(facts["grayscale"]) if "grayscale" in facts else is_grayscale(image.convert("RGB"))
    colours = dominant_colours(image)
    lines = [caption_line(image, grayscale, colours), _size_line(image, facts, words)]
    source = _source_line(facts, words)
    if source:
        lines.append(source)
    lines.append(f"{words['colour']}{words['sep']}{words['gray'] if grayscale else words['color']}")
    shown = ", ".join(f"{name} {words['pct'].format(p=round(share * 100))}"
                      for name, share in _named(colours, language))
    lines.append(f"{words['dominant']}{words['sep']}{shown}")
    lines += _exif_lines(facts, words)
    return "\n".join(lines)


def _size_line(image: Image.Image, facts: dict[str, Any], words: dict[str, str]) -> str:
    w, h = image.size
    line = f"{words['size']}{words['sep']}{w}x{h} px"
    before, factor = facts.get("upscaled_from"), facts.get("scale_factor")
    if before and factor:
        line += ", " + words["upscaled"].format(f=f"{float(factor):g}", w=before[0], h=before[1])
    return line


def _source_line(facts: dict[str, Any], words: dict[str, str]) -> str | None:
    bits = [str(facts["format"])] if facts.get("format") else []
    if facts.get("source_size"):
        bits.append("{}x{}".format(*facts["source_size"]))
    if facts.get("mode"):
        bits.append(f"mode {facts['mode']}")
    return f"{words['source']}{words['sep']}{', '.join(bits)}" if bits else None


def _exif_lines(facts: dict[str, Any], words: dict[str, str]) -> list[str]:
    exif = facts.get("exif") or {}
    lines = []
    if exif.get("camera"):
        lines.append(f"{words['camera']}{words['sep']}{exif['camera']}")
    if exif.get("date"):
        lines.append(f"{words['date']}{words['sep']}{exif['date']}")
    if exif.get("orientation") not in (None, 1):
        lines.append(words["orientation"].format(o=exif["orientation"]))
    if facts.get("enlarged_from"):
        lines.append(words["enlarged"].format(w=facts["enlarged_from"][0], h=facts["enlarged_from"][1]))
    if facts.get("alpha_flattened"):
        lines.append(words["alpha"])
    return lines + _source_kind_lines(facts, words)


def _source_kind_lines(facts: dict[str, Any], words: dict[str, str]) -> list[str]:
    """Animation, multi-image HEIF, HDR, ICC conversion and a scale factor other than requested."""
    lines = []
    if facts.get("frames"):
        key = "multi" if facts.get("frame_used") == "primary" else "animated"
        lines.append(words[key].format(n=facts["frames"]))
    if facts.get("hdr"):
        lines.append(words["hdr"].format(b=facts.get("bit_depth"), t=facts["hdr"].get("transfer", "SDR")))
    if (facts.get("icc") or {}).get("converted"):
        lines.append(words["icc"].format(p=facts["icc"]["profile"]))
    scale = facts.get("scale") or {}
    if scale.get("max_output_side"):
        key = "kept" if scale["used"] == 1.0 else "scaled"
        lines.append(words[key].format(u=f"{scale['used']:.4g}", r=f"{scale['requested']:g}",
                                       m=scale["max_output_side"]))
    return lines
