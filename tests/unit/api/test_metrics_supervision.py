"""``/metrics`` carries the daemon's own thread deaths and stuck jobs from its state file (counted
across restarts by runtime.guard), and zeros when the daemon never wrote any."""

from __future__ import annotations

import json
from pathlib import Path

from astrowatch.api.metrics import LedgerCollector, render
from astrowatch.api.service import Service
from astrowatch.runtime.settings import config_from_mapping
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger


def _samples(config) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = render(LedgerCollector(Service(config)))[0].decode()
    return {(s.name, s.labels.get("what", "")): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name.startswith("astrowatch_thread")}


def test_thread_deaths_and_stuck_jobs_reach_metrics(tmp_path: Path) -> None:
    config = config_from_mapping({"data_dir": "data"}, base_dir=tmp_path)
    layout = Layout(config.data_dir)
    layout.ensure()
    Ledger(layout.ledger_path).close()
    assert _samples(config) == {("astrowatch_thread_deaths_total", "died"): 0.0,
                                ("astrowatch_thread_deaths_total", "stuck"): 0.0}
    layout.daemon_state_path.write_text(json.dumps(
        {"pid": 0, "stopped": True, "supervision": {"thread_deaths": 2, "jobs_stuck": 1, "last": None}}))
    assert _samples(config) == {("astrowatch_thread_deaths_total", "died"): 2.0,
                                ("astrowatch_thread_deaths_total", "stuck"): 1.0}
