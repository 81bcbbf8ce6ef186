"""Prompt embeddings: the fast parser gives exactly what compel's own parser gives.

``fast_parse`` replaces compel's pyparsing grammar for the prompts astrowatch writes (plain text,
commas, ``(words)1.2``); everything else must fall back to compel.  Pinned three ways: the
flattened fragments equal compel's on generated prompts, every golden SDXL prompt takes the fast
path, and the embeddings of the tiny model are bit-identical with and without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from extras import require

os.environ["HF_HUB_OFFLINE"] = "1"
require("compel", "sdxl")

import torch  # noqa: E402
from compel import Compel  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from astrowatch.backends.sdxl.prompt import (  # noqa: E402
    _compel_parse,
    base_compel,
    encode_base,
    encode_refiner,
    fast_parse,
    parse_prompt,
    refiner_compel,
)
from astrowatch.core.errors import InputError  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "fusion"
SDXL_GOLDENS = sorted(GOLDEN.glob("*--sdxl--*.json"))
# pieces of prompts, in and out of the fast subset: words (accents, apostrophes, digits,
# unicode letters and digits), commas and whitespace, weight groups, stray parentheses
PIECES = list("ab é'’_0,, \t\n\r\x0b\x0c\u2028") + ["(", ")1.2", ")2", ")0.5", ")1", ")1.0", "(x)1.5", " (y z)1.25,", "ǅ",
                                    "٣", "²", "’s", "'t", ".", "+", "-", '"', "\\"]


def compel_fragments(prompt: str) -> list[tuple[str, float]] | None:
    """compel's own parse, flattened to (text, weight), or None when it is not one plain prompt."""
    conjunction = Compel.parse_prompt_string(prompt)
    if len(conjunction.prompts) != 1 or conjunction.weights != [1.0]:
        return None
    return [(f.text, f.weight) for f in conjunction.prompts[0].children]


def test_plain_text_is_one_fragment() -> None:
    assert fast_parse("figurative oil painting,  gold\tand ivory") == [("figurative oil painting, gold and ivory", 1.0)]


def test_weight_groups_and_fusing() -> None:
    assert fast_parse("oil, (a ram,with horns)1.25, gold") == [
        ("oil,", 1.0), ("a ram , with horns", 1.25), (", gold", 1.0)]
    assert fast_parse("(a)1.2 (b)1.2 c (d)1") == [("a b", 1.2), ("c d", 1.0)]


@pytest.mark.parametrize("prompt", [
    "", "   ", "a++", "a--, b", "(a)++", "(a:1.2)", "a (b (c)1.2)1.1", '"a b"1.2', "(a, b).blend(1, 1)",
    "(a).swap(b)", "a.and()", "a,,(b)1.2", "a(b)1.2", "(a)1.2x", "(a)1.", "(a) 1.2. b", "a\\(b\\)",
    "café = bar", "lune\u00a0noire",
])
def test_anything_else_falls_back_to_compel(prompt: str) -> None:
    assert fast_parse(prompt) is None
    assert parse_prompt(prompt) == Compel.parse_prompt_string(prompt)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=25).map("".join))
def test_fast_parse_equals_compel_on_generated_prompts(prompt: str) -> None:
    fast = fast_parse(prompt)
    if fast is not None:
        assert fast == compel_fragments(prompt)


@pytest.mark.parametrize("golden", SDXL_GOLDENS, ids=lambda p: p.stem)
def test_every_golden_sdxl_prompt_takes_the_fast_path(golden: Path) -> None:
    data = json.loads(golden.read_text(encoding="utf-8"))
    for prompt in (data["prompt"], data["negative_prompt"]):
        assert fast_parse(prompt) is not None, prompt
        assert fast_parse(prompt) == compel_fragments(prompt)


def test_compel_parses_are_memoised() -> None:
    prompt = "a lion++, (gold)1.3 .and()"  # outside the fast subset
    parse_prompt(prompt)
    hits = _compel_parse.cache_info().hits
    assert parse_prompt(prompt) is parse_prompt(prompt)
    assert _compel_parse.cache_info().hits == hits + 2


def test_hostile_input_is_refused_in_linear_time() -> None:
    # nested quantifiers would backtrack exponentially here; one character per step does not
    assert fast_parse("a, " * 50_000 + ".") is None
    assert fast_parse("(" + "a " * 50_000 + ")1.2.") is None


@pytest.fixture(scope="module")
def tiny_pipes(tiny_sdxl: tuple[Path, Path]):
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl[0], local_files_only=True)
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_sdxl[1], local_files_only=True)
    return base, refiner


def test_embeddings_are_bit_identical_with_compels_parser(tiny_pipes) -> None:
    base, refiner = tiny_pipes
    fast_b, slow_b = base_compel(base), base_compel(base, fast=False)
    fast_r, slow_r = refiner_compel(refiner), refiner_compel(refiner, fast=False)
    for golden in SDXL_GOLDENS[:4]:
        data = json.loads(golden.read_text(encoding="utf-8"))
        prompt, negative = data["prompt"], data["negative_prompt"]
        for fast, slow in ((encode_base(fast_b, prompt, negative, zero_empty_negative=True),
                            encode_base(slow_b, prompt, negative, zero_empty_negative=True)),
                           (encode_refiner(fast_r, prompt, negative), encode_refiner(slow_r, prompt, negative))):
            for name in ("embeds", "pooled", "negative", "negative_pooled"):
                assert torch.equal(getattr(fast, name), getattr(slow, name)), (golden.stem, name)


def encoder_calls(pipe, compel, prompts: list[str], negative: str) -> list[int]:
    """Cumulative text-encoder forward calls after encoding each prompt (real forward hooks)."""
    calls: list[int] = []
    counts: list[int] = []
    hooks = [enc.register_forward_hook(lambda *_a: calls.append(1)) for enc in (pipe.text_encoder, pipe.text_encoder_2)]
    try:
        for prompt in prompts:
            encode_base(compel, prompt, negative, zero_empty_negative=True)
            counts.append(len(calls))
    finally:
        for hook in hooks:
            hook.remove()
    return counts


def test_a_repeated_text_goes_through_the_encoders_once(tiny_pipes) -> None:
    base, _ = tiny_pipes
    prompts = ["a ram of gold, (a red sky)1.2", "a cat of gold, (a red sky)1.2", "a ram of gold, (a red sky)1.2"]
    plain = encoder_calls(base, base_compel(base, fast=False), prompts, "blurry, text")
    cached = encoder_calls(base, base_compel(base), prompts, "blurry, text")
    assert cached[0] == plain[0]  # the first time, the same work
    assert cached[1] - cached[0] < plain[1] - plain[0]  # a new prompt: the negative is not encoded again
    assert cached[2] == cached[1]  # a prompt seen before: nothing at all


@pytest.mark.parametrize("prompt", ["(" * 3000 + "a" + ")1.1" * 3000, "withLora(sun, 0.8)", "( )1.2"])
def test_a_prompt_compel_cannot_use_is_an_input_error(prompt: str) -> None:
    with pytest.raises(InputError) as err:
        parse_prompt(prompt)
    assert err.value.message.startswith("prompt: ") and err.value.hint
