"""Review decisions against a hostile shared tree: forged results, links to secrets, FIFOs, sidecar
edits beyond the editable fields, out-of-bounds redo parameters."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import make_image

from astrowatch.backends.base import CancelToken
from astrowatch.core.config import Config
from astrowatch.core.errors import NotFound
from astrowatch.intake.ingest import Ingest
from astrowatch.review.inbox import apply_sets, edit_sidecar, find_inbox_item, inbox_items
from astrowatch.review.reviewer import Reviewer
from astrowatch.runtime.worker import Worker
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger

SECRET = "MARKER-SECRET-0451"


@pytest.fixture
def site(tmp_path: Path) -> Any:
    cfg = Config(data_dir=tmp_path / "data")
    cfg.enhance.min_side = 8
    cfg.enhance.backend = "lanczos"
    layout = Layout(cfg.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    reviewer = Reviewer(cfg, layout, ledger)
    ingest = Ingest(cfg, layout, ledger, reviewer)
    worker = Worker(cfg, layout, {"astro": "wheel", "enhance": "lanczos"}, CancelToken())
    secret = tmp_path / "secret.key"
    secret.write_text(SECRET)
    return cfg, layout, ledger, reviewer, ingest, worker, secret


def _result(site: Any, name: str = "p.jpg") -> Path:
    _cfg, layout, ledger, _reviewer, ingest, worker, _secret = site
    (layout.users / "gaby").mkdir(exist_ok=True)
    make_image(layout.users / "gaby" / name)
    ingest.handle(str(layout.users / "gaby" / name))
    worker.execute(ledger.claim_next())
    return next((layout.root / "inbox" / "gaby").glob(f"{name.split('.')[0]}.*.png"))


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()`` in a thread: a FIFO opened by name would block it for ever."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"blocked for more than {seconds} s"
    return out[0]


def _no_secret_in(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert SECRET.encode() not in path.read_bytes(), path


def test_publishing_records_the_hash_of_the_image_in_the_ledger(site: Any) -> None:
    _cfg, _layout, ledger, *_ = site
    image = _result(site)
    job = ledger.get(image.name.split(".")[1])
    assert (job.result or {})["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()


def test_a_forged_png_under_a_waiting_jobs_name_is_not_delivered(site: Any) -> None:
    _cfg, layout, ledger, reviewer, *_ = site
    image = _result(site)
    job_id = image.name.split(".")[1]
    genuine = image.read_bytes()
    forged = layout.root / "approved" / image.name
    make_image(forged, color=(1, 2, 3))
    assert reviewer.handle(forged) == "bounced"
    assert ledger.get(job_id).state == "inbox" and image.read_bytes() == genuine  # the real one untouched
    note = image.with_name(image.name.rsplit(".", 1)[0] + ".error.txt").read_text()
    assert f"not the image astrowatch made for job {job_id}" in note
    assert not forged.exists() and not (layout.root / "datasets" / "gaby").exists()
    assert (layout.root / "failed" / "_review" / image.name).exists()
    os.replace(image, layout.root / "approved" / image.name)  # the genuine one is still approved as usual
    assert reviewer.handle(layout.root / "approved" / image.name) == "decided"
    assert (layout.root / "datasets" / "gaby" / "p.png").read_bytes() == genuine


def test_a_caption_linked_to_a_secret_is_never_read(site: Any) -> None:
    _cfg, layout, ledger, reviewer, *_ = site
    image = _result(site)
    stem = image.name.rsplit(".", 1)[0]
    approved = layout.root / "approved"
    image.with_name(stem + ".txt").unlink()
    (approved / f"{stem}.txt").symlink_to(site[-1])
    (approved / f"{stem}.json").symlink_to(site[-1])
    os.replace(image, approved / image.name)
    assert reviewer.handle(approved / image.name) == "decided"
    _no_secret_in(layout.root)
    job = ledger.get(image.name.split(".")[1])
    assert SECRET not in json.dumps(job.decision_data)


@pytest.mark.timeout(30)
def test_fifos_in_the_decision_folders_and_the_inbox_block_nothing(site: Any) -> None:
    _cfg, layout, ledger, reviewer, *_ = site
    image = _result(site)
    stem = image.name.rsplit(".", 1)[0]
    job_id = stem.split(".")[1]
    approved = layout.root / "approved"
    os.mkfifo(image.with_name(stem + ".txt.tmp"))
    os.replace(image.with_name(stem + ".txt.tmp"), image.with_name(stem + ".txt"))  # a FIFO caption in the inbox
    items = _within(5, lambda: inbox_items(layout, ledger))
    assert [i.job.id for i in items] == [job_id]
    assert _within(5, items[0].caption) == "" and _within(5, items[0].bounce_note) is None
    fifo = approved / image.name  # a FIFO named like the result, in approved/
    os.mkfifo(fifo)
    assert _within(5, lambda: reviewer.handle(fifo)) == "bounced"
    assert ledger.get(job_id).state == "inbox" and image.is_file() and not fifo.exists()
    assert "not a regular file" in image.with_name(stem + ".error.txt").read_text()
    os.mkfifo(approved / f"{stem}.json")  # and a FIFO sidecar moved along with the real image
    os.replace(image, approved / image.name)
    assert _within(5, lambda: reviewer.handle(approved / image.name)) == "decided"


def test_a_symlinked_result_in_approved_is_bounced_not_followed(site: Any) -> None:
    _cfg, layout, ledger, reviewer, *_ = site
    image = _result(site)
    link = layout.root / "approved" / image.name
    link.symlink_to(site[-1])
    assert reviewer.handle(link) == "bounced"
    assert "symbolic link" in image.with_name(image.name.rsplit(".", 1)[0] + ".error.txt").read_text()
    assert ledger.get(image.name.split(".")[1]).state == "inbox"
    _no_secret_in(layout.root)


@pytest.mark.parametrize(("params", "reason"), [
    ({"url": "http://attacker.example:7860"}, "'url' cannot be set"),
    ({"scale_factor": 5000}, "'scale_factor'"),
    ({"backend": "fake"}, "enables for enhance jobs: lanczos"),
])
def test_a_redo_asking_for_what_it_may_not_is_bounced_with_the_reason(site: Any, params: dict[str, Any],
                                                                      reason: str) -> None:
    _cfg, layout, ledger, reviewer, *_ = site
    image = _result(site)
    sidecar_path = image.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["params"].update(params)
    sidecar_path.write_text(json.dumps(sidecar))
    os.replace(image, layout.root / "redo" / image.name)
    assert reviewer.handle(layout.root / "redo" / image.name) == "bounced"
    assert reason in image.with_name(image.name.rsplit(".", 1)[0] + ".error.txt").read_text()
    assert ledger.get(image.name.split(".")[1]).state == "inbox"


def test_a_redo_within_bounds_is_queued(site: Any) -> None:
    _cfg, layout, ledger, reviewer, *_ = site
    image = _result(site)
    apply_sets(image.with_suffix(".json"), {"scale_factor": 3}, root=layout.root)
    os.replace(image, layout.root / "redo" / image.name)
    assert reviewer.handle(layout.root / "redo" / image.name) == "decided"
    child = ledger.child_of(image.name.split(".")[1])
    assert child is not None and child.params["scale_factor"] == 3


def test_sidecar_edits_touch_only_the_editable_fields(site: Any) -> None:
    _cfg, layout, ledger, *_ = site
    image = _result(site)
    path = image.with_suffix(".json")
    before = json.loads(path.read_text())

    def tamper(d: dict[str, Any]) -> None:
        d.update(job_id="0123456789ab", backend="fake", force=True)

    after = edit_sidecar(path, "--force", tamper, root=layout.root)
    assert after["job_id"] == before["job_id"] and after["backend"] == before["backend"] and after["force"] is True
    assert json.loads(path.read_text()) == after


def test_a_linked_sidecar_is_refused_for_an_edit_and_never_written_through(site: Any) -> None:
    _cfg, layout, ledger, *_ = site
    image = _result(site)
    path = image.with_suffix(".json")
    path.unlink()
    path.symlink_to(site[-1])
    with pytest.raises(NotFound, match="not a link"):
        apply_sets(path, {"steps": 10}, root=layout.root)
    assert site[-1].read_text() == SECRET
    job, found = find_inbox_item(ledger, layout, image.name)
    assert found == image
