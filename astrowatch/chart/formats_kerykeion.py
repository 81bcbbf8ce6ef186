"""kerykeion subject dumps (v4, v5, v6), kerykeion chart data, and Astrologer API responses.

Shapes (see docs/theme-format.md): a *subject* has one object per point at the top level
(``sun``, ``ascendant``, ``true_north_lunar_node``...; ``null`` when inactive) and
``first_house`` .. ``twelfth_house`` cusps. Each point gives ``sign`` (``"Leo"``), ``position``
(degrees in sign), ``abs_pos`` (0-360), ``house`` (``"Fifth_House"``) and ``retrograde``.
*Chart data* wraps a subject with ``aspects`` and element/quality distributions; the
Astrologer API wraps either in ``{"status": "OK", ...}``.
"""

from __future__ import annotations

from typing import Any

from astrowatch.chart.dominant import pick
from astrowatch.chart.fields import (
    Ctx,
    as_dict,
    as_number,
    aspect_kind,
    build_point,
    canonical_point,
    describe,
    opt_bool,
    opt_number,
    opt_str,
    parse_house,
    parse_sign,
)
from astrowatch.chart.model import ELEMENTS, MODALITIES, Aspect, Chart, House, Point

# Top-level subject keys -> canonical point, in order of preference (true nodes before mean).
SUBJECT_POINT_KEYS: tuple[tuple[str, str], ...] = (
    ("sun", "sun"), ("moon", "moon"), ("mercury", "mercury"), ("venus", "venus"),
    ("mars", "mars"), ("jupiter", "jupiter"), ("saturn", "saturn"), ("uranus", "uranus"),
    ("neptune", "neptune"), ("pluto", "pluto"), ("chiron", "chiron"),
    ("ascendant", "ascendant"), ("descendant", "descendant"),
    ("medium_coeli", "medium_coeli"), ("imum_coeli", "imum_coeli"),
    ("mean_lilith", "mean_lilith"),
    ("mean_node", "mean_node"), ("mean_north_lunar_node", "mean_node"),  # v4 / v5+
    ("true_node", "true_node"), ("true_north_lunar_node", "true_node"),
    ("true_south_lunar_node", "south_node"), ("true_south_node", "south_node"),
    ("mean_south_lunar_node", "south_node"), ("mean_south_node", "south_node"),
)
HOUSE_KEYS = (
    "first_house", "second_house", "third_house", "fourth_house", "fifth_house", "sixth_house",
    "seventh_house", "eighth_house", "ninth_house", "tenth_house", "eleventh_house", "twelfth_house",
)
# House systems whose 1st and 10th cusps are the Ascendant and Midheaven.
_QUADRANT_SYSTEMS = frozenset("PKORCBTUY")
_SUBJECT_MARKERS = ("zodiac_type", "houses_system_identifier", "iso_formatted_utc_datetime")
_DUAL_CHART_TYPES = ("Transit", "Synastry", "DualReturnChart", "Return")


def looks_like_subject(doc: dict[str, Any]) -> bool:
    """True if some point or house is a kerykeion point object, or kerykeion's settings are there."""
    if any(key in doc for key in _SUBJECT_MARKERS):
        return True
    for key in (*(k for k, _ in SUBJECT_POINT_KEYS), *HOUSE_KEYS):
        value = doc.get(key)
        if isinstance(value, dict) and ("abs_pos" in value or "position" in value or "sign_num" in value):
            return True
    return False


def parse_point(raw: Any, name: str, ctx: Ctx) -> Point:
    obj = as_dict(raw, ctx)
    sign = parse_sign(obj["sign"], ctx.at("sign")) if obj.get("sign") is not None else None
    longitude = opt_number(obj, "abs_pos", ctx)
    degree = opt_number(obj, "position", ctx)
    if degree is None:
        degree = opt_number(obj, "pos", ctx)  # kerykeion 2.x / 3.x
    if longitude is None and (sign is None or degree is None):
        raise ctx.error("needs 'abs_pos', or 'sign' with 'position'")
    return build_point(
        name, ctx, sign=sign, longitude=longitude, degree=degree,
        house=parse_house(obj.get("house"), ctx.at("house")),
        retrograde=opt_bool(obj, "retrograde", ctx),
    )


def parse_houses(doc: dict[str, Any], ctx: Ctx) -> list[House]:
    houses = []
    for number, key in enumerate(HOUSE_KEYS, start=1):
        if doc.get(key) is None:
            continue
        cusp = parse_point(doc[key], "house", ctx.at(key))
        houses.append(House(number=number, sign=cusp.sign, longitude=cusp.longitude))
    return houses


def parse_points(doc: dict[str, Any], ctx: Ctx) -> dict[str, Point]:
    points: dict[str, Point] = {}
    for key, name in SUBJECT_POINT_KEYS:
        if name in points or doc.get(key) is None:
            continue
        points[name] = parse_point(doc[key], name, ctx.at(key))
    return points


def _derive_angles(doc: dict[str, Any], points: dict[str, Point], houses: list[House]) -> None:
    """Old dumps have no ``ascendant``/``medium_coeli``: take them from the 1st/10th cusps."""
    system = doc.get("houses_system_identifier", "P")
    if not isinstance(system, str) or system not in _QUADRANT_SYSTEMS:
        return
    cusps = {h.number: h for h in houses}
    for name, number in (("ascendant", 1), ("medium_coeli", 10)):
        if name not in points and number in cusps:
            cusp = cusps[number]
            points[name] = Point(name=name, sign=cusp.sign, longitude=cusp.longitude, house=number)


