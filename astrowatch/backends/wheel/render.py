"""Drawing the natal-chart wheel with Pillow (supersampled, then downscaled with Lanczos).

Everything is deterministic: the same chart and texts give the same pixels on every machine
(bundled DejaVu font, a fixed star field, no clock, no randomness from outside).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from astrowatch.backends.wheel.layout import (
    ASPECT_COLOURS,
    BACKGROUND_CENTRE,
    BACKGROUND_EDGE,
    DISC,
    ELEMENT_FILL,
    ELEMENT_GLYPH,
    GOLD,
    GOLD_DIM,
    INNER_DISC,
    POINT_COLOURS,
    R_DEGREE,
    R_GLYPH,
    R_HOUSE_IN,
    R_HOUSE_OUT,
    R_OUT,
    R_RETRO,
    R_SIGN_IN,
    R_TICK_IN,
    SUPERSAMPLE,
    TEXT,
    TEXT_DIM,
    Colour,
    Geometry,
    chart_asc,
    chart_mc,
    drawn_points,
    font,
    point_glyph,
    retrograde_mark,
    sign_glyph,
    spread_longitudes,
)
from astrowatch.chart.model import SIGN_ELEMENT, SIGNS, Chart

STAR_SEED = 20240621


@dataclass(frozen=True)
class WheelText:
    """Texts drawn on the wheel, already in the wanted language."""

    title: str
    subtitle: str = ""
    elements: list[tuple[str, str]] = field(default_factory=list)  # (element, "Feu · 4")
    aspects: list[tuple[str, str]] = field(default_factory=list)  # (kind, "Trigone")


def draw_wheel(chart: Chart, size: int, text: WheelText) -> Image.Image:
    """Render ``chart`` as a ``size`` x ``size`` RGB image."""
    width = size * SUPERSAMPLE
    geo = Geometry.for_canvas(width, chart_asc(chart))
    img = _background(width)
    _star_field(img, geo)
    draw = ImageDraw.Draw(img, "RGBA")
    r_aspect = R_HOUSE_IN if _has_houses(chart) else R_HOUSE_OUT
    _zodiac(draw, geo)
    _houses(draw, geo, chart)
    _circle(draw, geo, r_aspect, fill=INNER_DISC, outline=GOLD_DIM, width=1.2)
    _aspects(draw, geo, chart, r_aspect)
    _angles(draw, geo, chart, r_aspect)
    _planets(draw, geo, chart, r_aspect)
    _titles(draw, geo, text)
    _legends(draw, geo, text)
    return img.resize((size, size), Image.Resampling.LANCZOS)


# -- background ------------------------------------------------------------------------------
def _background(width: int) -> Image.Image:
    """A dark radial gradient, lighter behind the wheel."""
    y, x = np.mgrid[0:width, 0:width].astype(np.float32)
    d = np.hypot(x - width / 2, y - width * 0.55) / (width * 0.72)
    t = np.clip(d, 0.0, 1.0)[..., None] ** 1.3
    centre = np.array(BACKGROUND_CENTRE, np.float32)
    edge = np.array(BACKGROUND_EDGE, np.float32)
    rgb = centre * (1 - t) + edge * t
    return Image.fromarray(np.round(rgb).astype(np.uint8))


def _star_field(img: Image.Image, geo: Geometry) -> None:
    rng = random.Random(STAR_SEED)
    draw = ImageDraw.Draw(img, "RGBA")
    for _ in range(320):
        x, y = rng.random() * geo.width, rng.random() * geo.width
        r = (0.4 + rng.random() ** 3 * 1.6) * geo.unit
        alpha = int(70 + rng.random() * 150)
        tint = rng.choice(((255, 255, 255), (255, 236, 200), (200, 220, 255)))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(*tint, alpha))


# -- primitives ------------------------------------------------------------------------------
def _circle(draw: ImageDraw.ImageDraw, geo: Geometry, frac: float, *, fill: Colour | None = None,
            outline: Colour | None = None, width: float = 1.0) -> None:
    r = frac * geo.radius
    box = (geo.cx - r, geo.cy - r, geo.cx + r, geo.cy + r)
    draw.ellipse(box, fill=fill, outline=outline, width=geo.px(width) if outline else 0)


def _radial(draw: ImageDraw.ImageDraw, geo: Geometry, lon: float, r0: float, r1: float,
            colour: tuple[int, ...], width: float) -> None:
    draw.line([geo.xy(lon, r0), geo.xy(lon, r1)], fill=colour, width=geo.px(width))


def _sector(geo: Geometry, lon0: float, lon1: float, r0: float, r1: float) -> list[tuple[float, float]]:
    steps = max(2, int(abs(lon1 - lon0) * 2))
    lons = [lon0 + (lon1 - lon0) * i / steps for i in range(steps + 1)]
    return [geo.xy(lon, r1) for lon in lons] + [geo.xy(lon, r0) for lon in reversed(lons)]


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: float,
           colour: tuple[int, ...], *, bold: bool = False, halo: float = 0.0, anchor: str = "mm") -> None:
    f = font(max(6, round(size)), bold)
    kwargs: dict[str, Any] = {"stroke_width": max(1, round(halo)), "stroke_fill": DISC} if halo else {}
    draw.text(xy, text, font=f, fill=colour, anchor=anchor, **kwargs)


# -- rings -----------------------------------------------------------------------------------
def _zodiac(draw: ImageDraw.ImageDraw, geo: Geometry) -> None:
    _circle(draw, geo, R_OUT, fill=DISC)
    for i, sign in enumerate(SIGNS):
        element = SIGN_ELEMENT[sign]
        poly = _sector(geo, i * 30.0, (i + 1) * 30.0, R_SIGN_IN, R_OUT)
        draw.polygon(poly, fill=(*ELEMENT_FILL[element], 185))
        mid = geo.xy(i * 30.0 + 15.0, (R_SIGN_IN + R_OUT) / 2)
        _label(draw, mid, sign_glyph(sign), 0.088 * geo.radius, ELEMENT_GLYPH[element], halo=geo.unit * 1.2)
    for deg in range(360):
        length = 0.032 if deg % 10 == 0 else 0.022 if deg % 5 == 0 else 0.012
        _radial(draw, geo, deg, R_TICK_IN, R_TICK_IN + length, (*GOLD_DIM, 220), 0.8)
    for i in range(12):
        _radial(draw, geo, i * 30.0, R_TICK_IN, R_OUT, GOLD, 1.4)
    for frac, width in ((R_OUT, 2.4), (R_SIGN_IN, 1.4), (R_TICK_IN, 1.0)):
        _circle(draw, geo, frac, outline=GOLD, width=width)
    _circle(draw, geo, R_OUT + 0.018, outline=GOLD_DIM, width=0.8)


def _has_houses(chart: Chart) -> bool:
    return sorted(h.number for h in chart.houses) == list(range(1, 13))


def _houses(draw: ImageDraw.ImageDraw, geo: Geometry, chart: Chart) -> None:
    if not chart.houses:
        return
    cusps = {h.number: h.longitude % 360 for h in chart.houses}
    for number, lon in cusps.items():
        angular = number in (1, 4, 7, 10)
        colour = (*GOLD, 230) if angular else (*GOLD_DIM, 150)
        _radial(draw, geo, lon, R_HOUSE_IN, R_TICK_IN, colour, 2.0 if angular else 1.0)
    if not _has_houses(chart):
        return
    _circle(draw, geo, R_HOUSE_OUT, outline=GOLD_DIM, width=1.2)
    for number in range(1, 13):
        start, end = cusps[number], cusps[number % 12 + 1]
        mid = start + ((end - start) % 360) / 2
        xy = geo.xy(mid, (R_HOUSE_IN + R_HOUSE_OUT) / 2)
        _label(draw, xy, str(number), 0.042 * geo.radius, TEXT_DIM)


def _aspects(draw: ImageDraw.ImageDraw, geo: Geometry, chart: Chart, r_aspect: float) -> None:
    for aspect in sorted(chart.aspects, key=lambda a: -a.orb):  # tightest drawn last, on top
        p1, p2 = chart.points.get(aspect.p1), chart.points.get(aspect.p2)
        if not aspect.is_major or p1 is None or p2 is None:
            continue
        tight = max(0.0, 1.0 - aspect.orb / 8.0)
        colour = (*ASPECT_COLOURS[aspect.kind], int(120 + 110 * tight))
        ends = [geo.xy(p1.longitude, r_aspect * 0.985), geo.xy(p2.longitude, r_aspect * 0.985)]
        draw.line(ends, fill=colour, width=geo.px(1.0 + 1.6 * tight))


def _angles(draw: ImageDraw.ImageDraw, geo: Geometry, chart: Chart, r_aspect: float) -> None:
    """Ascendant/descendant and MC/IC axes, with outside labels (only those the chart gives)."""
    asc_known = chart.ascendant is not None or any(h.number == 1 for h in chart.houses)
    mc = chart_mc(chart)
    axes: list[tuple[str, float, bool]] = []
    if asc_known:
        axes += [("AC", geo.asc, True), ("DC", (geo.asc + 180) % 360, False)]
    if mc is not None:
        axes += [("MC", mc, True), ("IC", (mc + 180) % 360, False)]
    for name, lon, major in axes:
        _radial(draw, geo, lon, r_aspect, R_TICK_IN, GOLD, 2.6 if major else 1.6)
        if major:
            _radial(draw, geo, lon, R_OUT, R_OUT + 0.035, GOLD, 2.6)
            _arrow(draw, geo, lon)
        _angle_label(draw, geo, name, lon, major)


def _arrow(draw: ImageDraw.ImageDraw, geo: Geometry, lon: float) -> None:
    tip = geo.xy(lon, R_OUT + 0.06)
    left, right = geo.xy(lon - 1.6, R_OUT + 0.03), geo.xy(lon + 1.6, R_OUT + 0.03)
    draw.polygon([tip, left, right], fill=GOLD)


def _angle_label(draw: ImageDraw.ImageDraw, geo: Geometry, name: str, lon: float, major: bool) -> None:
    sign = SIGNS[int(lon // 30) % 12]
    text = f"{name} {int(lon % 30)}°{sign_glyph(sign)}"
    size = (0.045 if major else 0.036) * geo.radius
    f = font(max(6, round(size)), major)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=f, anchor="mm")
    a = geo.angle(lon)
    half = abs(math.cos(a)) * (right - left) / 2 + abs(math.sin(a)) * (bottom - top) / 2
    frac = R_OUT + 0.075 + half / geo.radius
    _label(draw, geo.xy(lon, frac), text, size, TEXT if major else TEXT_DIM, bold=major)


def _planets(draw: ImageDraw.ImageDraw, geo: Geometry, chart: Chart, r_aspect: float) -> None:
    keys = drawn_points(chart)
    true_lons = [chart.points[k].longitude % 360 for k in keys]
    shown = spread_longitudes(true_lons)
    for key, lon, disp in zip(keys, true_lons, shown, strict=True):
        colour = POINT_COLOURS[key]
        _radial(draw, geo, lon, R_TICK_IN - 0.035, R_TICK_IN, colour, 2.4)
        x, y = geo.xy(lon, r_aspect * 0.985)
        dot = 3.2 * geo.unit
        draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=colour)
        if abs((disp - lon + 180) % 360 - 180) > 0.3:
            draw.line([geo.xy(lon, R_TICK_IN - 0.035), geo.xy(disp, R_GLYPH + 0.05)],
                      fill=(*colour, 150), width=geo.px(1.0))
        _label(draw, geo.xy(disp, R_GLYPH), point_glyph(key), 0.085 * geo.radius, colour,
               halo=geo.unit * 2.0)
        degree = f"{int(lon % 30)}°"
        _label(draw, geo.xy(disp, R_DEGREE), degree, 0.04 * geo.radius, TEXT_DIM, halo=geo.unit * 1.5)
        if chart.points[key].retrograde:
            _label(draw, geo.xy(disp, R_RETRO), retrograde_mark(), 0.038 * geo.radius, (255, 128, 112),
                   halo=geo.unit * 1.5)


# -- texts -----------------------------------------------------------------------------------
def _titles(draw: ImageDraw.ImageDraw, geo: Geometry, text: WheelText) -> None:
    size = 0.055 * geo.width
    f = font(round(size), True)
    while size > 0.02 * geo.width and draw.textlength(text.title, font=f) > 0.9 * geo.width:
        size *= 0.9
        f = font(round(size), True)
    _label(draw, (geo.cx, 0.042 * geo.width), text.title, size, TEXT, bold=True)
    if text.subtitle:
        _label(draw, (geo.cx, 0.088 * geo.width), text.subtitle, 0.022 * geo.width, TEXT_DIM)


def _legends(draw: ImageDraw.ImageDraw, geo: Geometry, text: WheelText) -> None:
    line, size, sw = 0.029 * geo.width, 0.019 * geo.width, 0.014 * geo.width
    y0 = 0.975 * geo.width - line * (len(text.elements) - 1)
    for i, (element, label) in enumerate(text.elements):
        x, y = 0.03 * geo.width, y0 + i * line
        draw.rectangle((x, y - sw / 2, x + sw, y + sw / 2), fill=ELEMENT_FILL[element],
                       outline=ELEMENT_GLYPH[element], width=geo.px(1.0))
        _label(draw, (x + sw * 1.6, y), label, size, TEXT_DIM, anchor="lm")
    y0 = 0.975 * geo.width - line * (len(text.aspects) - 1)
    for i, (kind, label) in enumerate(text.aspects):
        x, y = 0.97 * geo.width, y0 + i * line
        draw.line([(x - sw * 2, y), (x, y)], fill=ASPECT_COLOURS[kind], width=geo.px(3.0))
        _label(draw, (x - sw * 2.6, y), label, size, TEXT_DIM, anchor="rm")
