"""The ``wheel`` astro backend: the natal chart drawn as a wheel with Pillow, on the CPU.

It is the default when no model and no WebUI are available, and :func:`render_wheel` also
gives the SDXL backends an init/style image.  Drawing lives in :mod:`.wheel_render`; this
module holds the backend and the texts (French or English).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from astrowatch.backends.base import AstroTask, Backend, Result
from astrowatch.backends.wheel.layout import drawn_points, point_glyph
from astrowatch.backends.wheel.render import WheelText, draw_wheel
from astrowatch.chart.model import ELEMENTS, PLANETS, Chart, Point
from astrowatch.core.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

__all__ = ["WheelBackend", "render_wheel", "wheel_description", "dominant_element"]

MIN_SIZE, MAX_SIZE = 256, 8192

SIGN_NAMES = {
    "fr": dict(zip(
        ("Aries", "Taurus", "Gemini", "Cancer", "Leo", "Virgo", "Libra", "Scorpio", "Sagittarius",
         "Capricorn", "Aquarius", "Pisces"),
        ("Bélier", "Taureau", "Gémeaux", "Cancer", "Lion", "Vierge", "Balance", "Scorpion",
         "Sagittaire", "Capricorne", "Verseau", "Poissons"), strict=True)),
}
ELEMENT_NAMES = {"fr": {"Fire": "Feu", "Earth": "Terre", "Air": "Air", "Water": "Eau"}}
ELEMENT_ARTICLE_FR = {"Fire": "le Feu", "Earth": "la Terre", "Air": "l'Air", "Water": "l'Eau"}
ASPECT_NAMES = {
    "fr": {"conjunction": "Conjonction", "sextile": "Sextile", "square": "Carré", "trine": "Trigone",
           "opposition": "Opposition"},
    "en": {"conjunction": "Conjunction", "sextile": "Sextile", "square": "Square", "trine": "Trine",
           "opposition": "Opposition"},
}
ASPECT_ORDER = ("conjunction", "sextile", "square", "trine", "opposition")
WORDS: dict[str, dict[str, Any]] = {
    "fr": {"sun": "Soleil", "moon": "Lune", "asc": "Ascendant", "in": "en", "house": "maison",
           "natal": "Thème natal", "wheel": "Roue du thème de {name}",
           "dominant": "Élément dominant : {element}.", "drawn": "Tracés : {items}.",
           "planet": ("planète", "planètes"), "houses": ("maison", "maisons"),
           "aspect": ("aspect majeur", "aspects majeurs"), "no_houses": "Maisons non fournies.",
           "colon": " : "},
    "en": {"sun": "Sun", "moon": "Moon", "asc": "Ascendant", "in": "in", "house": "house",
           "natal": "Natal chart", "wheel": "Chart wheel for {name}",
           "dominant": "Dominant element: {element}.", "drawn": "Drawn: {items}.",
           "planet": ("planet", "planets"), "houses": ("house", "houses"),
           "aspect": ("major aspect", "major aspects"), "no_houses": "Houses not given.",
           "colon": ": "},
}
# Conventional weights for the dominant element when the parser did not give one.
ELEMENT_WEIGHTS = {"sun": 2.0, "moon": 2.0, "ascendant": 2.0, "mercury": 1.0, "venus": 1.0, "mars": 1.0,
                   "jupiter": 1.0, "saturn": 1.0, "uranus": 0.5, "neptune": 0.5, "pluto": 0.5}


def sign_name(sign: str, language: str) -> str:
    return SIGN_NAMES.get(language, {}).get(sign, sign)


def element_name(element: str, language: str, *, article: bool = False) -> str:
    if language == "fr":
        return ELEMENT_ARTICLE_FR[element] if article else ELEMENT_NAMES["fr"][element]
    return element


def display_name(chart: Chart) -> str:
    name = str(chart.extra.get("name") or "").strip()
    if name:
        return name[:60]
    return chart.user[:1].upper() + chart.user[1:60]


def dominant_element(chart: Chart) -> str | None:
    """The parser's dominant element, else the one with the most weight (sun, moon, asc count 2)."""
    if chart.dominant_element in ELEMENTS:
        return chart.dominant_element
    scores = dict.fromkeys(ELEMENTS, 0.0)
    for key, weight in ELEMENT_WEIGHTS.items():
        point = chart.points.get(key)
        if point is not None:
            scores[point.element] += weight
    best = max(ELEMENTS, key=lambda e: (scores[e], -ELEMENTS.index(e)))
    return best if scores[best] > 0 else None


