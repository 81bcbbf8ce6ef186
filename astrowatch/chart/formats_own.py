"""astrowatch's own minimal form, ``"format": "astrowatch/1"`` (documented in docs/theme-format.md).

Meant for hand-written files and the upstream app: points by sign (English, abbreviated or
French), optional degree in sign or absolute longitude, house and retrograde flag; optional
houses, aspects and style. Unlike producer formats, an unknown *point name* is an error here
(it is most likely a typo); unknown top-level keys are ignored.
"""

from __future__ import annotations

from typing import Any

from astrowatch.chart.fields import (
    FORMAT_DOC,
    Ctx,
    angular_distance,
    as_dict,
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
from astrowatch.chart.model import MAJOR_ASPECTS, Aspect, Chart, House, Point

FORMAT_ID = "astrowatch/1"
POINT_NAMES = (
    "sun, moon, mercury, venus, mars, jupiter, saturn, uranus, neptune, pluto, chiron, ascendant, "
    "descendant, medium_coeli, imum_coeli, mean_node, true_node, south_node, mean_lilith"
)
_RESERVED = frozenset({"format", "user", "name", "style", "birth", "city", "lunar_phase", "lat", "lon",
                       "planets", "houses", "aspects"})


def looks_like_own(doc: dict[str, Any]) -> bool:
    return "planets" in doc or any(canonical_point(k) for k in doc if isinstance(k, str))


def check_format(doc: dict[str, Any], ctx: Ctx) -> None:
    value = doc.get("format")
    if value is None:
        return
    if not isinstance(value, str) or not value.startswith("astrowatch/"):
        raise ctx.at("format").error(f"unknown format {describe(value)} (expected {FORMAT_ID!r}; {FORMAT_DOC})")
    if value.split("/", 1)[1].split(".")[0] != "1":
        raise ctx.at("format").error(f"unsupported version {describe(value)}: this astrowatch reads {FORMAT_ID!r}")


def _point_name(key: Any, ctx: Ctx) -> str:
    name = canonical_point(key) if isinstance(key, str) else None
    if name is None:
        raise ctx.error(f"unknown point {describe(key)}", hint=f"use one of: {POINT_NAMES}")
    return name


def parse_point(raw: Any, name: str, ctx: Ctx) -> tuple[Point, bool]:
    """A point spec: ``"Leo"`` or ``{"sign", "degree" | "longitude", "house", "retrograde"}``.

    Returns the point and whether its longitude is approximate (sign only: 15° of the sign).
    """
    if isinstance(raw, str):
        raw = {"sign": raw}
    obj = as_dict(raw, ctx)
    sign = parse_sign(obj["sign"], ctx.at("sign")) if obj.get("sign") is not None else None
    longitude = opt_number(obj, "longitude", ctx)
    degree = opt_number(obj, "degree", ctx)
    point = build_point(name, ctx, sign=sign, longitude=longitude, degree=degree,
                        house=parse_house(obj.get("house"), ctx.at("house")),
                        retrograde=opt_bool(obj, "retrograde", ctx))
    return point, longitude is None and degree is None


def _point_specs(doc: dict[str, Any], ctx: Ctx) -> list[tuple[Any, Any, Ctx]]:
    """(name, spec, ctx) from top-level point keys and from ``planets`` (object or list)."""
    specs: list[tuple[Any, Any, Ctx]] = [(k, v, ctx.at(k)) for k, v in doc.items()
             if k not in _RESERVED and isinstance(k, str) and canonical_point(k)]
    planets = doc.get("planets")
    pctx = ctx.at("planets")
    if isinstance(planets, dict):
        specs += [(k, v, pctx.at(k)) for k, v in planets.items()]
    elif isinstance(planets, list):
        for i, item in enumerate(planets):
            obj = as_dict(item, pctx.at(i))
            specs.append((obj.get("name"), obj, pctx.at(i)))
    elif planets is not None:
        raise pctx.error(f"expected an object of points, got {describe(planets)}")
    return specs


def parse_points(doc: dict[str, Any], ctx: Ctx) -> tuple[dict[str, Point], list[str]]:
    points: dict[str, Point] = {}
    approximate: list[str] = []
    for key, spec, pctx in _point_specs(doc, ctx):
        name = _point_name(key, pctx)
        if spec is None:
            continue
        if name in points:
            raise pctx.error(f"{name} is given twice")
        points[name], approx = parse_point(spec, name, pctx)
        if approx:
            approximate.append(name)
    return points, approximate


def parse_houses(raw: Any, ctx: Ctx) -> list[House]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ctx.error(f"expected a list of houses, got {describe(raw)}")
    houses: dict[int, House] = {}
    for i, item in enumerate(raw):
        hctx = ctx.at(i)
        obj = as_dict(item, hctx)
        number = parse_house(obj.get("number"), hctx.at("number"))
        if number is None:
            raise hctx.error("house needs a 'number' (1..12)")
        if number in houses:
            raise hctx.error(f"house {number} is given twice")
        cusp, _ = parse_point({**obj, "house": None, "retrograde": None}, "house", hctx)
        houses[number] = House(number=number, sign=cusp.sign, longitude=cusp.longitude)
    return [houses[n] for n in sorted(houses)]


def parse_aspects(raw: Any, points: dict[str, Point], ctx: Ctx) -> list[Aspect]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ctx.error(f"expected a list of aspects, got {describe(raw)}")
    aspects = []
    for i, item in enumerate(raw):
        actx = ctx.at(i)
        obj = as_dict(item, actx)
        p1 = _point_name(obj.get("p1"), actx.at("p1"))
        p2 = _point_name(obj.get("p2"), actx.at("p2"))
        key = next((k for k in ("type", "kind", "aspect") if k in obj), "type")
        kind = aspect_kind(obj.get(key), actx.at(key))
        orb = opt_number(obj, "orb", actx)
        aspects.append(Aspect(p1=p1, p2=p2, kind=kind, orb=abs(orb) if orb is not None
                              else _computed_orb(kind, points.get(p1), points.get(p2))))
    return aspects


def _computed_orb(kind: str, a: Point | None, b: Point | None) -> float:
    """Distance from exact when the file gives no orb (0.0 when it cannot be computed)."""
    if a is None or b is None or kind not in MAJOR_ASPECTS:
        return 0.0
    return round(abs(angular_distance(a.longitude, b.longitude) - MAJOR_ASPECTS[kind]), 4)


def parse_own(doc: dict[str, Any], ctx: Ctx, *, user: str) -> Chart:
    check_format(doc, ctx)
    points, approximate = parse_points(doc, ctx)
    extra: dict[str, Any] = {}
    for key in ("name", "birth", "city", "lunar_phase"):
        value = opt_str(doc, key, ctx)
        if value:
            extra[key] = value
    for key in ("lat", "lon"):
        number = opt_number(doc, key, ctx)
        if number is not None:
            extra[key] = number
    if approximate:
        extra["approximate"] = approximate
    style = (opt_str(doc, "style", ctx) or "").strip() or None
    return Chart(
        user=user, points=points, houses=parse_houses(doc.get("houses"), ctx.at("houses")),
        aspects=parse_aspects(doc.get("aspects"), points, ctx.at("aspects")),
        style=style, source_format="astrowatch", extra=extra,
    )

