"""Dominant element and modality of a chart.

When a file does not carry its own distribution, each point's sign votes for its element and
modality with kerykeion's conventional weight: Sun, Moon, Ascendant 2.0; Mercury, Venus, Mars,
Midheaven 1.5; Jupiter, Saturn 1.0; Chiron 0.6; Uranus, Neptune, Pluto and the lunar nodes 0.5.
Points not listed (descendant, imum coeli, Lilith) do not vote.

Ties are broken by a fixed order, Fire > Earth > Air > Water and Cardinal > Fixed > Mutable, so
the same chart always gives the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from astrowatch.chart.model import ELEMENTS, MODALITIES, Point

POINT_WEIGHTS: dict[str, float] = {
    "sun": 2.0, "moon": 2.0, "ascendant": 2.0,
    "mercury": 1.5, "venus": 1.5, "mars": 1.5, "medium_coeli": 1.5,
    "jupiter": 1.0, "saturn": 1.0,
    "chiron": 0.6,
    "uranus": 0.5, "neptune": 0.5, "pluto": 0.5,
    "mean_node": 0.5, "true_node": 0.5, "south_node": 0.5,
}


def pick(scores: Mapping[str, float], order: Iterable[str]) -> str | None:
    """The name in ``order`` with the highest positive score; the first one wins a tie."""
    best: str | None = None
    best_score = 0.0
    for name in order:
        score = scores.get(name, 0.0)
        if score > best_score:
            best, best_score = name, score
    return best


def element_scores(points: Mapping[str, Point]) -> dict[str, float]:
    scores = dict.fromkeys(ELEMENTS, 0.0)
    for key, point in points.items():
        scores[point.element] += POINT_WEIGHTS.get(key, 0.0)
    return scores


def modality_scores(points: Mapping[str, Point]) -> dict[str, float]:
    scores = dict.fromkeys(MODALITIES, 0.0)
    for key, point in points.items():
        scores[point.modality] += POINT_WEIGHTS.get(key, 0.0)
    return scores


def compute_dominants(points: dict[str, Point]) -> tuple[str | None, str | None]:
    """(dominant element, dominant modality) with the conventional weights; None if nothing votes."""
    return pick(element_scores(points), ELEMENTS), pick(modality_scores(points), MODALITIES)