def _plural(n: int, forms: tuple[str, str]) -> str:
    return f"{n} {forms[0] if n == 1 else forms[1]}"


def _placement(label: str, point: Point, words: dict[str, Any], language: str, *, house: bool) -> str:
    text = f"{label} {words['in']} {sign_name(point.sign, language)}"
    if house and point.house:
        text += f" ({words['house']} {point.house})"
    return text


def wheel_description(chart: Chart, language: str = "fr") -> str:
    """A few sentences for the reviewer: Sun, Moon, Ascendant, dominant element, what is drawn."""
    words = WORDS.get(language, WORDS["en"])
    parts = []
    for key in ("sun", "moon"):
        point = chart.points.get(key)
        if point is not None:
            parts.append(_placement(words[key], point, words, language, house=True))
    if chart.ascendant is not None:
        parts.append(f"{words['asc']} {sign_name(chart.ascendant.sign, language)}")
    head = words["wheel"].format(name=display_name(chart))
    sentences = [f"{head}{words['colon']}{', '.join(parts)}." if parts else f"{head}."]
    element = dominant_element(chart)
    if element:
        sentences.append(words["dominant"].format(element=element_name(element, language, article=True)))
    sentences.append(_drawn_sentence(chart, words))
    return " ".join(sentences)


def _drawn_sentence(chart: Chart, words: dict[str, Any]) -> str:
    planets = sum(1 for k in drawn_points(chart) if k in PLANETS)
    aspects = sum(1 for a in chart.aspects if a.is_major and a.p1 in chart.points and a.p2 in chart.points)
    items = [_plural(planets, words["planet"])]
    if chart.houses:
        items.append(_plural(len(chart.houses), words["houses"]))
    items.append(_plural(aspects, words["aspect"]))
    sentence = words["drawn"].format(items=", ".join(items))
    return sentence if chart.houses else f"{sentence} {words['no_houses']}"


def wheel_text(chart: Chart, language: str = "fr") -> WheelText:
    """Title, subtitle and legends drawn on the image."""
    words = WORDS.get(language, WORDS["en"])
    bits = [words["natal"]]
    for key in ("sun", "moon"):
        point = chart.points.get(key)
        if point is not None:
            bits.append(f"{point_glyph(key)} {sign_name(point.sign, language)}")
    if chart.ascendant is not None:
        bits.append(f"AC {sign_name(chart.ascendant.sign, language)}")
    counts = dict.fromkeys(ELEMENTS, 0)
    for key in PLANETS:
        if key in chart.points:
            counts[chart.points[key].element] += 1
    elements = [(e, f"{element_name(e, language)} · {counts[e]}") for e in ELEMENTS]
    kinds = {a.kind for a in chart.aspects if a.is_major and a.p1 in chart.points and a.p2 in chart.points}
    names = ASPECT_NAMES.get(language, ASPECT_NAMES["en"])
    aspects = [(k, names[k]) for k in ASPECT_ORDER if k in kinds]
    return WheelText(title=display_name(chart), subtitle="  ·  ".join(bits), elements=elements,
                     aspects=aspects)


def render_wheel(chart: Chart, size: int = 1024, language: str = "fr") -> Image:
    """The chart wheel as a ``size`` x ``size`` RGB image (deterministic for a given chart)."""
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise InputError(f"wheel size {size} is out of range ({MIN_SIZE}..{MAX_SIZE})")
    return draw_wheel(chart, int(size), wheel_text(chart, language))


class WheelBackend(Backend):
    """Renders the natal chart wheel; no model, no GPU, no network."""

    name: ClassVar[str] = "wheel"
    kinds: ClassVar[frozenset[str]] = frozenset({"astro"})

    def settings_key(self) -> Any:
        return {"wheel_size": self.config.astro.wheel_size, "language": self.config.astro.language}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.config.astro.wheel_size}

    def generate(self, task: AstroTask) -> Result:
        size = _size_param(task.params.get("size", self.config.astro.wheel_size))
        language = self.config.astro.language
        task.cancel.check()
        image = render_wheel(task.chart, size, language)
        task.cancel.check()
        return Result(
            image=image, backend=self.name, model=None, params={"size": size}, seed=task.seed,
            description=wheel_description(task.chart, language),
        )


def _size_param(value: Any) -> int:
    try:
        size = float(value)
    except (TypeError, ValueError):
        size = float("nan")
    if isinstance(value, bool) or not size.is_integer() or not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"params.size: {value!r} must be a whole number of pixels in {MIN_SIZE}..{MAX_SIZE}")
    return int(size)
