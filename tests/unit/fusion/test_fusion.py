"""Prompt fusion: ordering, weights per backend, budgets, seeds, styles, goldens.

Goldens live in ``tests/golden/fusion/``.  After an intended change in wording, regenerate
them and review the diff by eye::

    ASTROWATCH_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/fusion/test_fusion.py -k golden -p no:cacheprovider

The approximate counter is checked against the real CLIP tokenizer: ``$ASTROWATCH_CLIP_TOKENIZER``
(an SDXL ``tokenizer/`` folder), else one built from the BPE vocabulary shipped in the
``open-clip-torch`` wheel, which ``make test`` fetches with ``pip download --no-deps`` into
``build/wheels/`` (the file only: nothing from a model hub, no torchvision).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from extras import require
from fusion_charts import CHARTS, capricorn_chart, leo_chart, real_clip_tokenizer, tiny_clip_model_dir

from astrowatch.chart.model import Aspect, Chart, Point
from astrowatch.chart.parse import parse_chart_file
from astrowatch.core.config import Config
from astrowatch.core.errors import ConfigError, InputError
from astrowatch.fusion import ApproxTokenCounter, Fusion, chart_seed, fuse, style_names
from astrowatch.fusion.compact import clean
from astrowatch.fusion.data import correspondences, fragment
from astrowatch.fusion.tokens import word_table

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "fusion"
UPDATE = os.environ.get("ASTROWATCH_UPDATE_GOLDEN") == "1"


def cfg(**astro) -> Config:
    config = Config()
    for key, value in astro.items():
        setattr(config.astro, key, value)
    return config


def sign_text(sign: str, kind: str) -> str:
    return clean(fragment(correspondences()["signs"][sign][kind]).prompt)


def position(prompt: str, text: str) -> int:
    assert text in prompt, f"{text!r} not in {prompt!r}"
    return prompt.index(text)


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("transformers", "sdxl")
    return tiny_clip_model_dir(tmp_path_factory.mktemp("clip"))


# -- what goes where --------------------------------------------------------------------------

def test_figurative_order_sun_moon_ascendant_element_modality() -> None:
    f = fuse(leo_chart(), cfg(), backend="openai")  # no compaction: every motif is present
    p = f.prompt
    order = [
        position(p, "figurative oil painting"),
        position(p, sign_text("Leo", "figure")),
        position(p, sign_text("Pisces", "mood")),
        position(p, sign_text("Scorpio", "setting")),
        position(p, "palette of"),
        position(p, "composition"),
    ]
    assert order == sorted(order) and order[0] == 0
    assert f.chart["dominant_element"] == "Water" and "deep palette of blue" in p
    assert f.chart["dominant_modality"] == "Fixed" and "centered symmetrical composition" in p


def test_tightest_major_aspects_one_per_pair() -> None:
    f = fuse(leo_chart(), cfg(), backend="openai")
    used = [(a["p1"], a["p2"], a["kind"]) for a in f.chart["aspects"]]
    # mars-pluto once (duplicate pair ignored), the quincunx ignored, the 6.5° trine too far down
    assert used == [("mars", "pluto", "opposition"), ("moon", "venus", "trine"), ("moon", "saturn", "sextile")]
    assert "a bronze sword facing a split pomegranate" in f.prompt
    assert "a silver crescent moon in harmony with a red rose" in f.prompt
    assert all(a["in_prompt"] for a in f.chart["aspects"])


def test_house_emphasis_and_retrograde_details() -> None:
    f = fuse(leo_chart(), cfg(), backend="openai")
    assert f.chart["house_emphasis"] == 5  # sun, mercury, jupiter (the Sun's house wins the tie)
    assert "a lyre among blooming flowers" in f.prompt
    assert f.chart["retrograde"] == ["mercury", "saturn"]
    assert "a faint mirrored reflection looking back" in f.prompt


def test_dominants_from_file_or_computed() -> None:
    f = fuse(capricorn_chart(), cfg(), backend="openai")
    assert (f.chart["dominant_element"], f.chart["dominant_modality"]) == ("Air", "Cardinal")
    computed = dataclasses.replace(capricorn_chart(), dominant_element=None, dominant_modality="nonsense")
    g = fuse(computed, cfg(), backend="openai")
    # Sun Capricorn 2 + Saturn-in-Libra... Earth 2, Air 2+1.5+1 (Gemini Moon, Aquarius Venus, Libra Saturn)
    assert g.chart["dominant_element"] == "Air"
    assert g.chart["dominant_modality"] in ("Cardinal", "Mutable", "Fixed")


def test_summary_shape() -> None:
    f = fuse(capricorn_chart(), cfg())
    assert f.chart["user"] == "lou"
    assert f.chart["sun"] == {"sign": "Capricorn", "house": None}
    assert f.chart["ascendant"] is None  # no birth time: no setting motif, no crash
    assert "windswept" not in f.prompt
    assert set(f.to_dict()) >= {"prompt", "negative_prompt", "description", "style", "seed", "tokens", "chart"}


def test_chart_without_lights_still_has_a_figure() -> None:
    chart = Chart(user="x", points={"mars": Point("mars", "Aries", 5.0)})
    f = fuse(chart, cfg())
    assert "a solitary figure" in f.prompt
    assert f.chart["sun"] is None and f.chart["dominant_element"] == "Fire"


# -- weights and cleaning --------------------------------------------------------------------

def test_weight_syntax_per_backend() -> None:
    figure = sign_text("Capricorn", "figure")
    sdxl = fuse(capricorn_chart(), cfg(), backend="sdxl").prompt
    sdapi = fuse(capricorn_chart(), cfg(), backend="sdapi").prompt
    openai = fuse(capricorn_chart(), cfg(), backend="openai").prompt
    assert f"({figure})1.2" in sdxl
    assert f"({figure}:1.2)" in sdapi
    assert figure in openai and "(" not in openai and ")" not in openai


def test_style_weight_and_no_weight(tmp_path: Path) -> None:
    styles = tmp_path / "styles.yaml"
    styles.write_text("plain:\n  weights: {}\n  extends: figuratif\nstrong:\n  weights: {figure: 1.4, mood: 1.1}\n")
    config = cfg(styles_file=styles)
    assert "(" not in fuse(capricorn_chart(), config, style="plain").prompt
    strong = fuse(capricorn_chart(), config, style="strong", backend="sdapi").prompt
    assert ":1.4)" in strong and ":1.1)" in strong


def test_bang_and_markup_are_stripped(tmp_path: Path) -> None:
    styles = tmp_path / "styles.yaml"
    styles.write_text(
        "loud:\n  prefix: 'AMAZING!!! (painting:1.5) [x] <lora:a:1> BREAK'\n"
        "  quality: ['best!', 'a+b', '-', 'ok']\n  negative: ['ugly!', '!!!']\n")
    f = fuse(capricorn_chart(), cfg(styles_file=styles), style="loud", backend="sdapi")
    for text in (f.prompt, f.negative_prompt):
        for ch in "![]<>+":
            assert ch not in text
    assert f.prompt.startswith("amazing painting 1 5 x lora a 1 break, ")
    assert f.negative_prompt == "ugly"
    assert clean("  a  ,, b !,  c- -d ") == "a, b, c d"


# -- budgets --------------------------------------------------------------------------------

def test_default_budget_with_the_approximate_counter() -> None:
    f = fuse(leo_chart(), cfg())
    approx = ApproxTokenCounter()
    for enc in ("clip_l", "clip_g"):
        t = f.tokens[enc]
        assert t["budget"] == 75 and t["counter"] == "approx"
        assert t["count"] == approx.count(f.prompt) <= 75
        assert t["negative"]["count"] == approx.count(f.negative_prompt) <= 75
        assert t["dropped"], "the leo chart does not fit in 75 tokens whole"
    assert "masterpiece" not in f.prompt or "highly detailed" in f.prompt  # dropped least first
    assert sign_text("Leo", "figure") in f.prompt  # the most important motif keeps its full text


def test_dropped_items_reported_and_described(tmp_path: Path) -> None:
    styles = tmp_path / "styles.yaml"
    styles.write_text("tight:\n  budget: 20\n")
    f = fuse(leo_chart(), cfg(styles_file=styles), style="tight")
    t = f.tokens["clip_l"]
    assert t["budget"] == 20 and t["count"] <= 20
    assert "masterpiece" in t["dropped"] and "dramatic chiaroscuro lighting" in t["dropped"]
    assert "regal" in f.prompt  # the figure is never dropped
    assert "pour tenir en 20 jetons" in f.description and "les mots de qualité" in f.description
    assert not any(a["in_prompt"] for a in f.chart["aspects"])


def test_budget_with_a_real_clip_tokenizer_built_offline(clip_model: Path) -> None:
    from transformers import CLIPTokenizer

    config = cfg()
    config.sdxl.model = str(clip_model)
    tok_l = CLIPTokenizer.from_pretrained(clip_model / "tokenizer", local_files_only=True)
    tok_g = CLIPTokenizer.from_pretrained(clip_model / "tokenizer_2", local_files_only=True)
    for name, make in CHARTS.items():
        for style in style_names():
            f = fuse(make(), config, style=style)
            for enc, tok in (("clip_l", tok_l), ("clip_g", tok_g)):
                t = f.tokens[enc]
                assert t["counter"] == "clip", (name, style)
                ids = tok(f.prompt, truncation=False)["input_ids"]
                assert len(ids) <= 77 and t["count"] == len(ids) - 2 <= 75, (name, style, f.prompt)
                neg = tok(f.negative_prompt, truncation=False)["input_ids"]
                assert len(neg) <= 77
            assert f.tokens["clip_l"]["dropped"], "one token per character must force compaction"
            assert f.prompt  # never empty: at least (part of) the figure


def test_openai_budget_is_large() -> None:
    f = fuse(leo_chart(), cfg(), backend="openai")
    assert list(f.tokens) == ["approx"]
    assert f.tokens["approx"]["budget"] == 900 and f.tokens["approx"]["dropped"] == []
    assert "masterpiece" in f.prompt


def test_missing_tokenizer_folder_falls_back_to_the_approximation(tmp_path: Path) -> None:
    config = cfg()
    config.sdxl.model = str(tmp_path)  # a folder without tokenizer/
    assert fuse(leo_chart(), config).tokens["clip_l"]["counter"] == "approx"


def test_approximate_counter_rules() -> None:
    approx = ApproxTokenCounter()
    assert approx.count("") == 0
    assert approx.count("a painting of a cat") == 5  # one-token words, counted exactly
    assert approx.count("chiaroscuro") == word_table()["chiaroscuro"] == 4
    assert approx.count("zyxwvutsrq") == 1 + 3  # unknown: 1 + ceil(10 / 3.5)
    assert approx.count("café") == 5  # non-ASCII: one per UTF-8 byte
    assert approx.count("(cat)1.2") == 6 and approx.count("it's") == 2


@pytest.fixture(scope="module")
def real_clip(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return real_clip_tokenizer(tmp_path_factory.mktemp("real_clip"))


def test_the_real_clip_tokenizer_is_the_real_one(real_clip: Any) -> None:
    assert len(real_clip) == 49408
    assert real_clip("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_approximation_never_under_counts_the_real_clip(real_clip: Any) -> None:
    tok = real_clip
    approx = ApproxTokenCounter()
    for word, n in word_table().items():
        assert len(tok.encode(word, add_special_tokens=False)) == n, word
    for make in CHARTS.values():
        for style in style_names():
            for backend in ("sdxl", "sdapi", "openai"):
                f = fuse(make(), cfg(), style=style, backend=backend)
                for text in (f.prompt, f.negative_prompt):
                    assert approx.count(text) >= len(tok.encode(text, add_special_tokens=False)), text


# -- determinism and seeds -------------------------------------------------------------------

def test_deterministic_byte_for_byte_across_processes() -> None:
    here = json.dumps(fuse(leo_chart(), cfg()).to_dict(), ensure_ascii=False, sort_keys=True)
    code = ("import json, sys; sys.path.insert(0, 'tests/support'); from fusion_charts import leo_chart;"
            "from astrowatch.core.config import Config; from astrowatch.fusion import fuse;"
            "print(json.dumps(fuse(leo_chart(), Config()).to_dict(), ensure_ascii=False, sort_keys=True));"
            "bad = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules];"
            "sys.exit(f'heavy imports: {bad}' if bad else 0)")
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONIOENCODING": "utf-8"}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         encoding="utf-8", check=True).stdout.strip()
    assert out == here


def test_seed_without_birth_data_from_the_rounded_positions() -> None:
    a, b = leo_chart(), leo_chart()
    assert chart_seed(a) == chart_seed(b) == fuse(a, cfg()).seed
    assert 0 <= chart_seed(a) < 2**32
    assert chart_seed(leo_chart(user="someone")) != chart_seed(a)

    def moon_moved(by: float) -> int:
        moon = a.points["moon"]
        return chart_seed(dataclasses.replace(a, points=dict(a.points, moon=dataclasses.replace(
            moon, longitude=moon.longitude + by))))

    assert moon_moved(3.0) != chart_seed(a)
    assert moon_moved(0.004) == chart_seed(a)  # another producer's rounding
    extra = dataclasses.replace(a, aspects=a.aspects + [Aspect("sun", "moon", "trine", 3.0)])
    assert chart_seed(extra) == chart_seed(a)  # aspects derive from the positions; orbs differ by producer
    assert chart_seed(dataclasses.replace(a, source_format="kerykeion")) == chart_seed(a)


def test_seed_from_birth_data_when_the_file_has_it() -> None:
    born = {"birth": "1990-08-04T15:30:00+02:00", "lat": 45.764, "lon": 4.8357}
    a = dataclasses.replace(leo_chart(), extra=dict(born))
    same = [dict(born, birth="1990-08-04T13:30:00+00:00"),  # the same instant in UTC
            dict(born, birth="1990-08-04T15:30:20+02:00"),  # seconds do not count
            dict(born, birth="1990-08-04T15:30", tz="Europe/Paris"),  # naive local time + zone
            dict(born, lat=45.7641, lon=4.83574)]  # rounded to 0.01 degree
    for extra in same:
        assert chart_seed(dataclasses.replace(a, extra=extra)) == chart_seed(a), extra
    moved = dict(a.points, moon=dataclasses.replace(a.points["moon"], longitude=a.points["moon"].longitude + 3))
    assert chart_seed(dataclasses.replace(a, points=moved)) == chart_seed(a)  # the birth data decides
    assert chart_seed(dataclasses.replace(a, extra=dict(born, birth="1990-08-04T15:31:00+02:00"))) != chart_seed(a)
    assert chart_seed(dataclasses.replace(a, user="someone")) != chart_seed(a)


def test_an_absolute_birth_instant_leaves_the_place_out_a_wall_clock_time_keeps_it() -> None:
    born = {"birth": "1990-08-04T15:30:00+02:00", "lat": 69.6492, "lon": 18.9553}
    a = dataclasses.replace(leo_chart(), extra=dict(born))
    for extra in (dict(born, lat=66.0),  # kerykeion 4/5 clamp a polar latitude
                  dict(born, lat=48.85, lon=2.35),  # the instant alone decides
                  {"birth": "1990-08-04T15:30:00+02:00"},  # no place at all
                  {"birth": "1990-08-04T15:30", "tz": "Europe/Oslo", "lat": 66.0, "lon": 18.9553}):
        assert chart_seed(dataclasses.replace(a, extra=extra)) == chart_seed(a), extra
    wall = {"birth": "1990-08-04T15:30", "lat": 69.6492, "lon": 18.9553}  # no offset, no zone
    local = chart_seed(dataclasses.replace(a, extra=wall))
    assert local != chart_seed(a)
    assert chart_seed(dataclasses.replace(a, extra=dict(wall, lat=69.64921))) == local  # rounded to 0.01 degree
    assert chart_seed(dataclasses.replace(a, extra=dict(wall, lat=66.0))) != local  # the place fixes the instant
    assert chart_seed(dataclasses.replace(a, extra=dict(wall, lat=None, lon=None))) != local


def test_the_identity_of_release_0_1_0_counted_the_place() -> None:
    from astrowatch.chart.identity import identity_seed, identity_sha256

    born = {"birth": "1990-08-04T15:30:00+02:00", "lat": 45.764, "lon": 4.8357}
    a = dataclasses.replace(leo_chart(), extra=dict(born))
    b = dataclasses.replace(leo_chart(), extra=dict(born, lat=48.85, lon=2.35))
    assert identity_sha256(a) == identity_sha256(b)
    assert identity_sha256(a, legacy=True) != identity_sha256(b, legacy=True)
    # gaby's portrait in tests/fixtures/release-0.1.0.tar.gz was drawn with this seed
    gaby = parse_chart_file(THEMES / "astrowatch_minimal.json", user="gaby")
    assert identity_seed(identity_sha256(gaby, legacy=True)) == 181670504 != chart_seed(gaby)


THEMES = Path(__file__).resolve().parents[2] / "fixtures" / "themes"
# Every fixture is Gaby's chart (born 1990-08-04 15:30 CEST in Lyon), exported by a different producer.
SAME_PERSON = sorted(THEMES.glob("*.json"))


def test_fixtures_cover_every_supported_format() -> None:
    from astrowatch.chart.parse import SOURCE_FORMATS

    formats = {parse_chart_file(f, user="gaby").source_format for f in SAME_PERSON}
    assert formats == set(SOURCE_FORMATS) and len(SAME_PERSON) >= 9


@pytest.mark.parametrize("backend", ["sdxl", "sdapi", "openai"])
def test_same_chart_in_every_format_gives_one_seed_and_one_prompt(backend: str) -> None:
    for style in style_names():
        fusions = {f.name: fuse(parse_chart_file(f, user="gaby"), cfg(), style=style, backend=backend)
                   for f in SAME_PERSON}
        assert len({f.seed for f in fusions.values()}) == 1, {k: f.seed for k, f in fusions.items()}
        assert len({f.prompt for f in fusions.values()}) == 1, {k: f.prompt for k, f in fusions.items()}
        assert len({f.negative_prompt for f in fusions.values()}) == 1


POLAR = sorted((THEMES / "polar").glob("*.json"))  # Ole, born in Tromsø (69.6492 N) at the same instant


def test_a_polar_birth_in_every_format_gives_one_seed_and_one_prompt() -> None:
    charts = {f.name: parse_chart_file(f, user="ole") for f in POLAR}
    assert len(charts) == 8 and {c.source_format for c in charts.values()} >= {
        "kerykeion", "kerykeion-chart", "astrologer-api", "immanuel", "astrowatch"}
    latitudes = {round(c.extra["lat"], 4) for c in charts.values()}
    assert latitudes == {66.0, 69.6492}  # kerykeion 4/5 clamp it, kerykeion 6 and immanuel do not
    seeds = {name: chart_seed(c) for name, c in charts.items()}
    assert len(set(seeds.values())) == 1, seeds
    fusions = {name: fuse(c, cfg()) for name, c in charts.items()}
    assert len({f.prompt for f in fusions.values()}) == 1
    from astrowatch.chart.identity import identity_sha256

    assert len({identity_sha256(c, legacy=True) for c in charts.values()}) == 2  # the old rule: two pictures


def test_same_chart_without_birth_data_seeds_from_the_positions() -> None:
    charts = [parse_chart_file(f, user="gaby") for f in SAME_PERSON]
    with_birth = {chart_seed(c) for c in charts}
    for c in charts:
        c.extra = {}
    without = {chart_seed(c) for c in charts}
    assert len(without) == 1 and without != with_birth


def test_explicit_seed_wins_and_is_checked() -> None:
    assert fuse(leo_chart(), cfg(), seed=42).seed == 42
    for bad in (-1, 2**32):
        with pytest.raises(InputError, match="seed"):
            fuse(leo_chart(), cfg(), seed=bad)


# -- styles ---------------------------------------------------------------------------------

def test_three_shipped_styles_differ() -> None:
    assert {"figuratif", "symbolique", "cosmique"} <= set(style_names())
    prompts = {s: fuse(leo_chart(), cfg(), style=s, backend="openai").prompt for s in style_names()}
    assert sign_text("Leo", "emblem") in prompts["symbolique"]
    assert sign_text("Leo", "constellation") in prompts["cosmique"]
    assert len(set(prompts.values())) == 3
    assert fuse(leo_chart(), cfg()).style == "figuratif"


def test_styles_file_adds_and_overrides(tmp_path: Path) -> None:
    styles = tmp_path / "mine.yaml"
    styles.write_text(
        "styles:\n"
        "  aquarelle:\n    extends: symbolique\n    prefix: delicate watercolor\n"
        "    label: {fr: aquarelle, en: watercolour}\n"
        "  figuratif:\n    prefix: figurative fresco\n")
    config = cfg(styles_file=styles)
    assert "aquarelle" in style_names(styles)
    f = fuse(leo_chart(), config, style="aquarelle", backend="openai")
    assert f.style == "aquarelle" and f.prompt.startswith("delicate watercolor, ")
    assert sign_text("Leo", "emblem") in f.prompt  # inherited from symbolique
    assert "Style aquarelle" in f.description
    g = fuse(leo_chart(), config, backend="openai")
    assert g.prompt.startswith("figurative fresco, ") and "masterpiece" in g.prompt  # other keys kept


def test_unknown_style_lists_the_styles(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown style 'nope'; known styles: cosmique, figuratif, symbolique"):
        fuse(leo_chart(), cfg(), style="nope")
    with pytest.raises(ConfigError, match="unknown style"):
        fuse(leo_chart(), cfg(style="nope"))
    with pytest.raises(InputError, match="theme asks for unknown style 'zz'"):
        fuse(dataclasses.replace(leo_chart(), style="zz"), cfg())
    assert fuse(dataclasses.replace(leo_chart(), style="cosmique"), cfg()).style == "cosmique"


@pytest.mark.parametrize("text, words", [
    ("x:\n  colour: red\n", "unknown key 'colour'"),
    ("x:\n  budget: -3\n", "budget must be an integer"),
    ("x:\n  weights: {figure: 9}\n", "weights.figure"),
    ("x:\n  weights: {hat: 1.2}\n", "unknown slot 'hat'"),
    ("x:\n  central: planet\n", "central must be one of"),
    ("x:\n  extends: nowhere\n", "extends unknown style 'nowhere'"),
    ("- a\n- b\n", "expected a mapping"),
    ("x: [unclosed\n", "not valid YAML"),
])
def test_bad_styles_file(tmp_path: Path, text: str, words: str) -> None:
    styles = tmp_path / "bad.yaml"
    styles.write_text(text)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")) as err:
        fuse(leo_chart(), cfg(styles_file=styles), style="x")
    assert "\n" not in str(err.value)


def test_missing_styles_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        fuse(leo_chart(), cfg(styles_file=tmp_path / "none.yaml"))


# -- description ----------------------------------------------------------------------------

def test_description_in_french_and_english() -> None:
    fr = fuse(leo_chart(), cfg()).description
    assert "Au centre, une figure royale" in fr and "(Soleil en Lion, maison 5)" in fr
    assert "Lune en Poissons" in fr and "Ascendant Scorpion" in fr and "élément dominant : Eau" in fr
    assert "Mars opposition Pluton, orbe 0,2°" in fr and "Rétrograde" in fr
    en = fuse(leo_chart(), cfg(language="en")).description
    assert "At the centre, a regal figure" in en and "(Sun in Leo, house 5)" in en
    assert "Mars opposition Pluto, orb 0.2°" in en and "dominant element: Water" in en


def test_every_sign_element_modality_aspect_and_house_has_data() -> None:
    data = correspondences()
    for sign, entry in data["signs"].items():
        for kind in ("figure", "emblem", "constellation", "mood", "setting", "colours"):
            frag = fragment(entry[kind])
            assert frag.prompt and frag.fr and frag.en, (sign, kind)
            assert "!" not in frag.prompt and frag.prompt == frag.prompt.lower()
    assert set(data["elements"]) == {"Fire", "Earth", "Air", "Water"}
    assert set(data["modalities"]) == {"Cardinal", "Fixed", "Mutable"}
    assert set(data["aspects"]) == {"conjunction", "sextile", "square", "trine", "opposition"}
    assert set(data["houses"]) == set(range(1, 13))


# -- goldens --------------------------------------------------------------------------------

GOLDEN_CASES = [(chart, style, "sdxl", "fr") for chart in CHARTS for style in ("figuratif", "symbolique", "cosmique")]
GOLDEN_CASES += [("leo", "figuratif", "sdapi", "fr"), ("leo", "figuratif", "openai", "fr"),
                 ("leo", "figuratif", "sdxl", "en"), ("aries", "cosmique", "openai", "en")]


def golden_record(f: Fusion, chart: str, language: str) -> dict:
    first = next(iter(f.tokens.values()))
    return {"chart": chart, "style": f.style, "backend": f.backend, "language": language,
            "seed": f.seed, "prompt": f.prompt, "negative_prompt": f.negative_prompt,
            "description": f.description, "tokens": first["count"], "dropped": first["dropped"]}


@pytest.mark.parametrize("chart, style, backend, language", GOLDEN_CASES)
def test_golden(chart: str, style: str, backend: str, language: str) -> None:
    f = fuse(CHARTS[chart](), cfg(language=language), style=style, backend=backend)
    record = golden_record(f, chart, language)
    path = GOLDEN / f"{chart}--{style}--{backend}--{language}.json"
    text = json.dumps(record, ensure_ascii=False, indent=2) + "\n"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path.name} missing: run with ASTROWATCH_UPDATE_GOLDEN=1"
    assert json.loads(path.read_text(encoding="utf-8")) == record
