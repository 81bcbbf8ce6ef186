"""The one chart model every input format is parsed into.

Signs, elements and modalities use full English names ("Aries", "Fire", "Cardinal").
Point names are canonical lower-case keys: sun, moon, mercury, venus, mars, jupiter, saturn,
uranus, neptune, pluto, chiron, ascendant, descendant, medium_coeli, imum_coeli, mean_node,
true_node, south_node, mean_lilith.  Houses are numbered 1..12.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SIGNS = (
    "Aries", "Taurus", "Gemini", "Cancer", "Leo", "Virgo",
    "Libra", "Scorpio", "Sagittarius", "Capricorn", "Aquarius", "Pisces",
)
ELEMENTS = ("Fire", "Earth", "Air", "Water")
MODALITIES = ("Cardinal", "Fixed", "Mutable")
SIGN_ELEMENT = {s: ELEMENTS[i % 4] for i, s in enumerate(SIGNS)}
SIGN_MODALITY = {s: MODALITIES[i % 3] for i, s in enumerate(SIGNS)}
MAJOR_ASPECTS = {"conjunction": 0.0, "sextile": 60.0, "square": 90.0, "trine": 120.0, "opposition": 180.0}

PLANETS = ("sun", "moon", "mercury", "venus", "mars", "jupiter", "saturn", "uranus", "neptune", "pluto")
ANGLES = ("ascendant", "descendant", "medium_coeli", "imum_coeli")


@dataclass(frozen=True)
class Point:
    name: str  # canonical key, e.g. "sun", "ascendant"
    sign: str  # "Aries".."Pisces"
    longitude: float  # ecliptic longitude, 0 <= x < 360
    house: int | None = None  # 1..12, None when unknown
    retrograde: bool = False

    @property
    def element(self) -> str:
        return SIGN_ELEMENT[self.sign]

    @property
    def modality(self) -> str:
        return SIGN_MODALITY[self.sign]

    @property
    def degree_in_sign(self) -> float:
        return self.longitude % 30.0


@dataclass(frozen=True)
class House:
    number: int  # 1..12
    sign: str
    longitude: float  # cusp longitude


@dataclass(frozen=True)
class Aspect:
    p1: str  # canonical point key
    p2: str
    kind: str  # lower case: "conjunction", "trine", ...
    orb: float  # absolute distance from exact, degrees

    @property
    def is_major(self) -> bool:
        return self.kind in MAJOR_ASPECTS


@dataclass
class Chart:
    user: str
    points: dict[str, Point]
    houses: list[House] = field(default_factory=list)
    aspects: list[Aspect] = field(default_factory=list)
    dominant_element: str | None = None  # filled by the parser or computed with conventional weights
    dominant_modality: str | None = None
    style: str | None = None  # optional style requested by the file (own form)
    source_format: str = "unknown"  # "kerykeion", "kerykeion-chart", "astrologer-api", "immanuel", "astrowatch"
    extra: dict[str, Any] = field(default_factory=dict[str, Any])  # e.g. {"lunar_phase": "Waxing Crescent"}

    @property
    def sun(self) -> Point | None:
        return self.points.get("sun")

    @property
    def moon(self) -> Point | None:
        return self.points.get("moon")

    @property
    def ascendant(self) -> Point | None:
        return self.points.get("ascendant")
