"""Natal chart: one typed model (:mod:`.model`) parsed from every producer's JSON (:mod:`.parse`)."""

from astrowatch.chart.model import Aspect, Chart, House, Point

__all__ = ["Aspect", "Chart", "House", "Point"]
