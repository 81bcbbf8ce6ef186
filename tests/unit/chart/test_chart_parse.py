"""Natal-chart parsing: every supported producer format, and hostile input.

All fixtures describe the same chart (Gaby, 1990-08-04 15:30, Lyon, Porphyry houses), so each
format must give the same Sun, Moon and Ascendant.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astrowatch.chart.dominant import compute_dominants
from astrowatch.chart.fields import canonical_point
from astrowatch.chart.model import Aspect, Chart, Point
from astrowatch.chart.parse import json_depth, parse_chart_bytes, parse_chart_file
from astrowatch.core.errors import InputError, NotFound

THEMES = Path(__file__).resolve().parents[2] / "fixtures" / "themes"

# file -> (source_format, one aspect it must contain: (p1, p2, kind, orb))
FORMATS = {
    "kerykeion_v4_subject.json": ("kerykeion", None),
    "kerykeion_v5_subject.json": ("kerykeion", None),
    "kerykeion_v6_subject.json": ("kerykeion", None),
    "kerykeion_chart_data.json": ("kerykeion-chart", ("sun", "true_node", "opposition", 2.2)),
    "astrologer_api_subject.json": ("astrologer-api", None),
    "astrologer_api_chart_data.json": ("astrologer-api", ("mars", "pluto", "opposition", 0.19)),
    "astrologer_api_legacy.json": ("astrologer-api", ("sun", "mean_node", "opposition", 1.47)),
    "immanuel_natal.json": ("immanuel", ("moon", "saturn", "conjunction", 2.75)),
    "astrowatch_minimal.json": ("astrowatch", ("sun", "mars", "square", 2.96)),
}


def load(name: str) -> dict:
    return json.loads((THEMES / name).read_text(encoding="utf-8"))


def parse_doc(doc: object, **kw) -> Chart:
    return parse_chart_bytes(json.dumps(doc).encode(), user="gaby", source="theme_gaby.json", **kw)


def find_aspect(chart: Chart, p1: str, p2: str) -> Aspect | None:
    return next((a for a in chart.aspects if {a.p1, a.p2} == {p1, p2}), None)


def assert_gaby(chart: Chart) -> None:
    """The pins every format must agree on."""
    expected = {"sun": ("Leo", 9, 132.41), "moon": ("Capricorn", 2, 287.63),
                "ascendant": ("Scorpio", 1, 232.45), "mercury": ("Virgo", 9, 153.22),
                "saturn": ("Capricorn", 2, 290.38), "medium_coeli": ("Virgo", 10, 158.40)}
    for name, (sign, house, longitude) in expected.items():
        point = chart.points[name]
        assert (point.sign, point.house) == (sign, house), name
        assert point.longitude == pytest.approx(longitude, abs=0.01), name
    assert chart.sun.element == "Fire" and chart.moon.modality == "Cardinal"
    assert chart.points["saturn"].retrograde and chart.points["uranus"].retrograde
    assert not chart.sun.retrograde and not chart.points["mars"].retrograde
    assert (chart.dominant_element, chart.dominant_modality) == ("Earth", "Fixed")
    assert chart.user == "gaby"
    assert all(1 <= p.house <= 12 for p in chart.points.values() if p.house is not None)
    assert [h.number for h in chart.houses] == list(range(1, 13))


# --- one test per format -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_parses_to_the_same_chart(name: str) -> None:
    source_format, aspect = FORMATS[name]
    chart = parse_chart_file(THEMES / name, user="gaby")
    assert chart.source_format == source_format
    assert_gaby(chart)
    assert all(a.kind == a.kind.lower() and a.orb >= 0 for a in chart.aspects)
    assert all(a.p1 in chart.points and a.p2 in chart.points for a in chart.aspects)
    if aspect:
        p1, p2, kind, orb = aspect
        found = find_aspect(chart, p1, p2)
        assert found is not None and found.kind == kind and found.orb == pytest.approx(orb, abs=0.01)


def test_kerykeion_v4_node_names_and_ascendant_from_first_house() -> None:
    chart = parse_chart_file(THEMES / "kerykeion_v4_subject.json", user="gaby")
    assert chart.points["mean_node"].longitude == pytest.approx(310.94)
    assert chart.points["true_node"].sign == "Aquarius" and chart.points["true_node"].retrograde
    assert chart.points["south_node"].longitude == pytest.approx(130.21)  # true south node preferred
    assert "ascendant" not in load("kerykeion_v4_subject.json")  # derived from first_house
    assert chart.extra == {"name": "Gaby", "city": "Lyon", "nation": "FR", "house_system": "Porphyry",
                           "birth": "1990-08-04T15:30:00+02:00", "lunar_phase": "Waxing Gibbous",
                           "tz": "Europe/Paris", "lat": 45.764, "lon": 4.8357}


def test_kerykeion_v5_fixed_stars_and_extra_points_are_ignored() -> None:
    doc = load("kerykeion_v5_subject.json")
    assert doc["regulus"] and doc["pars_fortunae"] and doc["ceres"] is None
    chart = parse_doc(doc)
    assert "regulus" not in chart.points and "mean_node" not in chart.points
    assert chart.points["true_node"].house == 3 and chart.points["mean_lilith"].sign == "Libra"
    assert chart.points["descendant"].sign == "Taurus" and chart.points["imum_coeli"].house == 4


def test_kerykeion_v6_extra_fields() -> None:
    chart = parse_chart_file(THEMES / "kerykeion_v6_subject.json", user="gaby")
    assert chart.extra["diurnal"] is True and chart.extra["lunar_phase"] == "Waxing Gibbous"
    assert len(chart.points) == 18


def test_chart_data_uses_the_file_distributions() -> None:
    doc = load("kerykeion_chart_data.json")
    doc["element_distribution"].update(water=20.0)
    doc["quality_distribution"].update(mutable=20.0)
    chart = parse_doc(doc)
    assert (chart.dominant_element, chart.dominant_modality) == ("Water", "Mutable")
    doc["aspects"] = {"relevant_aspects": doc["aspects"][:2], "all_aspects": doc["aspects"]}
    listed = parse_doc(doc).aspects  # the v5 pre-release aspects model: relevant_aspects first
    assert [(a.p1, a.p2) for a in listed[:2]] == [
        (canonical_point(x["p1_name"]), canonical_point(x["p2_name"])) for x in doc["aspects"]["relevant_aspects"]]


def test_legacy_house_names_and_capitalised_aspects() -> None:
    doc = load("astrologer_api_legacy.json")
    assert doc["data"]["sun"]["house"] == "9th House" and doc["aspects"][0]["aspect"].istitle()
    chart = parse_doc(doc)
    assert {a.kind for a in chart.aspects} <= {"conjunction", "opposition", "trine", "square", "sextile"}


def test_immanuel_ids_aspects_and_weightings() -> None:
    doc = load("immanuel_natal.json")
    chart = parse_doc(doc)
    assert "vertex" not in chart.points and chart.points["chiron"].house == 8
    assert len({frozenset((a.p1, a.p2)) for a in chart.aspects}) == len(chart.aspects)  # deduplicated
    assert find_aspect(chart, "sun", "mars").orb == pytest.approx(2.96)  # |difference|, not the allowed orb
    doc["weightings"]["elements"]["air"] = list(range(30))
    assert parse_doc(doc).dominant_element == "Air"
    for obj in doc["objects"].values():  # a localised chart: names unknown, ids still resolve
        obj["name"] = "x" + obj["name"]
        obj["sign"]["name"] = "?"
    chart = parse_doc(doc)
    assert chart.sun.sign == "Leo" and find_aspect(chart, "moon", "saturn") is not None


def test_own_form_french_signs_style_and_computed_orb() -> None:
    chart = parse_chart_file(THEMES / "astrowatch_minimal.json", user="gaby")
    assert chart.style == "figuratif" and chart.extra["name"] == "Gaby"
    assert chart.houses[4].sign == "Aries"  # "Bélier"
    assert find_aspect(chart, "moon", "mars").kind == "trine"  # "trigone", orb computed
    assert find_aspect(chart, "moon", "mars").orb == pytest.approx(2.26)


def test_own_form_sign_only_points_are_approximate() -> None:
    chart = parse_doc({"sun": "leo", "moon": {"sign": "Gémeaux"},
                       "planets": [{"name": "Vénus", "sign": "VIR", "house": "3"}]})
    assert chart.source_format == "astrowatch"
    assert chart.sun.longitude == 135.0 and chart.moon.sign == "Gemini"
    assert chart.points["venus"].house == 3 and chart.sun.house is None
    assert chart.extra["approximate"] == ["sun", "moon", "venus"]


def test_longitude_only_gives_the_sign_and_houses_come_from_cusps() -> None:
    doc = load("astrowatch_minimal.json")
    doc["planets"]["mars"] = {"longitude": 45.37}
    chart = parse_doc(doc)
    assert chart.points["mars"].sign == "Taurus" and chart.points["mars"].house == 6


def test_default_user_from_file_name_or_folder(tmp_path: Path) -> None:
    folder = tmp_path / "camille"
    folder.mkdir()
    shutil.copy(THEMES / "kerykeion_v5_subject.json", folder / "theme_gaby.json")
    shutil.copy(THEMES / "kerykeion_v5_subject.json", folder / "chart.json")
    assert parse_chart_file(folder / "theme_gaby.json").user == "gaby"
    assert parse_chart_file(folder / "chart.json").user == "camille"
    assert parse_chart_file(folder / "chart.json", user="zoe").user == "zoe"


# --- dominants -----------------------------------------------------------------------------


def test_dominants_weights_and_ties() -> None:
    def pt(name: str, sign: str) -> Point:
        return Point(name=name, sign=sign, longitude=0.0)

    assert compute_dominants({}) == (None, None)
    assert compute_dominants({"mean_lilith": pt("mean_lilith", "Aries")}) == (None, None)
    # Mercury + Jupiter in air signs (1.5 + 1.0) outweigh the Sun in Cancer (2.0)
    assert compute_dominants({"sun": pt("sun", "Cancer"), "mercury": pt("mercury", "Gemini"),
                              "jupiter": pt("jupiter", "Libra")}) == ("Air", "Cardinal")
    # exact ties: Fire before Water, Cardinal before Fixed
    assert compute_dominants({"sun": pt("sun", "Scorpio"), "moon": pt("moon", "Aries")}) == ("Fire", "Cardinal")
    assert compute_dominants({"moon": pt("moon", "Taurus"), "sun": pt("sun", "Cancer")}) == ("Earth", "Cardinal")


# --- hostile input -------------------------------------------------------------------------


def rejects(data: bytes, *words: str, **kw) -> str:
    with pytest.raises(InputError) as info:
        parse_chart_bytes(data, user="gaby", source="theme_gaby.json", **kw)
    message = str(info.value)
    assert message.startswith("theme_gaby.json: ") and "\n" not in message
    for word in words:
        assert word in message, message
    return message


def test_not_json_truncated_and_wrong_top_level() -> None:
    rejects(b"hello, world", "not valid JSON", "line 1")
    good = (THEMES / "kerykeion_v5_subject.json").read_bytes()
    rejects(good[: len(good) // 2], "truncated")
    rejects(b"[1, 2, 3]", "top level is a list")
    rejects(b"42", "top level is the number 42")
    rejects(b"", "empty file")
    rejects(b"  \n ", "empty file")


def test_size_limit(tmp_path: Path) -> None:
    data = (THEMES / "kerykeion_v5_subject.json").read_bytes()
    rejects(data, "over the limit of 1000 bytes", max_bytes=1000)
    path = tmp_path / "theme_gaby.json"
    path.write_bytes(data)
    with pytest.raises(InputError, match="more than 1000 bytes"):
        parse_chart_file(path, max_bytes=1000)
    with pytest.raises(NotFound, match="missing.json: no such file"):  # exit 66, not 65
        parse_chart_file(tmp_path / "missing.json")
    with pytest.raises(InputError, match="cannot read"):
        parse_chart_file(tmp_path)  # a folder: unreadable, bad input


def test_deep_nesting_is_refused_without_recursion() -> None:
    start = time.monotonic()
    rejects(b"[" * 100_000, "nested more than 64 levels")
    rejects(b'{"sun": ' + b"{" * 100_000, "nested more than 64 levels")
    rejects(b'{"a": ' * 65 + b"1" + b"}" * 65, "nested more than 64 levels")
    assert time.monotonic() - start < 2
    assert json_depth(b'{"a": [1, {"b": "[[[[{{{{"}], "c": "\\"[["}') == 3
    assert json_depth(b"[]" * 1000) == 1
    doc = load("astrowatch_minimal.json")
    doc["name"] = "[" * 200  # brackets inside strings do not count
    assert parse_doc(doc, max_depth=4).extra["name"] == "[" * 200


def test_display_names_and_places_are_bounded() -> None:
    doc = load("astrowatch_minimal.json")
    doc["name"] = "é" * 100  # 200 bytes: the bound itself
    assert parse_doc(doc).extra["name"] == "é" * 100
    doc["name"] = "é" * 101
    with pytest.raises(InputError, match="name: longer than 200 bytes"):
        parse_doc(doc)


def test_non_utf8_bytes() -> None:
    rejects(b'{"sun": {"sign": "L\xe9o"}}', "not UTF-8", "0xe9")
    rejects("{}".encode("utf-16"), "not UTF-8")


def test_no_recognisable_points() -> None:
    rejects(b'{"hello": "world"}', "no natal chart found")
    doc = load("kerykeion_v5_subject.json")
    for key, value in doc.items():
        if isinstance(value, dict) and "abs_pos" in value:  # every point and cusp inactive
            doc[key] = None
    rejects(json.dumps(doc).encode(), "no recognisable planet")
    rejects(b'{"format": "astrowatch/1", "name": "Gaby"}', "no recognisable planet")


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d["sun"].update(sign="Dragon", abs_pos=None), ["sun.sign", "'Dragon' is not a zodiac sign"]),
        (lambda d: d["moon"].update(abs_pos=400.0), ["moon", "longitude 400 is out of range"]),
        (lambda d: d["moon"].update(abs_pos=-1), ["out of range"]),
        (lambda d: d["mars"].update(abs_pos="45"), ["mars.abs_pos", "expected a number"]),
        (lambda d: d["mars"].update(abs_pos=None, position=31.0), ["mars", "degree 31 is out of range"]),
        (lambda d: d["saturn"].update(retrograde="yes"), ["saturn.retrograde", "true or false"]),
        (lambda d: d["venus"].update(house="Thirteenth_House"), ["venus.house", "not a house"]),
        (lambda d: d["venus"].update(sign="Sco"), ["does not match longitude"]),
        (lambda d: d.update(sun=[1, 2]), ["sun: expected an object, got a list"]),
        (lambda d: d.update(name=["Gaby"]), ["name: expected a string"]),
    ],
)
def test_bad_fields_in_a_kerykeion_subject(mutate, words: list[str]) -> None:
    doc = load("kerykeion_v5_subject.json")
    mutate(doc)
    rejects(json.dumps(doc).encode(), *words)


def test_bad_fields_elsewhere() -> None:
    rejects(b'{"sun": {"longitude": NaN}, "format": "astrowatch/1"}', "sun.longitude", "finite")
    rejects(b'{"format": "astrowatch/1", "sun": {"longitude": 1' + b"0" * 400 + b"}}", "finite")
    rejects(b'{"format": "astrowatch/2", "sun": "Leo"}', "unsupported version")
    rejects(b'{"format": "kerykeion", "sun": "Leo"}', "unknown format")
    rejects(b'{"format": "astrowatch/1", "planets": {"ceres": "Leo"}}', "unknown point", "mean_node")
    rejects(b'{"format": "astrowatch/1", "sun": "Leo", "planets": {"soleil": "Leo"}}', "given twice")
    rejects(b'{"status": "KO", "subject": {}}', "status", "KO")
    chart_data = load("kerykeion_chart_data.json")
    chart_data["chart_type"] = "Synastry"
    rejects(json.dumps(chart_data).encode(), "two charts")
    chart_data = load("kerykeion_chart_data.json")
    chart_data["aspects"][0]["orbit"] = "close"
    rejects(json.dumps(chart_data).encode(), "aspects[0].orbit", "expected a number")


def test_hostile_keys_keep_messages_short() -> None:
    doc = {"format": "astrowatch/1", "planets": {"line\nbreak" + "x" * 1000: "Leo"}}
    message = rejects(json.dumps(doc).encode(), "unknown point")
    assert len(message) < 400


# --- fuzzing: never anything but a Chart or an InputError ----------------------------------

_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    try:
        parse_chart_bytes(data, user="gaby")
    except InputError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(FORMATS)), picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=4),
       leaf=_LEAVES)
def test_mutated_fixtures(name: str, picks: list[int], leaf: object) -> None:
    doc = load(name)
    node = doc
    for pick in picks:  # walk down a random path, then replace what is there
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if not children:
            break
        key, child = children[pick % len(children)]
        if not isinstance(child, (dict, list)) or pick == picks[-1]:
            node[key] = leaf
            break
        node = child
    try:
        chart = parse_chart_bytes(json.dumps(doc).encode(), user="gaby")
    except InputError:
        return
    assert chart.points and all(0 <= p.longitude < 360 for p in chart.points.values())
