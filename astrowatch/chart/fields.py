"""Typed field readers and name normalisation shared by the chart format parsers.

Every reader takes a :class:`Ctx` (source file + JSON path) so that an error names the file,
the field and the reason on one line, e.g.
``theme_gaby.json: sun.abs_pos: expected a number, got the string "abc"``.

Producers add fields across versions, so parsers only *read* the fields they use; those fields
must have the right type, everything else is ignored.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from astrowatch.chart.model import MAJOR_ASPECTS, SIGNS, House, Point
from astrowatch.core.errors import InputError

FORMAT_DOC = "see docs/theme-format.md"
_BOUNDARY_TOLERANCE = 0.01  # degrees: a sign label may disagree with a longitude this close to a cusp
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]{1,40}")


@dataclass(frozen=True)
class Ctx:
    """Where we are: the source name and a dotted JSON path (``subject.sun.abs_pos``)."""

    source: str
    path: str = ""

    def at(self, key: str | int) -> Ctx:
        if isinstance(key, int):
            return Ctx(self.source, f"{self.path}[{key}]")
        key = str(key)
        if not _PLAIN_KEY.fullmatch(key):  # hostile keys: keep the message short and on one line
            key = f"[{key[:30]!r}]" if len(key) <= 30 else f"[{key[:30]!r}...]"
            return Ctx(self.source, f"{self.path}{key}")
        return Ctx(self.source, f"{self.path}.{key}" if self.path else key)

    def error(self, reason: str, hint: str | None = None) -> InputError:
        where = f"{self.source}: {self.path}: " if self.path else f"{self.source}: "
        return InputError(where + reason, hint=hint)


def describe(value: Any) -> str:
    """A short, safe description of a JSON value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {text!r}"
    if isinstance(value, (int, float)):
        text = repr(value)
        return f"the number {text if len(text) <= 40 else text[:37] + '...'}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- primitive readers ---------------------------------------------------------------------


def as_dict(value: Any, ctx: Ctx) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ctx.error(f"expected an object, got {describe(value)}")
    return value


def as_number(value: Any, ctx: Ctx) -> float:
    """A finite JSON number (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ctx.error(f"expected a number, got {describe(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer with hundreds of digits
        number = math.inf
    if not math.isfinite(number):
        raise ctx.error(f"expected a finite number, got {describe(value)}")
    return number


def opt_number(obj: dict[str, Any], key: str, ctx: Ctx) -> float | None:
    value = obj.get(key)
    return None if value is None else as_number(value, ctx.at(key))


MAX_TEXT_BYTES = 200  # a display name, a city, a birth string: shown and logged, so bounded


def opt_str(obj: dict[str, Any], key: str, ctx: Ctx) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ctx.at(key).error(f"expected a string, got {describe(value)}")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise ctx.at(key).error(f"longer than {MAX_TEXT_BYTES} bytes (a name or place, not a text)")
    return value


def opt_bool(obj: dict[str, Any], key: str, ctx: Ctx) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ctx.at(key).error(f"expected true or false, got {describe(value)}")
    return value


def fold(text: str) -> str:
    """Case-, accent- and separator-insensitive key: ``"Gémeaux"`` -> ``"gemeaux"``, ``"True Node"`` -> ``"true_node"``.
    Names of signs, points and houses are folded dozens of times per chart: short ones are
    remembered (a bounded cache of short keys: a hostile file's long strings are not kept)."""
    return _fold_short(text) if len(text) <= _FOLD_CACHED_LEN else _fold(text)


_FOLD_CACHED_LEN = 64


def _fold(text: str) -> str:
    text = text.replace("œ", "oe").replace("Œ", "OE")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c) and c != "\ufe0f")
    return re.sub(r"[\s\-_.]+", "_", text.strip().casefold()).strip("_")


_fold_short = functools.lru_cache(maxsize=4096)(_fold)


