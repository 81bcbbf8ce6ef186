"""Prompt fusion: natal chart -> figurative prompt within the text encoders' token budget.

Public API::

    fuse(chart, config, *, style=None, backend="sdxl", seed=None) -> Fusion
    chart_seed(chart) -> int
    render_key(chart, config, params) -> str
"""

from astrowatch.fusion.data import DEFAULT_BUDGET, load_style, style_names
from astrowatch.fusion.fuse import OPENAI_BUDGET, Fusion, chart_seed, fuse, render_key
from astrowatch.fusion.tokens import ApproxTokenCounter, ClipTokenCounter, counters_for

__all__ = [
    "DEFAULT_BUDGET",
    "OPENAI_BUDGET",
    "ApproxTokenCounter",
    "ClipTokenCounter",
    "Fusion",
    "chart_seed",
    "counters_for",
    "fuse",
    "load_style",
    "render_key",
    "style_names",
]
