"""Geometry, palette, glyphs and fonts of the chart wheel (no drawing here; see ``wheel_render``).

Orientation is the conventional one: the ascendant sits at 9 o'clock and ecliptic longitude
increases counter-clockwise.  Radii are fractions of the wheel's outer radius.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

from PIL import ImageFont

from astrowatch.chart.model import PLANETS, SIGNS, Chart

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
FONT_REGULAR = DATA_DIR / "DejaVuSans.ttf"
FONT_BOLD = DATA_DIR / "DejaVuSans-Bold.ttf"

SUPERSAMPLE = 2
# Radii, as fractions of the outer radius.
R_OUT = 1.0
R_SIGN_IN = 0.86
R_TICK_IN = 0.82
R_GLYPH = 0.735
R_DEGREE = 0.655
R_RETRO = 0.595
R_HOUSE_OUT = 0.545
R_HOUSE_IN = 0.455
R_LABEL = 1.075
MIN_SEPARATION = 7.2  # degrees between two planet glyphs once nudged apart

Colour = tuple[int, int, int]

BACKGROUND_CENTRE: Colour = (30, 36, 72)
BACKGROUND_EDGE: Colour = (6, 7, 22)
DISC: Colour = (13, 17, 42)
INNER_DISC: Colour = (19, 25, 56)
GOLD: Colour = (206, 170, 98)
GOLD_DIM: Colour = (140, 118, 76)
TEXT: Colour = (246, 236, 212)
TEXT_DIM: Colour = (178, 170, 150)

ELEMENT_FILL: dict[str, Colour] = {
    "Fire": (192, 62, 38),  # red
    "Earth": (78, 124, 54),  # green
    "Air": (206, 170, 58),  # yellow
    "Water": (34, 100, 166),  # blue
}
ELEMENT_GLYPH: dict[str, Colour] = {
    "Fire": (255, 150, 70),  # orange
    "Earth": (196, 160, 104),  # brown / tan
    "Air": (176, 220, 250),  # pale blue
    "Water": (88, 214, 200),  # teal
}
SIGN_GLYPHS = dict(zip(SIGNS, "♈♉♊♋♌♍♎♏♐♑♒♓", strict=True))

POINT_GLYPHS: dict[str, str] = {
    "sun": "☉", "moon": "☽", "mercury": "☿", "venus": "♀", "mars": "♂", "jupiter": "♃",
    "saturn": "♄", "uranus": "♅", "neptune": "♆", "pluto": "♇", "chiron": "⚷",
    "true_node": "☊", "mean_node": "☊", "mean_lilith": "⚸",
}
# Plain-text stand-ins when the bundled font is missing (PIL's default font has no glyphs).
POINT_ABBREV: dict[str, str] = {
    "sun": "Su", "moon": "Mo", "mercury": "Me", "venus": "Ve", "mars": "Ma", "jupiter": "Ju",
    "saturn": "Sa", "uranus": "Ur", "neptune": "Ne", "pluto": "Pl", "chiron": "Ch",
    "true_node": "No", "mean_node": "No", "mean_lilith": "Li",
}
POINT_COLOURS: dict[str, Colour] = {
    "sun": (255, 210, 90), "moon": (226, 232, 244), "mercury": (200, 232, 160),
    "venus": (246, 166, 196), "mars": (255, 110, 92), "jupiter": (242, 182, 110),
    "saturn": (214, 196, 160), "uranus": (128, 216, 232), "neptune": (120, 170, 255),
    "pluto": (200, 156, 214), "chiron": (176, 200, 160), "true_node": (210, 210, 220),
    "mean_node": (210, 210, 220), "mean_lilith": (170, 150, 190),
}
ASPECT_COLOURS: dict[str, Colour] = {
    "conjunction": (233, 196, 106),  # gold
    "sextile": (74, 168, 224),  # blue
    "trine": (52, 196, 160),  # blue-green
    "square": (230, 72, 59),  # red
    "opposition": (196, 50, 44),  # deep red
}
RETROGRADE = "℞"


@dataclass(frozen=True)
class Geometry:
    """Where things go on a canvas of ``width`` pixels (already supersampled)."""

    width: int
    cx: float
    cy: float
    radius: float
    asc: float  # longitude drawn at 9 o'clock

    @classmethod
    def for_canvas(cls, width: int, asc: float) -> Geometry:
        return cls(width=width, cx=width / 2, cy=width * 0.55, radius=width * 0.385, asc=asc)

    @property
    def unit(self) -> float:
        """One 'pixel' of a 1024-wide wheel, to scale line widths and fonts."""
        return self.width / 1024

    def angle(self, lon: float) -> float:
        """Screen angle in radians (counter-clockwise from 3 o'clock) of a longitude."""
        return math.radians(180.0 + lon - self.asc)

    def xy(self, lon: float, frac: float) -> tuple[float, float]:
        a = self.angle(lon)
        r = frac * self.radius
        return self.cx + r * math.cos(a), self.cy - r * math.sin(a)

    def px(self, k: float) -> int:
        """A line width of ``k`` units, at least one pixel."""
        return max(1, round(k * self.unit))


def wheel_xy(size: int, asc: float, lon: float, frac: float) -> tuple[float, float]:
    """Where longitude ``lon`` at radius ``frac`` lands on the final ``size``-pixel image."""
    geo = Geometry.for_canvas(size, asc)
    return geo.xy(lon, frac)


def chart_asc(chart: Chart) -> float:
    """Longitude to draw on the left: the ascendant, else house 1's cusp, else 0° Aries."""
    if chart.ascendant is not None:
        return chart.ascendant.longitude % 360
    for house in chart.houses:
        if house.number == 1:
            return house.longitude % 360
    return 0.0


def chart_mc(chart: Chart) -> float | None:
    mc = chart.points.get("medium_coeli")
    if mc is not None:
        return mc.longitude % 360
    for house in chart.houses:
        if house.number == 10:
            return house.longitude % 360
    return None


def drawn_points(chart: Chart) -> list[str]:
    """Point keys to draw as glyphs: the ten planets, Chiron, one lunar node, Lilith."""
    keys = [k for k in (*PLANETS, "chiron") if k in chart.points]
    node = "true_node" if "true_node" in chart.points else "mean_node"
    keys += [k for k in (node, "mean_lilith") if k in chart.points]
    return keys


def spread_longitudes(lons: list[float], min_sep: float = MIN_SEPARATION) -> list[float]:
    """Display longitudes for glyphs: close ones are fanned out around their mean, ``min_sep`` apart.

    Order around the circle is kept; isolated points do not move.
    """
    n = len(lons)
    if n < 2:
        return [x % 360 for x in lons]
    min_sep = min(min_sep, 360.0 / n)
    seq = _sequence_after_largest_gap(lons)
    base = lons[seq[0]] % 360
    flat = [base + ((lons[i] % 360 - base) % 360) for i in seq]
    groups = _merge_groups(flat, min_sep)
    out = [0.0] * n
    for group in groups:
        first = sum(flat[j] for j in group) / len(group) - (len(group) - 1) / 2 * min_sep
        for k, j in enumerate(group):
            out[seq[j]] = (first + k * min_sep) % 360
    return out


def _sequence_after_largest_gap(lons: list[float]) -> list[int]:
    n = len(lons)
    order = sorted(range(n), key=lambda i: (lons[i] % 360, i))
    vals = [lons[i] % 360 for i in order]
    gaps = [(vals[(k + 1) % n] - vals[k]) % 360 for k in range(n)]
    k0 = max(range(n), key=lambda k: (gaps[k], -k))
    return [order[(k0 + 1 + j) % n] for j in range(n)]


def _merge_groups(flat: list[float], min_sep: float) -> list[list[int]]:
    groups = [[j] for j in range(len(flat))]

    def span(group: list[int]) -> tuple[float, float]:
        centre = sum(flat[j] for j in group) / len(group)
        half = (len(group) - 1) / 2 * min_sep
        return centre - half, centre + half

    merged = True
    while merged:
        merged = False
        for g in range(len(groups) - 1):
            if span(groups[g + 1])[0] - span(groups[g])[1] < min_sep - 1e-9:
                groups[g:g + 2] = [groups[g] + groups[g + 1]]
                merged = True
                break
    return groups


@functools.lru_cache(maxsize=64)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The bundled DejaVu font at ``size`` pixels; PIL's default font if it is missing."""
    path = FONT_BOLD if bold and FONT_BOLD.is_file() else FONT_REGULAR
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        try:
            return ImageFont.load_default(size)
        except TypeError:  # Pillow < 10.1
            return ImageFont.load_default()


def has_glyph_font() -> bool:
    return FONT_REGULAR.is_file()


def point_glyph(key: str) -> str:
    return POINT_GLYPHS[key] if has_glyph_font() else POINT_ABBREV[key]


def retrograde_mark() -> str:
    return RETROGRADE if has_glyph_font() else "R"


def sign_glyph(sign: str) -> str:
    return SIGN_GLYPHS[sign] if has_glyph_font() else sign[:2]
