"""Which seed a chart is drawn with: the one already used for this person's chart, else its own.

The seed of a chart without an explicit ``seed`` parameter is recorded in the ledger
(:mod:`astrowatch.storage.chart_seeds`) under the user and the chart's identity (the birth
instant: :mod:`astrowatch.chart.identity`) the first time it is drawn, and reused from then on:
redos, style changes, a re-export by another producer.  So a change of the identity rule (release
0.1.0 also counted the birth place when the birth time had a zone) changes no picture:

- on first use after an upgrade, the astro jobs the ledger holds are indexed once, newest first:
  each job's theme snapshot is parsed and the seed its picture was drawn with is recorded under the
  chart's current identity;
- a job whose snapshot retention removed is still found: the seed release 0.1.0 would have drawn
  for this chart (user, instant and place) is looked for among the user's pictures.

Jobs with an explicit seed (a redo that changed it, ``astrowatch api``'s ``seed``) record nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from astrowatch.chart.identity import identity_seed, identity_sha256
from astrowatch.core.errors import AstrowatchError
from astrowatch.storage import safefs

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.chart.model import Chart
    from astrowatch.core.config import Config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Ledger

log = structlog.get_logger("astrowatch.seeds")
INDEXED_KEY = "chart_seeds_indexed"  # meta: the jobs made before chart_seeds existed are indexed


class SeedBook:
    def __init__(self, ledger: Ledger, layout: Layout, config: Config) -> None:
        self.ledger = ledger
        self.layout = layout
        self.config = config

    def seed_for(self, chart: Chart) -> int:
        """The seed ``chart`` is drawn with (nothing is recorded)."""
        self._index_once()
        identity = identity_sha256(chart)
        recorded = self.ledger.chart_seed(chart.user, identity)
        if recorded is not None:
            return recorded
        legacy = identity_seed(identity_sha256(chart, legacy=True))
        if any(seed == legacy and "seed" not in params for _, _, seed, params in self.ledger.drawn_seeds(chart.user)):
            return legacy  # drawn by release 0.1.0, its snapshot gone since
        return identity_seed(identity)

    def resolve(self, chart: Chart, *, job_id: str | None = None) -> int:
        """:meth:`seed_for`, recorded for the chart (the first recorded seed stays)."""
        seed = self.seed_for(chart)
        return self.ledger.keep_chart_seed(chart.user, identity_sha256(chart), seed, job_id=job_id)

    def _index_once(self) -> None:
        if self.ledger.meta_get(INDEXED_KEY) is not None:
            return
        from astrowatch.chart.parse import parse_chart_bytes

        limits, indexed = self.config.limits, 0
        for user in self.ledger.astro_users():
            for job_id, path, seed, params in self.ledger.drawn_seeds(user):  # newest first: today's picture wins
                if "seed" in params:
                    continue  # an explicit seed is the job's, not the chart's
                source = path.rsplit("/", 1)[-1]
                try:
                    data = safefs.read_bytes(self.layout.archive_dir(user, job_id) / source, root=self.layout.root,
                                             max_bytes=limits.max_json_bytes, what="theme snapshot").data
                    chart = parse_chart_bytes(data, user=user, source=source, max_bytes=limits.max_json_bytes,
                                              max_depth=limits.max_json_depth)
                except (OSError, AstrowatchError):
                    continue  # removed by retention: the legacy seed still finds it (seed_for)
                self.ledger.keep_chart_seed(user, identity_sha256(chart), seed, job_id=job_id)
                indexed += 1
        self.ledger.meta_put(INDEXED_KEY, "1")
        if indexed:
            log.info("seeds of the charts already drawn recorded: they are reused from now on", charts=indexed)