# --- signs ---------------------------------------------------------------------------------

_FRENCH_SIGNS = (
    "Bélier", "Taureau", "Gémeaux", "Cancer", "Lion", "Vierge",
    "Balance", "Scorpion", "Sagittaire", "Capricorne", "Verseau", "Poissons",
)
_GLYPHS = "♈♉♊♋♌♍♎♏♐♑♒♓"
_SIGN_ALIASES: dict[str, str] = {}
for _i, _sign in enumerate(SIGNS):
    for _alias in (_sign, _sign[:3], _FRENCH_SIGNS[_i], _GLYPHS[_i]):
        _SIGN_ALIASES[fold(_alias)] = _sign


def parse_sign(value: Any, ctx: Ctx) -> str:
    """English (``Leo``), abbreviated (``Leo``, ``Sag``), French (``Lion``) or glyph -> ``"Leo"``."""
    if not isinstance(value, str):
        raise ctx.error(f"expected a zodiac sign name, got {describe(value)}")
    sign = _SIGN_ALIASES.get(fold(value))
    if sign is None:
        raise ctx.error(
            f"{value[:40]!r} is not a zodiac sign",
            hint="use an English name (Sagittarius), its abbreviation (Sag) or a French name (Sagittaire)",
        )
    return sign


def sign_of(longitude: float) -> str:
    return SIGNS[int(longitude // 30.0) % 12]


# --- houses --------------------------------------------------------------------------------

_HOUSE_WORDS = (
    "first", "second", "third", "fourth", "fifth", "sixth",
    "seventh", "eighth", "ninth", "tenth", "eleventh", "twelfth",
)
_HOUSE_ALIASES: dict[str, int] = {}
for _n, _word in enumerate(_HOUSE_WORDS, start=1):
    _suffix = {1: "st", 2: "nd", 3: "rd"}.get(_n, "th")
    for _alias in (_word, str(_n), f"{_n}{_suffix}", f"{_n}e", f"{_n}eme"):
        _HOUSE_ALIASES[_alias] = _n
_HOUSE_ALIASES["1er"] = 1


def parse_house(value: Any, ctx: Ctx) -> int | None:
    """``5``, ``"5"``, ``"Fifth_House"``, ``"5th House"``, ``"Maison 5"`` -> 5; null -> None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if 1 <= value <= 12 and float(value).is_integer():
            return int(value)
        raise ctx.error(f"house must be 1..12, got {describe(value)}")
    if isinstance(value, str):
        words = [w for w in fold(value).split("_") if w not in ("house", "maison", "casa")]
        if len(words) == 1 and words[0] in _HOUSE_ALIASES:
            return _HOUSE_ALIASES[words[0]]
        raise ctx.error(f"{value[:40]!r} is not a house (expected 1..12, 'Fifth_House' or '5th House')")
    raise ctx.error(f"expected a house number 1..12, got {describe(value)}")


def house_of(longitude: float, houses: list[House]) -> int | None:
    """The house that contains ``longitude``, from 12 cusps (None unless all 12 are known)."""
    cusps = sorted(houses, key=lambda h: h.number)
    if [h.number for h in cusps] != list(range(1, 13)):
        return None
    for i, house in enumerate(cusps):
        start, end = house.longitude, cusps[(i + 1) % 12].longitude
        span = (end - start) % 360.0
        if (longitude - start) % 360.0 < span:
            return house.number
    return None


# --- points --------------------------------------------------------------------------------

_POINT_ALIASES: dict[str, str] = {
    "sun": "sun", "moon": "moon", "mercury": "mercury", "venus": "venus", "mars": "mars",
    "jupiter": "jupiter", "saturn": "saturn", "uranus": "uranus", "neptune": "neptune",
    "pluto": "pluto", "chiron": "chiron",
    "ascendant": "ascendant", "asc": "ascendant", "ac": "ascendant",
    "descendant": "descendant", "desc": "descendant", "dsc": "descendant", "dc": "descendant",
    "medium_coeli": "medium_coeli", "mc": "medium_coeli", "midheaven": "medium_coeli",
    "imum_coeli": "imum_coeli", "ic": "imum_coeli",
    "mean_node": "mean_node", "north_node": "mean_node", "mean_north_node": "mean_node",
    "mean_north_lunar_node": "mean_node",
    "true_node": "true_node", "true_north_node": "true_node", "true_north_lunar_node": "true_node",
    "south_node": "south_node", "mean_south_node": "south_node", "true_south_node": "south_node",
    "mean_south_lunar_node": "south_node", "true_south_lunar_node": "south_node",
    "mean_lilith": "mean_lilith", "lilith": "mean_lilith", "black_moon_lilith": "mean_lilith",
    # French names, for hand-written files from the upstream app
    "soleil": "sun", "lune": "moon", "mercure": "mercury", "saturne": "saturn", "pluton": "pluto",
    "milieu_du_ciel": "medium_coeli", "fond_du_ciel": "imum_coeli",
    "noeud_nord": "mean_node", "noeud_sud": "south_node", "lune_noire": "mean_lilith",
}


def canonical_point(name: str) -> str | None:
    """Canonical key for a producer's point name (``"True_North_Lunar_Node"`` -> ``"true_node"``)."""
    return _POINT_ALIASES.get(fold(name))


def build_point(
    name: str,
    ctx: Ctx,
    *,
    sign: str | None = None,
    longitude: float | None = None,
    degree: float | None = None,
    house: int | None = None,
    retrograde: bool | None = None,
) -> Point:
    """Validate and complete one point: longitude from sign + degree, or sign from longitude.

    ``sign`` must already be canonical. With a sign but no degree at all the point sits at
    15° of its sign; callers that allow this record it as approximate.
    """
    if longitude is not None:
        if not 0.0 <= longitude < 360.0:
            raise ctx.error(f"longitude {longitude:g} is out of range (0 <= longitude < 360)")
        computed = sign_of(longitude)
        if sign is not None and sign != computed and not _near_cusp(longitude):
            raise ctx.error(f"sign {sign} does not match longitude {longitude:g} (which is in {computed})")
        sign = sign or computed
    elif sign is not None:
        if degree is not None and not 0.0 <= degree < 30.0:
            raise ctx.error(f"degree {degree:g} is out of range (0 <= degree in sign < 30)")
        longitude = SIGNS.index(sign) * 30.0 + (15.0 if degree is None else degree)
    else:
        raise ctx.error("a point needs a sign or a longitude")
    return Point(name=name, sign=sign, longitude=longitude, house=house, retrograde=bool(retrograde))


def _near_cusp(longitude: float) -> bool:
    offset = longitude % 30.0
    return min(offset, 30.0 - offset) < _BOUNDARY_TOLERANCE


# --- aspects -------------------------------------------------------------------------------

_ASPECT_ALIASES = {
    "conjonction": "conjunction", "trigone": "trine", "carre": "square", "quadrature": "square",
    "opposition": "opposition", "sextile": "sextile",
}


def aspect_kind(value: Any, ctx: Ctx) -> str:
    """Lower-case aspect name (``"Trine"`` -> ``"trine"``; French majors are translated)."""
    if not isinstance(value, str) or not value.strip() or len(value) > 40:
        raise ctx.error(f"expected an aspect name such as 'trine', got {describe(value)}")
    key = fold(value)
    return _ASPECT_ALIASES.get(key, key.replace("_", "-"))


def kind_from_angle(angle: float) -> str | None:
    """``120.0`` -> ``"trine"`` for the five major aspects, else None."""
    for kind, degrees in MAJOR_ASPECTS.items():
        if abs(angle - degrees) < 1e-6:
            return kind
    return None


def angular_distance(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return 360.0 - d if d > 180.0 else d
