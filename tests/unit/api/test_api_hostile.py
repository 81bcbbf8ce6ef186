"""The API's reads and decisions against a hostile shared tree: FIFOs and links never block or
leak, parameters are held to their bounds, backends to those the config enables."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

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

SECRET = "MARKER-SECRET-0451"


@pytest.fixture
def waiting(tmp_path: Path) -> tuple[Service, Layout, str]:
    """gaby's chart rendered and waiting in the inbox."""
    config = config_from_mapping({"data_dir": "data", "astro": {"backend": "wheel", "wheel_size": 256}},
                                 base_dir=tmp_path)
    layout = Layout(config.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    folder = drop_theme(layout.root, "gaby")
    Ingest(config, layout, ledger, Reviewer(config, layout, ledger)).handle(str(folder / "theme_gaby.json"))
    worker = Worker(config, layout, {"astro": "wheel", "enhance": "lanczos"}, CancelToken())
    job = worker.ledger.claim_next()
    assert job is not None
    worker.execute(job)
    worker.pool.close()
    return Service(config), layout, job.id


def _within(seconds: float, call: Any) -> Any:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except ApiError as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"blocked for more than {seconds} s"
    return out[0]


@pytest.mark.timeout(30)
def test_the_api_answers_while_a_fifo_takes_the_results_place(waiting: tuple[Service, Layout, str]) -> None:
    service, layout, job_id = waiting
    image = next((layout.root / "inbox" / "gaby").glob("*.png"))
    stem = image.name.rsplit(".", 1)[0]
    os.mkfifo(layout.root / "inbox" / "gaby" / "x.fifo")
    os.replace(layout.root / "inbox" / "gaby" / "x.fifo", image.with_name(stem + ".json"))  # a FIFO sidecar
    assert [i["job_id"] for i in _within(5, lambda: service.inbox(None)[0])] == [job_id]
    assert _within(5, lambda: service.job_view(job_id))["prompt"] is None
    assert _within(5, lambda: service.pending_image(job_id))[:8] == b"\x89PNG\r\n\x1a\n"
    image.unlink()
    os.mkfifo(image)  # a FIFO where the result was
    answer = _within(5, lambda: service.pending_image(job_id))
    assert isinstance(answer, ApiError) and answer.status == 404
    assert _within(5, lambda: service.astro_image("gaby"))["pending"] is None


def test_a_linked_theme_or_result_is_never_read(waiting: tuple[Service, Layout, str], tmp_path: Path) -> None:
    service, layout, job_id = waiting
    secret = tmp_path / "secret.key"
    secret.write_text(SECRET)
    image = next((layout.root / "inbox" / "gaby").glob("*.png"))
    image.unlink()
    image.symlink_to(secret)
    with pytest.raises(ApiError) as err:
        service.pending_image(job_id)
    assert err.value.status == 404 and SECRET not in err.value.error
    theme = layout.root / "Utilisateurs" / "gaby" / "theme_gaby.json"
    theme.unlink()
    theme.symlink_to(secret)
    with pytest.raises(ApiError) as err:
        service.request_generation("gaby", {})
    assert err.value.status == 404 and "symbolic link" in err.value.error


@pytest.mark.parametrize(("params", "words"), [
    ({"steps": 10_000}, "'steps'"), ({"backend": "fake"}, "enables for astro jobs: wheel"),
    ({"base_url": "http://attacker.example"}, "'base_url' cannot be set"),
])
def test_generation_and_redo_parameters_are_held_to_bounds(waiting: tuple[Service, Layout, str],
                                                           params: dict[str, Any], words: str) -> None:
    service, layout, job_id = waiting
    for call in (lambda: service.request_generation("gaby", params),
                 lambda: service.decide(job_id, "redo", params=params)):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status == 422 and words in err.value.error
    assert service.job_view(job_id)["state"] == "inbox"
    assert next((layout.root / "inbox" / "gaby").glob("*.png")).is_file()  # nothing moved
    assert "decided_via" not in next((layout.root / "inbox" / "gaby").glob("*.json")).read_text()
