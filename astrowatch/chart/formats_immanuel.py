"""immanuel's natal chart JSON (``json.dumps(natal, cls=ToJSON)``).

``objects`` is keyed by numeric ids (``"4000001"`` Sun, ``"3000001"`` Asc...); each object has a
``name``, ``longitude.raw``, ``sign {number, name}``, ``house {number, name}`` and
``movement.retrograde``. ``aspects`` is nested ``{id: {id: {active, passive, type, aspect, orb,
difference}}}`` with every aspect listed from both sides; ``difference.raw`` is the actual
distance from exact (``orb`` is only the allowed maximum). ``weightings.elements.fire`` is a
list of object ids.

Objects are named from their English ``name``; if none is recognisable (a localised chart),
from immanuel's standard ids.
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
    fold,
    kind_from_angle,
    opt_bool,
    parse_house,
    parse_sign,
)
from astrowatch.chart.model import ELEMENTS, MODALITIES, SIGNS, Aspect, Chart, House, Point

IMMANUEL_IDS = {
    4000001: "sun", 4000002: "moon", 4000003: "mercury", 4000004: "venus", 4000005: "mars",
    4000006: "jupiter", 4000007: "saturn", 4000008: "uranus", 4000009: "neptune", 4000010: "pluto",
    3000001: "ascendant", 3000002: "descendant", 3000003: "medium_coeli", 3000004: "imum_coeli",
    5000001: "chiron", 6000001: "mean_node", 6000002: "south_node", 6000003: "true_node",
    6000004: "south_node", 6000006: "mean_lilith",
}
_HOUSE_BASE = 2000000


def looks_like_immanuel(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("objects"), dict)


def _angle(raw: Any, ctx: Ctx) -> float | None:
    """immanuel angles are ``{"raw": 12.3, "formatted": ...}``; accept a bare number too."""
    if raw is None:
        return None
    if isinstance(raw, dict):
        return as_number(raw.get("raw"), ctx.at("raw"))
    return as_number(raw, ctx)


def _sign(raw: Any, ctx: Ctx) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, dict):
        number = raw.get("number")
        if isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= 12:
            return SIGNS[number - 1]
        return parse_sign(raw.get("name"), ctx.at("name"))
    return parse_sign(raw, ctx)


def _house(raw: Any, ctx: Ctx) -> int | None:
    if isinstance(raw, dict):
        if raw.get("number") is not None:
            return parse_house(raw["number"], ctx.at("number"))
        return parse_house(raw.get("name"), ctx.at("name"))
    return parse_house(raw, ctx)


def parse_object(obj: dict[str, Any], name: str, ctx: Ctx) -> Point:
    longitude = _angle(obj.get("longitude"), ctx.at("longitude"))
    degree = _angle(obj.get("sign_longitude"), ctx.at("sign_longitude"))
    sign = _sign(obj.get("sign"), ctx.at("sign"))
    if longitude is None and (sign is None or degree is None):
        raise ctx.error("needs 'longitude', or 'sign' with 'sign_longitude'")
    movement = obj.get("movement")
    retrograde = opt_bool(as_dict(movement, ctx.at("movement")), "retrograde", ctx.at("movement")) \
        if movement is not None else False
    return build_point(name, ctx, sign=sign, longitude=longitude, degree=degree,
                       house=_house(obj.get("house"), ctx.at("house")), retrograde=retrograde)


def _object_ids(key: str, obj: dict[str, Any]) -> list[str]:
    ids = [str(key)]
    if isinstance(obj.get("index"), int):
        ids.append(str(obj["index"]))
    return ids


def _names(objects: dict[str, Any], ctx: Ctx, *, by_id: bool) -> dict[str, str]:
    """Object key -> canonical point, from English names or (``by_id``) immanuel's ids."""
    names: dict[str, str] = {}
    for key, raw in objects.items():
        obj = as_dict(raw, ctx.at(key))
        if by_id:
            index = obj.get("index", key)
            canon = IMMANUEL_IDS.get(int(index)) if str(index).isdigit() else None
        else:
            label = obj.get("name")
            canon = canonical_point(label) if isinstance(label, str) else None
        if canon is not None:
            names[str(key)] = canon
    return names


def parse_objects(objects: dict[str, Any], ctx: Ctx) -> tuple[dict[str, Point], dict[str, str]]:
    """Points, plus a map from every object id to its canonical name (for aspects)."""
    names = _names(objects, ctx, by_id=False) or _names(objects, ctx, by_id=True)
    points: dict[str, Point] = {}
    ranks: dict[str, int] = {}
    ids: dict[str, str] = {}
    for key, canon in names.items():
        obj = objects[key]
        for ident in _object_ids(key, obj):
            ids[ident] = canon
        label = obj.get("name") if isinstance(obj.get("name"), str) else ""
        rank = 0 if fold(label).startswith("true") else 1  # true south node before mean
        if canon in points and rank >= ranks[canon]:
            continue
        points[canon] = parse_object(obj, canon, ctx.at(key))
        ranks[canon] = rank
    return points, ids