def subject_extras(doc: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for key, target in (("name", "name"), ("city", "city"), ("nation", "nation"),
                        ("houses_system_name", "house_system")):
        value = opt_str(doc, key, ctx)
        if value:
            extra[target] = value
    birth = opt_str(doc, "iso_formatted_local_datetime", ctx) or _birth_from_parts(doc)
    if birth:
        extra["birth"] = birth
    tz_name = doc.get("tz_str")
    if isinstance(tz_name, str) and tz_name:
        extra["tz"] = tz_name
    for key, target in (("lat", "lat"), ("lng", "lon")):
        value = doc.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            extra[target] = float(value)  # informational: a producer's odd value is not an error
    phase = doc.get("lunar_phase")
    if isinstance(phase, dict):
        name = opt_str(phase, "moon_phase_name", ctx.at("lunar_phase"))
        if name:
            extra["lunar_phase"] = name
    diurnal = opt_bool(doc, "is_diurnal", ctx)
    if diurnal is not None:
        extra["diurnal"] = diurnal
    return extra


def _birth_from_parts(doc: dict[str, Any]) -> str | None:
    parts = [doc.get(k) for k in ("year", "month", "day", "hour", "minute")]
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        return None
    year, month, day, hour, minute = parts
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}"


def parse_subject(doc: Any, ctx: Ctx, *, user: str, source_format: str = "kerykeion") -> Chart:
    doc = as_dict(doc, ctx)
    points = parse_points(doc, ctx)
    houses = parse_houses(doc, ctx)
    _derive_angles(doc, points, houses)
    return Chart(user=user, points=points, houses=houses, source_format=source_format,
                 extra=subject_extras(doc, ctx))


def parse_aspects(raw: Any, ctx: Ctx) -> list[Aspect]:
    """A list of kerykeion aspects, or an aspects model holding ``relevant_aspects``."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        key = "relevant_aspects" if "relevant_aspects" in raw else "all_aspects"
        return parse_aspects(raw.get(key), ctx.at(key))
    if not isinstance(raw, list):
        raise ctx.error(f"expected a list of aspects, got {describe(raw)}")
    aspects = []
    for i, item in enumerate(raw):
        aspect = _parse_aspect(item, ctx.at(i))
        if aspect is not None:
            aspects.append(aspect)
    return aspects


def _parse_aspect(raw: Any, ctx: Ctx) -> Aspect | None:
    obj = as_dict(raw, ctx)
    names = []
    for key in ("p1_name", "p2_name"):
        value = obj.get(key)
        if not isinstance(value, str):
            raise ctx.at(key).error(f"expected a point name, got {describe(value)}")
        names.append(canonical_point(value))
    p1, p2 = names
    if p1 is None or p2 is None or p1 == p2:
        return None  # an aspect to a point the model does not carry (Ceres, Vertex...)
    key = "orbit" if "orbit" in obj else "orb"
    if obj.get(key) is None:
        raise ctx.error("aspect has no 'orbit'")
    orb = abs(as_number(obj[key], ctx.at(key)))
    return Aspect(p1=p1, p2=p2, kind=aspect_kind(obj.get("aspect"), ctx.at("aspect")), orb=orb)


def distribution_dominants(doc: dict[str, Any], ctx: Ctx) -> tuple[str | None, str | None]:
    """Dominants from ``element_distribution`` / ``quality_distribution`` when present."""
    result: list[str | None] = []
    for key, names in (("element_distribution", ELEMENTS), ("quality_distribution", MODALITIES)):
        raw = doc.get(key)
        if raw is None:
            result.append(None)
            continue
        dist = as_dict(raw, ctx.at(key))
        scores = {n: opt_number(dist, n.lower(), ctx.at(key)) or 0.0 for n in names}
        result.append(pick(scores, names))
    return result[0], result[1]


def parse_chart_data(doc: Any, ctx: Ctx, *, user: str, source_format: str = "kerykeion-chart") -> Chart:
    doc = as_dict(doc, ctx)
    chart_type = doc.get("chart_type")
    if chart_type in _DUAL_CHART_TYPES or "first_subject" in doc:
        raise ctx.error(
            f"a {chart_type or 'two-subject'} chart describes two charts, not one natal chart",
            hint="export the natal chart data of one person",
        )
    if doc.get("subject") is None:
        raise ctx.error("chart data has no 'subject'")
    chart = parse_subject(doc["subject"], ctx.at("subject"), user=user, source_format=source_format)
    chart.aspects = parse_aspects(doc.get("aspects"), ctx.at("aspects"))
    chart.dominant_element, chart.dominant_modality = distribution_dominants(doc, ctx)
    return chart


def parse_astrologer(doc: dict[str, Any], ctx: Ctx, *, user: str) -> Chart:
    """``{"status": "OK", "chart_data" | "subject" | "data": {...}, "aspects"?: [...]}``."""
    status = doc.get("status")
    if status is not None and (not isinstance(status, str) or status.upper() != "OK"):
        raise ctx.error(f"the Astrologer API answered with status {describe(status)}, not a chart")
    if doc.get("chart_data") is not None:
        return parse_chart_data(doc["chart_data"], ctx.at("chart_data"), user=user,
                                source_format="astrologer-api")
    key = "subject" if doc.get("subject") is not None else "data"
    if doc.get(key) is None:
        raise ctx.error("Astrologer API response has no 'subject', 'data' or 'chart_data'")
    chart = parse_subject(doc[key], ctx.at(key), user=user, source_format="astrologer-api")
    chart.aspects = parse_aspects(doc.get("aspects"), ctx.at("aspects"))
    return chart
