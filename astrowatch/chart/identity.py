"""What makes two chart files *the same chart*, whatever their export format.

Producers (kerykeion 4/5/6, its chart data, the Astrologer API, immanuel, our own form) write
the same person's chart with different bytes, different point sets, different aspect orbs and
different rounding.  The picture must not follow the format, so the seed derives from:

1. the birth data when the file has it: the birth *instant* in UTC rounded to the minute.  When
   the file gives an absolute instant (a UTC offset, or a time zone name), the place plays no
   part: producers write it differently (kerykeion 4 and 5 clamp a polar latitude to 66°,
   kerykeion 6 and immanuel keep 69.65° for Tromsø) and the instant already fixes the picture.
   Only a local wall-clock time without any zone takes the birth place (latitude/longitude
   rounded to 0.01°, about a kilometre), because only then does the place fix the instant;
2. else the rounded positions the prompt reads: the sign, whole degree, house and retrograde
   flag of the planets, the Ascendant and the Midheaven.

The seed a chart was first drawn with is kept in the ledger and reused from then on
(:mod:`astrowatch.pipeline.seeds`), so a change of this rule never changes a picture already made.

:func:`complete_aspects` fills in the major aspects a file does not list (subject dumps list
none), computed from the positions with kerykeion's default orbs, so the prompt's "tightest
aspects" are the same for every format.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from astrowatch.chart.fields import angular_distance
from astrowatch.chart.model import MAJOR_ASPECTS, PLANETS, Aspect, Chart

# kerykeion's default orbs for the major aspects (degrees).
ASPECT_ORBS = {"conjunction": 10.0, "opposition": 10.0, "trine": 8.0, "sextile": 6.0, "square": 5.0}
IDENTITY_POINTS = PLANETS + ("chiron", "ascendant", "medium_coeli")


def _utc_minute(birth: str, tz_name: str | None) -> str | None:
    """``1990-08-04T15:30:00+02:00`` -> ``1990-08-04T13:30Z``; naive times use ``tz_name``."""
    try:
        when = datetime.fromisoformat(birth.strip())
    except ValueError:
        return None
    if when.tzinfo is None and tz_name:
        try:
            from zoneinfo import ZoneInfo

            when = when.replace(tzinfo=ZoneInfo(tz_name))
        except (ValueError, KeyError, OSError, ImportError):
            pass
    when = (when + timedelta(seconds=30)).replace(second=0, microsecond=0)
    if when.tzinfo is None:  # no offset, no zone: the local wall-clock time is all there is
        return when.strftime("%Y-%m-%dT%H:%M") + " local"
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _coordinate(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return round(float(value), 2) + 0.0  # +0.0: -0.0 and 0.0 hash alike


def birth_identity(chart: Chart, *, place: bool = False) -> dict[str, Any] | None:
    """``{"utc": ...}`` from the file's birth data, None without a birth time; ``"place": [lat,
    lon]`` is added only for a wall-clock time without a zone (or with ``place``: the rule of
    release 0.1.0, which added it whenever the file had one)."""
    birth = chart.extra.get("birth")
    instant = _utc_minute(birth, chart.extra.get("tz")) if isinstance(birth, str) else None
    if instant is None:
        return None
    identity: dict[str, Any] = {"utc": instant}
    lat, lon = _coordinate(chart.extra.get("lat")), _coordinate(chart.extra.get("lon"))
    if lat is not None and lon is not None and (place or instant.endswith(" local")):
        identity["place"] = [lat, lon]
    return identity


def position_identity(chart: Chart) -> dict[str, Any]:
    """The rounded positions the prompt reads (sign, whole degree, house, retrograde)."""
    points = {}
    for name in IDENTITY_POINTS:
        p = chart.points.get(name)
        if p is not None:
            points[name] = [p.sign, int(round(p.longitude)) % 360, p.house, bool(p.retrograde)]
    return {"points": points}


def chart_identity(chart: Chart, *, legacy: bool = False) -> dict[str, Any]:
    """The user plus the birth instant, else the rounded positions: the seed's input.  ``legacy``:
    the identity of release 0.1.0 (the birth place counted whenever the file had one)."""
    birth = birth_identity(chart, place=legacy)
    if birth is not None:
        return {"user": chart.user, "birth": birth}
    return {"user": chart.user, **position_identity(chart)}


def identity_sha256(chart: Chart, *, legacy: bool = False) -> str:
    """A stable hex digest of :func:`chart_identity` (seeds learned-default exploration too)."""
    import hashlib
    import json

    blob = json.dumps(chart_identity(chart, legacy=legacy), sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def identity_seed(identity: str) -> int:
    """The seed (``0 <= seed < 2**32``) an identity digest gives when none was recorded before."""
    return int(identity[:8], 16)


def complete_aspects(chart: Chart) -> list[Aspect]:
    """The file's aspects plus the major aspects it does not list, computed from the positions."""
    listed = {(frozenset((a.p1, a.p2)), a.kind) for a in chart.aspects}
    added = []
    names = [n for n in IDENTITY_POINTS if n in chart.points]
    approximate = set(chart.extra.get("approximate", ()))
    for i, n1 in enumerate(names):
        for n2 in names[i + 1:]:
            if n1 in approximate or n2 in approximate:
                continue  # a sign-only point has no position to measure from
            distance = angular_distance(chart.points[n1].longitude, chart.points[n2].longitude)
            for kind, angle in MAJOR_ASPECTS.items():
                orb = abs(distance - angle)
                if orb <= ASPECT_ORBS[kind] and (frozenset((n1, n2)), kind) not in listed:
                    added.append(Aspect(p1=n1, p2=n2, kind=kind, orb=round(orb, 2)))
    return list(chart.aspects) + added
