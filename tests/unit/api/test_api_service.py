"""``astrowatch/api/service.py`` and ``metrics.py`` without HTTP: a real ledger, the real ingest
and worker in-process (the e2e file drives the same through uvicorn next to the daemon)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import drop_theme

from astrowatch.api.service import ApiError, Service
from astrowatch.backends.base import CancelToken
from astrowatch.intake.ingest import Ingest
from astrowatch.review.reviewer import Reviewer
from astrowatch.runtime.settings import config_from_mapping
from astrowatch.runtime.worker import Worker
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger

DEFAULTS = {"astro": "wheel", "enhance": "lanczos"}


@pytest.fixture
def env(tmp_path: Path):
    config = config_from_mapping({"data_dir": "data", "astro": {"backend": "wheel", "wheel_size": 256}},
                                 base_dir=tmp_path)
    return config, Layout(config.data_dir)


def _take(config, layout: Layout, path: Path) -> str:
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    return Ingest(config, layout, ledger, Reviewer(config, layout, ledger)).handle(str(path))


def _run_next(config, layout: Layout) -> None:
    worker = Worker(config, layout, DEFAULTS, CancelToken())
    worker.execute(worker.ledger.claim_next())
    worker.pool.close()


def test_no_ledger_yet_is_503_with_retry_after(env) -> None:
    config, _layout = env
    with pytest.raises(ApiError) as err:
        Service(config).astro_image("gaby")
    assert err.value.status == 503 and err.value.headers == {"Retry-After": "5"}
    assert "astrowatch run" in err.value.hint
    assert Service(config).health()[0] is False


def test_a_theme_the_daemon_has_not_taken_yet_is_409(env) -> None:
    config, layout = env
    folder = drop_theme(layout.root, "gaby")
    assert _take(config, layout, folder / "theme_gaby.json") == "job"
    service = Service(config)
    taken = service.astro_image("gaby")["job_id"]
    assert service.request_generation("gaby", {}) == ({"job_id": taken, "state": "queued", "created": False,
                                                      "status_url": f"/api/jobs/{taken}"}, False)  # already pending
    seeded, created = service.request_generation("gaby", {"seed": 1})
    assert created and service.request_generation("gaby", {"seed": 1})[0]["job_id"] == seeded["job_id"] != taken
    (folder / "theme_gaby.json").write_text('{"name": "gaby", "changed": true}')
    with pytest.raises(ApiError) as err:
        service.request_generation("gaby", {})
    assert err.value.status == 409 and err.value.headers == {"Retry-After": "5"}
    assert "has not taken" in err.value.error
    with pytest.raises(ApiError) as err:
        service.request_generation("lou", {})
    assert err.value.status == 404


def test_an_api_job_runs_on_the_snapshot_of_the_job_that_took_the_theme(env) -> None:
    config, layout = env
    config.astro.backend = "fake"  # the test backend is reachable only where the config selects it
    folder = drop_theme(layout.root, "gaby")
    _take(config, layout, folder / "theme_gaby.json")
    _run_next(config, layout)
    service = Service(config)
    asked = service.request_generation("gaby", {"backend": "fake", "seed": 5})[0]
    (folder / "theme_gaby.json").unlink()  # the upstream app may rewrite or remove it meanwhile
    _run_next(config, layout)
    job = service.job_view(asked["job_id"])
    assert job["state"] == "inbox" and job["backend"] == "fake" and job["params"] == {"backend": "fake", "seed": 5}
    assert (layout.archive_dir("gaby", asked["job_id"]) / "theme_gaby.json").is_file()
    assert service.astro_image("gaby")["pending"] == f"/api/jobs/{asked['job_id']}/image.png"


def test_metrics_count_failures_by_class_and_add_up_the_histogram_once(env) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from astrowatch.api.metrics import LedgerCollector, render

    config, layout = env
    for user, content in (("gaby", None), ("kim", '{"planets": ')):
        folder = drop_theme(layout.root, user)
        if content:
            (folder / f"theme_{user}.json").write_text(content)
        _take(config, layout, folder / f"theme_{user}.json")
        _run_next(config, layout)
    collector = LedgerCollector(Service(config))
    for _ in range(2):  # a second scrape must not count the same results again
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in
                   text_string_to_metric_families(render(collector, per_user=True)[0].decode()) for s in f.samples}
    assert samples[("astrowatch_failures_total", (("reason", "input"),))] == 1
    assert samples[("astrowatch_image_seconds_count", (("backend", "wheel"),))] == 1
    assert samples[("astrowatch_jobs", (("kind", "astro"), ("state", "failed")))] == 1
    assert samples[("astrowatch_inbox_results", (("user", "gaby"),))] == 1
    assert samples[("astrowatch_daemon_up", ())] == 0  # no daemon here
    history = Ledger(layout.ledger_path).history(Service(config).astro_image("kim")["job_id"])
    assert [h["note"] for h in history if h["to_state"] == "failing"] == ["input"]


def test_metrics_without_the_token_carry_no_user_name(env) -> None:
    from astrowatch.api.metrics import LedgerCollector, render

    config, layout = env
    folder = drop_theme(layout.root, "gaby-secret-name")
    _take(config, layout, folder / "theme_gaby-secret-name.json")
    _run_next(config, layout)
    collector = LedgerCollector(Service(config))
    public, private = (render(collector, per_user=p)[0].decode() for p in (False, True))
    assert "gaby-secret-name" not in public and "astrowatch_inbox_results_all 1.0" in public
    assert 'astrowatch_inbox_results{user="gaby-secret-name"} 1.0' in private


def test_pending_generations_per_user_are_bounded_with_429_and_retry_after(env) -> None:
    from astrowatch.api.app import check_pending

    config, layout = env
    folder = drop_theme(layout.root, "gaby")
    _take(config, layout, folder / "theme_gaby.json")
    _run_next(config, layout)  # the theme's own job is done: nothing pending
    service = Service(config)
    for seed in (1, 2, 3):
        check_pending(service, "gaby", {"seed": seed}, 3)
        assert service.request_generation("gaby", {"seed": seed})[1]
    with pytest.raises(ApiError) as err:
        check_pending(service, "gaby", {"seed": 4}, 3)
    assert err.value.status == 429 and err.value.headers == {"Retry-After": "30"}
    assert "3 generations pending" in err.value.error and "api.max_pending_per_user" in err.value.error
    check_pending(service, "gaby", {"seed": 2}, 3)  # the same request as a pending one: answered with that job
    check_pending(service, "kim", {"seed": 4}, 3)  # per user
    _run_next(config, layout)  # one finishes: room for one more
    check_pending(service, "gaby", {"seed": 4}, 3)
