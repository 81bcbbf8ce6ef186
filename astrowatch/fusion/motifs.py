"""From a chart to an ordered list of image motifs.

:func:`read_chart` picks what the picture is made of (a :class:`Reading`): the Sun sign's
central figure, the Moon sign's mood and light, the Ascendant's setting, the dominant element's
palette and materials, the dominant modality's composition, the tightest major aspects as
object pairs, the emphasised house's detail and a retrograde detail.  :func:`build_motifs`
turns it into :class:`Motif` items in prompt order, each with an importance (``priority``)
that compaction uses to decide what to shorten or drop first.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from astrowatch.chart.dominant import compute_dominants
from astrowatch.chart.model import ELEMENTS, MAJOR_ASPECTS, MODALITIES, PLANETS, Aspect, Chart, Point
from astrowatch.fusion.data import Fragment, Style, correspondences, fragment

# Importance (higher is kept longer).  The figure is essential: it is never dropped.
PRIORITY = {
    "figure": 100, "prefix": 95, "mood": 90, "setting": 85, "palette": 80, "composition": 70,
    "materials": 65, "suffix": 45, "detail": 40, "retrograde": 35, "colours": 30, "quality": 20,
}
ASPECT_PRIORITY = (72, 60, 55, 50, 45)  # the tightest aspect ranks above the composition
ASPECT_ORDER = tuple(MAJOR_ASPECTS)  # conjunction, sextile, square, trine, opposition
ASPECT_POINTS = frozenset(PLANETS + ("chiron", "ascendant", "medium_coeli"))  # no nodes, no Lilith
RETRO_POINTS = PLANETS[2:]  # Mercury .. Pluto (the lights are never retrograde)


@dataclass(frozen=True)
class Motif:
    slot: str  # weight/priority family: "figure", "aspects", "quality"...
    key: str  # unique in a prompt: the slot, or "slot:index" ("aspects:0", "quality:1")
    text: str  # full prompt text (English)
    short: str | None = None
    priority: int = 0
    weight: float = 1.0
    essential: bool = False


@dataclass
class Reading:
    """What was read from the chart, for the prompt, the description and the summary."""

    chart: Chart
    style: Style
    figure: Fragment
    element: str | None
    modality: str | None
    mood: Fragment | None = None
    setting: Fragment | None = None
    colours: Fragment | None = None
    palette: Fragment | None = None
    materials: Fragment | None = None
    composition: Fragment | None = None
    aspects: list[tuple[Aspect, Fragment]] = field(default_factory=list)
    house: tuple[int, int, Fragment] | None = None  # (number, planets in it, detail)
    retrograde: list[str] = field(default_factory=list)
    retro_detail: Fragment | None = None


def _sign_fragment(point: Point | None, kind: str) -> Fragment | None:
    if point is None:
        return None
    entry = correspondences()["signs"].get(point.sign)
    return fragment(entry[kind]) if entry and kind in entry else None


def dominants(chart: Chart) -> tuple[str | None, str | None]:
    """The file's dominant element/modality when valid, else computed with conventional weights."""
    element = (chart.dominant_element or "").strip().capitalize() or None
    modality = (chart.dominant_modality or "").strip().capitalize() or None
    computed = compute_dominants(chart.points)
    if element not in ELEMENTS:
        element = computed[0]
    if modality not in MODALITIES:
        modality = computed[1]
    return element, modality


def tightest_aspects(chart: Chart, limit: int) -> list[Aspect]:
    """The ``limit`` major aspects with the smallest orb between planets, Chiron, Ascendant or
    Midheaven (the nodes and Lilith make no picture), one per pair of points."""
    candidates = [a for a in chart.aspects
                  if a.is_major and a.p1 != a.p2 and math.isfinite(a.orb)
                  and a.p1 in ASPECT_POINTS and a.p2 in ASPECT_POINTS]
    candidates.sort(key=lambda a: (abs(a.orb), ASPECT_ORDER.index(a.kind), a.p1, a.p2))
    chosen: list[Aspect] = []
    pairs: set[frozenset[str]] = set()
    for aspect in candidates:
        pair = frozenset((aspect.p1, aspect.p2))
        if pair not in pairs and len(chosen) < limit:
            pairs.add(pair)
            chosen.append(aspect)
    return chosen


