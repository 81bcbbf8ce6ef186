"""Prompt fusion: a natal chart becomes one figurative prompt that fits the text encoders.

``fuse(chart, config)`` reads the chart (:mod:`.motifs`), orders the motifs by importance,
compacts them to the budget measured with the backend's tokenizers (:mod:`.compact`,
:mod:`.tokens`), renders the weight syntax for the backend and writes the reviewer's
description (:mod:`.describe`).  The same chart, style, backend and configuration give the same
output byte for byte; the default seed derives from the user and the chart's content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from astrowatch.chart.identity import identity_seed, identity_sha256
from astrowatch.core.errors import ConfigError, InputError
from astrowatch.fusion.compact import Compacted, compact
from astrowatch.fusion.data import load_style, style_names
from astrowatch.fusion.describe import describe
from astrowatch.fusion.motifs import Motif, Reading, build_motifs, negative_motifs, read_chart
from astrowatch.fusion.tokens import counters_for

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.chart.model import Chart, Point
    from astrowatch.core.config import Config
    from astrowatch.fusion.data import Style

OPENAI_BUDGET = 900  # approx tokens: no CLIP truncation behind the OpenAI images API
SEED_LIMIT = 2**32
TRIGGER_PRIORITY = 1000  # above every motif: a LoRA's trigger word is placed first and kept


@dataclass
class Fusion:
    prompt: str
    negative_prompt: str
    description: str
    style: str
    seed: int
    tokens: dict[str, Any]  # {"clip_l": {"count", "budget", "dropped", ...}, "clip_g": {...}} or {"approx": ...}
    chart: dict[str, Any]  # summary: user, sun/moon/ascendant, dominants, aspects used
    backend: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "description": self.description,
            "style": self.style,
            "seed": self.seed,
            "backend": self.backend,
            "tokens": self.tokens,
            "chart": self.chart,
        }


def chart_seed(chart: Chart) -> int:
    """Deterministic seed in ``0 <= seed < 2**32`` from the user and the chart itself.

    The birth instant (UTC minute; the place only for a wall-clock time without a zone) when the
    file has it, else the rounded positions the prompt reads (:mod:`astrowatch.chart.identity`):
    the export format, the file's bytes and its path do not count, so the same chart in another
    format gives the same seed.  The daemon reuses the seed a chart was first drawn with
    (:mod:`astrowatch.pipeline.seeds`); this is the seed of a chart it has never drawn.
    """
    return identity_seed(identity_sha256(chart))


def _pick_style(chart: Chart, config: Config, style: str | None) -> Style:
    styles_file = config.astro.styles_file
    if style is None and chart.style:
        try:
            return load_style(chart.style, styles_file)
        except ConfigError:
            known = ", ".join(style_names(styles_file))
            raise InputError(
                f"the theme asks for unknown style {chart.style!r}; known styles: {known}") from None
    return load_style(style or config.astro.style, styles_file)


def _point_summary(point: Point | None) -> dict[str, Any] | None:
    return None if point is None else {"sign": point.sign, "house": point.house}


def _summary(reading: Reading, kept: set[str]) -> dict[str, Any]:
    chart = reading.chart
    return {
        "user": chart.user,
        "sun": _point_summary(chart.sun),
        "moon": _point_summary(chart.moon),
        "ascendant": _point_summary(chart.ascendant),
        "dominant_element": reading.element,
        "dominant_modality": reading.modality,
        "aspects": [{"p1": a.p1, "p2": a.p2, "kind": a.kind, "orb": round(abs(a.orb), 2),
                     "in_prompt": f"aspects:{i}" in kept} for i, (a, _) in enumerate(reading.aspects)],
        "house_emphasis": reading.house[0] if reading.house else None,
        "retrograde": list(reading.retrograde),
        "source_format": chart.source_format,
    }


def _tokens(positive: Compacted, negative: Compacted, counter_names: dict[str, str]) -> dict[str, Any]:
    return {
        name: {
            "count": positive.counts[name],
            "budget": positive.budget,
            "dropped": list(positive.dropped),
            "shortened": list(positive.shortened),
            "counter": counter_names[name],
            "negative": {"count": negative.counts[name], "budget": negative.budget,
                         "dropped": list(negative.dropped)},
        }
        for name in positive.counts
    }


def _check_seed(seed: int | None, chart: Chart) -> int:
    if seed is None:
        return chart_seed(chart)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise InputError(f"seed {seed!r} is not an integer in 0..{SEED_LIMIT - 1}")
    return seed


def fuse(chart: Chart, config: Config, *, style: str | None = None, backend: str = "sdxl",
         seed: int | None = None, triggers: Sequence[str] = ()) -> Fusion:
    """Fuse ``chart`` into a prompt for ``backend`` (``sdxl``, ``sdapi`` or ``openai``).

    Any other backend name (``fake``, ``wheel``...) is rendered and measured like ``sdxl``.
    Style: ``style``, else the theme's own ``style``, else ``astro.style``.
    ``triggers`` (LoRA trigger words) come first and are never dropped: the chart's motifs are
    compacted into what is left of the budget.
    """
    chosen = _pick_style(chart, config, style)
    seed = _check_seed(seed, chart)
    counters = counters_for(config, backend)
    budget = OPENAI_BUDGET if backend == "openai" else chosen.budget
    reading = read_chart(chart, chosen)
    first = [Motif(slot="trigger", key=f"trigger:{i}", text=t, priority=TRIGGER_PRIORITY, essential=True)
             for i, t in enumerate(triggers)]
    positive = compact(first + build_motifs(reading), counters, budget, backend)
    negative = compact(negative_motifs(chosen), counters, budget, backend)
    language = config.astro.language
    return Fusion(
        prompt=positive.text,
        negative_prompt=negative.text,
        description=describe(reading, language, positive.dropped_keys, budget),
        style=chosen.name,
        seed=seed,
        tokens=_tokens(positive, negative, {k: c.name for k, c in counters.items()}),
        chart=_summary(reading, positive.kept),
        backend=backend,
    )


def render_key(chart: Chart, config: Config, params: dict[str, Any], *, seed: int | None = None) -> str:
    """sha256 of what an astro job draws from: the fused prompt, negative prompt, seed, style and
    parameters.  The prompt is fused uncompacted (the OpenAI budget, approximate tokens), so the key
    is cheap (no tokenizer is loaded) and equal keys mean equal prompts for every backend.  The
    seed is ``params["seed"]``, else ``seed`` (the one recorded for the chart), else the chart's."""
    seed = params.get("seed", seed)
    fusion = fuse(chart, config, style=params.get("style"), backend="openai",
                  seed=int(seed) if seed is not None else None)
    blob = json.dumps({"prompt": fusion.prompt, "negative": fusion.negative_prompt, "seed": fusion.seed,
                       "style": fusion.style, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
