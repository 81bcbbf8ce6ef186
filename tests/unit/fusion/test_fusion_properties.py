"""Property-based tests: any chart the model can hold fuses without error, within budget for
both encoders (approximate counter and a real offline CLIP tokenizer), deterministically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from extras import require
from fusion_charts import real_clip_tokenizer, tiny_clip_model_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astrowatch.backends.sdxl.prompt import fast_parse
from astrowatch.chart.model import ANGLES, MAJOR_ASPECTS, PLANETS, SIGNS, Aspect, Chart, House, Point
from astrowatch.core.config import Config
from astrowatch.fusion import ApproxTokenCounter, chart_seed, fuse, style_names

POINT_KEYS = PLANETS + ANGLES + ("chiron", "mean_node", "true_node", "south_node", "mean_lilith")
KINDS = tuple(MAJOR_ASPECTS) + ("quincunx", "semi-sextile")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

longitudes = st.floats(min_value=0.0, max_value=359.999, allow_nan=False)


@st.composite
def points(draw: st.DrawFn, key: str) -> Point:
    lon = draw(longitudes)
    house = draw(st.none() | st.integers(1, 12))
    return Point(key, SIGNS[int(lon // 30)], lon, house, draw(st.booleans()))


@st.composite
def charts(draw: st.DrawFn) -> Chart:
    keys = draw(st.lists(st.sampled_from(POINT_KEYS), unique=True, max_size=len(POINT_KEYS)))
    pts = {k: draw(points(k)) for k in keys}
    orbs = st.floats(min_value=0.0, max_value=12.0) | st.sampled_from([math.nan, math.inf, -1.5])
    aspects = draw(st.lists(st.builds(Aspect, st.sampled_from(POINT_KEYS), st.sampled_from(POINT_KEYS),
                                      st.sampled_from(KINDS), orbs), max_size=25))
    houses = [House(i + 1, SIGNS[i], i * 30.0) for i in range(draw(st.sampled_from([0, 12])))]
    return Chart(
        user=draw(st.text(min_size=1, max_size=20)),
        points=pts, houses=houses, aspects=aspects,
        dominant_element=draw(st.none() | st.sampled_from(["Fire", "earth", "Plasma", ""])),
        dominant_modality=draw(st.none() | st.sampled_from(["Fixed", "mutable", "?"])),
    )


@pytest.fixture(scope="module")
def clip_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    require("transformers", "sdxl")
    config = Config()
    config.sdxl.model = str(tiny_clip_model_dir(tmp_path_factory.mktemp("clip")))
    return config


@SETTINGS
@given(chart=charts(), style=st.sampled_from(style_names()), backend=st.sampled_from(["sdxl", "sdapi", "openai"]),
       language=st.sampled_from(["fr", "en"]))
def test_any_chart_fuses_within_budget_deterministically(chart: Chart, style: str, backend: str,
                                                         language: str) -> None:
    config = Config()
    config.astro.language = language
    first = fuse(chart, config, style=style, backend=backend)
    second = fuse(chart, config, style=style, backend=backend)
    assert json.dumps(first.to_dict(), sort_keys=True) == json.dumps(second.to_dict(), sort_keys=True)
    approx = ApproxTokenCounter()
    for t in first.tokens.values():
        assert approx.count(first.prompt) == t["count"] <= t["budget"]
        assert approx.count(first.negative_prompt) == t["negative"]["count"] <= t["budget"]
    assert first.prompt and "!" not in first.prompt + first.negative_prompt
    if backend == "sdxl":  # astrowatch's own prompts never need compel's slow parser
        assert fast_parse(first.prompt) is not None and fast_parse(first.negative_prompt) is not None, first.prompt
    assert first.description and 0 <= first.seed == chart_seed(chart) < 2**32
    json.dumps(first.to_dict())  # serialisable


@SETTINGS
@given(chart=charts(), style=st.sampled_from(style_names()), backend=st.sampled_from(["sdxl", "sdapi"]))
def test_any_chart_fits_a_real_clip_tokenizer(clip_config: Config, chart: Chart, style: str, backend: str) -> None:
    from astrowatch.fusion.tokens import load_clip_tokenizer

    f = fuse(chart, clip_config, style=style, backend=backend)
    for enc, folder in (("clip_l", "tokenizer"), ("clip_g", "tokenizer_2")):
        tok = load_clip_tokenizer(str(Path(clip_config.sdxl.model) / folder))
        assert len(tok.encode(f.prompt)) <= 77, f.prompt  # with start and end tokens
        assert len(tok.encode(f.negative_prompt)) <= 77
        assert f.tokens[enc]["count"] <= 75 and f.tokens[enc]["counter"] == "clip"
    assert f.prompt  # the figure (or its first words) always survives


@pytest.fixture(scope="module")
def real_clip(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return real_clip_tokenizer(tmp_path_factory.mktemp("real_clip"))


@SETTINGS
@given(chart=charts(), style=st.sampled_from(style_names()), backend=st.sampled_from(["sdxl", "sdapi", "openai"]),
       language=st.sampled_from(["fr", "en"]))
def test_the_approximation_never_under_counts_the_real_clip(real_clip: Any, chart: Chart, style: str, backend: str,
                                                            language: str) -> None:
    """The README's claim, on generated charts: the approximate counter (used when the model's own
    tokenizers are not at hand) never counts fewer tokens than the real CLIP tokenizer."""
    config = Config()
    config.astro.language = language
    f = fuse(chart, config, style=style, backend=backend)
    approx = ApproxTokenCounter()
    for text in (f.prompt, f.negative_prompt):
        assert approx.count(text) >= len(real_clip.encode(text, add_special_tokens=False)), text