def point_entry(key: str) -> Mapping[str, Any]:
    points: Mapping[str, Mapping[str, Any]] = correspondences()["points"]
    return points.get(key) or points["default"]


def aspect_fragment(aspect: Aspect) -> Fragment:
    template = correspondences()["aspects"][aspect.kind]["motif"]
    objects = {"a": fragment(point_entry(aspect.p1)["object"]),
               "b": fragment(point_entry(aspect.p2)["object"])}
    return fragment(template, fill=objects)


def emphasised_house(chart: Chart) -> tuple[int, int] | None:
    """(house, planets in it): the fullest house with two planets or more, else the Sun's."""
    counts = Counter(p.house for k, p in chart.points.items()
                     if k in PLANETS and p.house is not None and 1 <= p.house <= 12)
    sun_house = chart.sun.house if chart.sun and chart.sun.house in counts else None
    if counts:
        best = max(sorted(counts), key=lambda h: (counts[h], h == sun_house))
        if counts[best] >= 2:
            return best, counts[best]
    return (sun_house, 1) if sun_house is not None else None


def read_chart(chart: Chart, style: Style) -> Reading:
    data = correspondences()
    element, modality = dominants(chart)
    figure = _sign_fragment(chart.sun, style.central) or fragment(data["default_figure"])
    reading = Reading(chart=chart, style=style, figure=figure, element=element, modality=modality)
    reading.mood = _sign_fragment(chart.moon, "mood")
    reading.setting = _sign_fragment(chart.ascendant, "setting")
    reading.colours = _sign_fragment(chart.sun, "colours")
    if element:
        reading.palette = fragment(data["elements"][element]["palette"])
        reading.materials = fragment(data["elements"][element]["materials"])
    if modality:
        reading.composition = fragment(data["modalities"][modality]["composition"])
    reading.aspects = [(a, aspect_fragment(a)) for a in tightest_aspects(chart, style.max_aspects)]
    house = emphasised_house(chart)
    if house is not None:
        reading.house = (house[0], house[1], fragment(data["houses"][house[0]]["detail"]))
    reading.retrograde = [k for k in RETRO_POINTS if k in chart.points and chart.points[k].retrograde]
    if reading.retrograde:
        reading.retro_detail = fragment(data["retrograde"])
    return reading


def _motif(slot: str, frag: Fragment | str | None, style: Style, *, key: str | None = None,
           priority: int | None = None) -> Motif | None:
    if frag is None or frag == "":
        return None
    text, short = (frag, None) if isinstance(frag, str) else (frag.prompt, frag.short)
    return Motif(slot=slot, key=key or slot, text=text, short=short,
                 priority=PRIORITY.get(slot, 0) if priority is None else priority,
                 weight=style.weights.get(slot, 1.0), essential=slot == "figure")


def build_motifs(reading: Reading) -> list[Motif]:
    """Positive-prompt motifs in prompt order."""
    style = reading.style
    items = [
        _motif("prefix", style.prefix, style),
        _motif("figure", reading.figure, style),
        _motif("mood", reading.mood, style),
        _motif("setting", reading.setting, style),
        _motif("palette", reading.palette, style),
        _motif("colours", reading.colours, style),
        _motif("materials", reading.materials, style),
        _motif("composition", reading.composition, style),
    ]
    for i, (_aspect, frag) in enumerate(reading.aspects):
        key = f"aspects:{i}"  # index into reading.aspects
        items.append(_motif("aspects", frag, style, key=key, priority=ASPECT_PRIORITY[i]))
    if reading.house is not None:
        items.append(_motif("detail", reading.house[2], style))
    items.append(_motif("retrograde", reading.retro_detail, style))
    items.append(_motif("suffix", style.suffix, style))
    for i, tag in enumerate(style.quality):
        items.append(_motif("quality", tag, style, key=f"quality:{i}", priority=PRIORITY["quality"] - i))
    return [m for m in items if m is not None]


def negative_motifs(style: Style) -> list[Motif]:
    """Negative-prompt terms, the first ones the most important."""
    return [Motif(slot="negative", key=f"negative:{i}", text=term, priority=1000 - i)
            for i, term in enumerate(style.negative)]