def parse_houses(raw: Any, ctx: Ctx) -> list[House]:
    if raw is None:
        return []
    houses = []
    for key, item in as_dict(raw, ctx).items():
        hctx = ctx.at(key)
        obj = as_dict(item, hctx)
        number = _house(obj, hctx)
        if number is None and str(key).isdigit() and 1 <= int(key) - _HOUSE_BASE <= 12:
            number = int(key) - _HOUSE_BASE
        if number is None:
            raise hctx.error("house has no number")
        cusp = parse_object({**obj, "house": None, "movement": None}, "house", hctx)
        houses.append(House(number=number, sign=cusp.sign, longitude=cusp.longitude))
    return sorted(houses, key=lambda h: h.number)


def parse_aspects(raw: Any, ids: dict[str, str], ctx: Ctx) -> list[Aspect]:
    if raw is None:
        return []
    aspects = []
    for outer, inner in as_dict(raw, ctx).items():
        for other, item in as_dict(inner, ctx.at(outer)).items():
            actx = ctx.at(outer).at(other)
            obj = as_dict(item, actx)
            p1 = ids.get(str(obj.get("active", outer)))
            p2 = ids.get(str(obj.get("passive", other)))
            if p1 is None or p2 is None or p1 == p2:
                continue
            aspects.append(Aspect(p1=p1, p2=p2, kind=_kind(obj, actx), orb=_orb(obj, actx)))
    return aspects


def _kind(obj: dict[str, Any], ctx: Ctx) -> str:
    if obj.get("aspect") is not None:
        kind = kind_from_angle(as_number(obj["aspect"], ctx.at("aspect")))
        if kind:
            return kind
    return aspect_kind(obj.get("type"), ctx.at("type"))


def _orb(obj: dict[str, Any], ctx: Ctx) -> float:
    if obj.get("difference") is not None:
        return abs(_angle(obj["difference"], ctx.at("difference")) or 0.0)
    if obj.get("orb") is not None:
        return abs(as_number(obj["orb"], ctx.at("orb")))
    raise ctx.error("aspect has neither 'difference' nor 'orb'")


def weighting_dominants(doc: dict[str, Any], ctx: Ctx) -> tuple[str | None, str | None]:
    """Dominants from ``weightings`` (number of objects per element / modality)."""
    raw = doc.get("weightings")
    if raw is None:
        return None, None
    weightings = as_dict(raw, ctx.at("weightings"))
    result = []
    for key, names in (("elements", ELEMENTS), ("modalities", MODALITIES)):
        wctx = ctx.at("weightings").at(key)
        groups = as_dict(weightings.get(key) or {}, wctx)
        scores = {}
        for name in names:
            members = groups.get(name.lower()) or []
            if not isinstance(members, list):
                raise wctx.at(name.lower()).error(f"expected a list of object ids, got {describe(members)}")
            scores[name] = float(len(members))
        result.append(pick(scores, names))
    return result[0], result[1]


def _coordinates(coordinates: dict[str, Any]) -> dict[str, Any]:
    """``{"latitude": {"raw": 45.764, ...}, "longitude": {...}}`` -> ``{"lat": ..., "lon": ...}``."""
    found = {}
    for key, target in (("latitude", "lat"), ("longitude", "lon")):
        value = coordinates.get(key)
        raw = value.get("raw") if isinstance(value, dict) else value
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            found[target] = float(raw)
    return found


def immanuel_extras(doc: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    native: dict[str, Any] = doc["native"] if isinstance(doc.get("native"), dict) else doc
    date_time = native.get("date_time") or doc.get("natal_date")
    if isinstance(date_time, dict) and isinstance(date_time.get("datetime"), str):
        extra["birth"] = date_time["datetime"].replace(" ", "T", 1)
    coordinates = native.get("coordinates")
    if isinstance(coordinates, dict):
        extra.update(_coordinates(coordinates))
    phase = doc.get("moon_phase")
    if isinstance(phase, dict) and isinstance(phase.get("formatted"), str):
        extra["lunar_phase"] = phase["formatted"]
    if isinstance(doc.get("diurnal"), bool):
        extra["diurnal"] = doc["diurnal"]
    if isinstance(doc.get("house_system"), str):
        extra["house_system"] = doc["house_system"]
    return extra


def parse_immanuel(doc: dict[str, Any], ctx: Ctx, *, user: str) -> Chart:
    points, ids = parse_objects(as_dict(doc["objects"], ctx.at("objects")), ctx.at("objects"))
    chart = Chart(user=user, points=points, source_format="immanuel", extra=immanuel_extras(doc))
    chart.houses = parse_houses(doc.get("houses"), ctx.at("houses"))
    chart.aspects = parse_aspects(doc.get("aspects"), ids, ctx.at("aspects"))
    chart.dominant_element, chart.dominant_modality = weighting_dominants(doc, ctx)
    return chart
