"""Parse a natal-chart JSON file, whatever produced it, into one :class:`~.model.Chart`.

Entry points: :func:`parse_chart_file` and :func:`parse_chart_bytes`. Every failure is an
:class:`~astrowatch.core.errors.InputError` whose one-line message names the file and the reason.

Safety limits come first, before any parsing: the size (``max_bytes``), UTF-8 decoding, and the
nesting depth (``max_depth``), which is measured by a linear scan of the bytes that skips
string contents, so ``[[[[...`` a hundred thousand deep is refused without recursion.

Formats are recognised by shape (see docs/theme-format.md): our own ``astrowatch/1`` form,
Astrologer API responses, kerykeion chart data, immanuel charts and kerykeion subject dumps.
"""

from __future__ import annotations

import json
import re
from array import array
from dataclasses import replace
from itertools import accumulate
from pathlib import Path
from typing import Any

from astrowatch.chart.dominant import compute_dominants
from astrowatch.chart.fields import FORMAT_DOC, Ctx, describe, house_of
from astrowatch.chart.formats_immanuel import looks_like_immanuel, parse_immanuel
from astrowatch.chart.formats_kerykeion import looks_like_subject, parse_astrologer, parse_chart_data, parse_subject
from astrowatch.chart.formats_own import looks_like_own, parse_own
from astrowatch.chart.identity import complete_aspects
from astrowatch.chart.model import Aspect, Chart
from astrowatch.core.errors import InputError, NotFound

SOURCE_FORMATS = ("kerykeion", "kerykeion-chart", "astrologer-api", "immanuel", "astrowatch")
DEFAULT_MAX_BYTES = 2_000_000
DEFAULT_MAX_DEPTH = 64

# A complete JSON string: quote, then runs of plain characters or escapes, then quote.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# Brackets become +1 / -1 (as signed bytes); everything else is deleted.
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def json_depth(data: bytes) -> int:
    """Maximum nesting depth of arrays/objects in JSON ``data``, ignoring brackets in strings.

    Linear time, no recursion: strings are cut out with a non-backtracking regex, brackets are
    mapped to +1/-1 and the running sum's maximum is taken in C (``accumulate`` over an array).
    """
    steps = _JSON_STRING.sub(b"", data).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    return max(accumulate(array("b", steps)), default=0)


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            hint="save the file as UTF-8 JSON",
        ) from None


def load_json(data: bytes, *, source: str, max_bytes: int = DEFAULT_MAX_BYTES,
              max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Size, encoding and depth checks, then ``json.loads``. Raises :class:`InputError`."""
    if len(data) > max_bytes:
        raise InputError(f"{source}: {len(data)} bytes is over the limit of {max_bytes} bytes "
                         "(limits.max_json_bytes)")
    if not data.strip():
        raise InputError(f"{source}: empty file, expected a natal chart in JSON")
    text = _decode(data, source)
    depth = json_depth(data)
    if depth > max_depth:
        raise InputError(f"{source}: JSON nested more than {max_depth} levels deep "
                         "(limits.max_json_depth); not a natal chart")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            raise InputError(f"{source}: truncated JSON (the file ends before the document does; "
                             "was it still being written?)") from None
        raise InputError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer with too many digits
        raise InputError(f"{source}: not valid JSON: {exc}") from None


def detect_format(doc: dict[str, Any]) -> str | None:
    """The producer format of a decoded document, by shape; None if none matches."""
    if "format" in doc:
        return "astrowatch"
    if "status" in doc and any(k in doc for k in ("subject", "chart_data", "data")):
        return "astrologer-api"
    if "chart_type" in doc or "first_subject" in doc or ("subject" in doc and "aspects" in doc):
        return "kerykeion-chart"
    if looks_like_immanuel(doc):
        return "immanuel"
    if looks_like_subject(doc):
        return "kerykeion"
    if looks_like_own(doc):
        return "astrowatch"
    return None


def parse_chart_document(doc: Any, *, user: str, source: str = "<document>") -> Chart:
    """Turn an already decoded JSON document into a :class:`Chart`."""
    ctx = Ctx(source)
    if not isinstance(doc, dict):
        raise ctx.error(f"the top level is {describe(doc)}, expected an object holding a natal chart")
    fmt = detect_format(doc)
    if fmt is None:
        raise ctx.error(
            "no natal chart found: not kerykeion, immanuel, Astrologer API nor astrowatch/1 JSON",
            hint=FORMAT_DOC,
        )
    if fmt == "astrowatch":
        chart = parse_own(doc, ctx, user=user)
    elif fmt == "astrologer-api":
        chart = parse_astrologer(doc, ctx, user=user)
    elif fmt == "kerykeion-chart":
        chart = parse_chart_data(doc, ctx, user=user)
    elif fmt == "immanuel":
        chart = parse_immanuel(doc, ctx, user=user)
    else:
        chart = parse_subject(doc, ctx, user=user)
    return _finish(chart, ctx)


def _finish(chart: Chart, ctx: Ctx) -> Chart:
    """Common completion: require points, fill houses from cusps, tidy aspects, dominants."""
    if not chart.points:
        raise ctx.error("no recognisable planet or angle in this chart "
                        "(expected at least the sun, moon or ascendant)", hint=FORMAT_DOC)
    approximate = set(chart.extra.get("approximate", ()))
    for name, point in chart.points.items():
        if point.house is None and name not in approximate:
            house = house_of(point.longitude, chart.houses)
            if house is not None:
                chart.points[name] = replace(point, house=house)
    chart.aspects = _tidy_aspects(complete_aspects(chart), chart)
    if chart.dominant_element is None or chart.dominant_modality is None:
        element, modality = compute_dominants(chart.points)
        chart.dominant_element = chart.dominant_element or element
        chart.dominant_modality = chart.dominant_modality or modality
    return chart


def _tidy_aspects(aspects: list[Aspect], chart: Chart) -> list[Aspect]:
    """Keep aspects between known points, once per pair and kind (producers list some twice)."""
    seen: set[tuple[frozenset[str], str]] = set()
    kept = []
    for aspect in aspects:
        key = (frozenset((aspect.p1, aspect.p2)), aspect.kind)
        if aspect.p1 == aspect.p2 or key in seen:
            continue
        if aspect.p1 in chart.points and aspect.p2 in chart.points:
            seen.add(key)
            kept.append(aspect)
    return kept


def parse_chart_bytes(data: bytes, *, user: str, source: str = "<bytes>",
                      max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH) -> Chart:
    """Parse natal-chart JSON ``data`` for ``user`` (the folder name is the identity)."""
    doc = load_json(bytes(data), source=source, max_bytes=max_bytes, max_depth=max_depth)
    return parse_chart_document(doc, user=user, source=source)


def default_user(path: Path) -> str:
    """``theme_gaby.json`` -> ``gaby``; otherwise the name of the folder holding the file."""
    stem = path.stem
    if stem.startswith("theme_") and len(stem) > len("theme_"):
        return stem[len("theme_"):]
    return path.resolve().parent.name


def parse_chart_file(path: Path, *, user: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                     max_depth: int = DEFAULT_MAX_DEPTH) -> Chart:
    """Read and parse ``path`` (never more than ``max_bytes + 1`` bytes are read)."""
    path = Path(path)
    source = str(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise NotFound(f"{source}: no such file") from None  # exit 66 (EX_NOINPUT), not bad data
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise InputError(f"{source}: more than {max_bytes} bytes (limits.max_json_bytes); "
                         "not a natal chart")
    return parse_chart_bytes(data, user=user or default_user(path), source=source,
                             max_bytes=max_bytes, max_depth=max_depth)
