"""Prompt embeddings for the SDXL backend: compel, with a fast path for its parser.

compel (``CompelForSDXL`` for the base: both encoders, no 77-token truncation; a single-encoder
``Compel`` on ``tokenizer_2`` for the refiner) parses every prompt with a pyparsing grammar, once
per encoder and once more for the negative prompt.  On the tiny test model that parse is ~85 % of
compel's time (bench/README.md, finding 4), and on a GPU it would be most of the daemon's own
per-image cost.  So the parse is replaced, on the compel instances this module builds, by
:func:`parse_prompt`:

* the prompts astrowatch writes -- plain text with commas and ``(words)1.2`` weights, nothing
  else -- are split by a regular expression into the same fragments and weights (``fast_parse``);
  ``tests/test_sdxl_prompt.py`` checks the fragments and weights against compel's own parser
  (generated prompts and every golden one) and the embeddings bit for bit, so a compel release
  that parses differently fails the suite;
* anything else (``word++``, ``.blend()``, ``.and()``, quotes, nesting, a reviewer's hand-edited
  prompt) goes to compel's parser, memoised.

And each text's conditioning tensors are cached per loaded model: the negative prompt, the same
for every image of a style, goes through the text encoders once (``_speed_up``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import torch

from astrowatch.core.errors import InputError

# text that compel's grammar reads as plain words: letters, digits, '_', the whitespace pyparsing
# skips (space, tab, CR, LF: not VT or FF, which compel refuses), commas, apostrophes; no
# ( ) " . + - = \ nor anything else.  One character per repetition and '(' only opening a
# group: the match is linear, even on hostile input.
# A group counts only after whitespace or at the start (compel reads 'a(b)1.2' as plain text).
_PLAIN = r"[\w \t\n\r,'’]"
_GROUP = rf"(?<![^ \t\n\r])\(({_PLAIN}+)\)([0-9]+(?:\.[0-9]+)?)(?=[ \t\n\r,]|$)"
_PROMPT_RE = re.compile(rf"(?:{_PLAIN}|{_GROUP})*")
_PART_RE = re.compile(rf"{_GROUP}|({_PLAIN}+)")
_COMMA_RE = re.compile(r",(\S)")  # compel puts a space after every comma first
_WORD_OR_COMMA_RE = re.compile(r"[^\s,]+|,")


def fast_parse(prompt: str) -> list[tuple[str, float]] | None:
    """``[(text, weight), ...]`` as compel would flatten ``prompt``, or None if it is outside the
    plain-text-and-``(words)N``-weights subset (or blank) and needs compel's own parser."""
    prompt = _COMMA_RE.sub(r", \1", prompt)
    if not prompt.strip() or not _PROMPT_RE.fullmatch(prompt):
        return None
    fragments: list[tuple[str, float]] = []
    for match in _PART_RE.finditer(prompt):
        inner, weight, plain = match.groups()
        if plain is None:  # inside parentheses compel reads commas as words of their own
            text, value = " ".join(_WORD_OR_COMMA_RE.findall(inner)), float(weight)
        else:
            text, value = " ".join(plain.split()), 1.0
        if not text:
            if plain is None:  # "( )1.2": leave the odd cases to compel
                return None
            continue
        if fragments and fragments[-1][1] == value:  # compel fuses neighbours of equal weight
            fragments[-1] = (fragments[-1][0] + " " + text, value)
        else:
            fragments.append((text, value))
    return fragments


@functools.lru_cache(maxsize=256)
def _compel_parse(prompt: str) -> Any:
    from compel import Compel

    return Compel.parse_prompt_string(prompt)


def parse_prompt(prompt: str) -> Any:
    """A ``compel.prompt_parser.Conjunction`` for ``prompt``: fast path, else compel's parser.

    compel accepts almost anything, but a reviewer's redo prompt can still defeat it (thousands of
    nested brackets exhaust the recursion limit; ``withLora(...)`` alone leaves no text): that is
    the prompt's fault, an ``InputError`` that fails the job at once with the reason."""
    fragments = fast_parse(prompt)
    if fragments is None:
        try:
            conjunction = _compel_parse(prompt)
        except Exception as exc:
            raise InputError(f"prompt: compel cannot parse it ({type(exc).__name__}: {str(exc)[:120]})",
                             hint="simplify the weighting syntax: (words)1.2, word+, word-") from None
        if not conjunction.prompts:
            raise InputError("prompt: no text left for the text encoders once compel's syntax is removed",
                             hint="write the picture in words; (words)1.2 sets a weight")
        return conjunction
    from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

    return Conjunction([FlattenedPrompt([Fragment(text, weight) for text, weight in fragments])], [1.0])


def _speed_up(*compels: Any, cached_texts: int = 16) -> None:
    """Shadow two methods on each compel instance (compel calls both through ``self``):
    ``parse_prompt_string`` by :func:`parse_prompt`, and ``build_conditioning_tensor`` by an LRU
    cache of its tensors per text, so the negative prompt (one per style) and a redo's prompt are
    encoded once.  The cache lives and dies with the instance, i.e. with the loaded model;
    compel builds new tensors from the cached ones (``torch.cat``), never changing them."""
    for compel in compels:
        compel.parse_prompt_string = parse_prompt
        compel.build_conditioning_tensor = functools.lru_cache(maxsize=cached_texts)(compel.build_conditioning_tensor)


@dataclass
class Embeds:
    embeds: torch.Tensor
    pooled: torch.Tensor
    negative: torch.Tensor
    negative_pooled: torch.Tensor

    def kwargs(self) -> dict[str, torch.Tensor]:
        return {"prompt_embeds": self.embeds, "pooled_prompt_embeds": self.pooled,
                "negative_prompt_embeds": self.negative, "negative_pooled_prompt_embeds": self.negative_pooled}


def base_compel(pipe: Any, *, fast: bool = True) -> Any:
    """``CompelForSDXL`` on the base pipeline; ``fast=False``: compel exactly as shipped."""
    from compel import CompelForSDXL

    _enable_packrat()
    compel = CompelForSDXL(pipe)
    if fast:
        _speed_up(compel.compel_1, compel.compel_2)
    return compel


def _enable_packrat() -> None:
    """For the prompts that do reach compel's parser: pyparsing's packrat memoisation gives
    identical embeddings ~17 ms sooner (bench/README.md)."""
    import pyparsing

    pyparsing.ParserElement.enable_packrat()


def refiner_compel(pipe: Any, *, fast: bool = True) -> Any:
    from compel import Compel, ReturnedEmbeddingsType

    _enable_packrat()
    compel = Compel(
        tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2,
        returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
        requires_pooled=True, truncate_long_prompts=False,
    )
    if fast:
        _speed_up(compel)
    return compel


def encode_base(compel: Any, prompt: str, negative: str, *, zero_empty_negative: bool) -> Embeds:
    """Both encoders, padded to the same length, no truncation (a 150-token prompt stays 150+)."""
    with torch.no_grad():
        out = compel(prompt, negative_prompt=negative)
    emb = Embeds(out.embeds, out.pooled_embeds, out.negative_embeds, out.negative_pooled_embeds)
    if zero_empty_negative and not negative.strip():  # what diffusers does for an empty negative
        emb.negative = torch.zeros_like(emb.negative)
        emb.negative_pooled = torch.zeros_like(emb.negative_pooled)
    return emb


def encode_refiner(compel: Any, prompt: str, negative: str) -> Embeds:
    with torch.no_grad():
        embeds, pooled = compel([prompt, negative])  # padded to the same length by compel
    return Embeds(embeds[:1], pooled[:1], embeds[1:], pooled[1:])
