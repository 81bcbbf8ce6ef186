"""Review decisions in-process (real ledger, real files): how a moved image is recognised, and
what happens to files that cannot be acted on."""

from __future__ import annotations

import json
import os

import pytest
from harness import make_image

from astrowatch.backends.base import CancelToken
from astrowatch.core.config import Config
from astrowatch.intake.ingest import Ingest
from astrowatch.review.reviewer import Reviewer
from astrowatch.runtime.worker import Worker
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger


@pytest.fixture
def site(tmp_path):
    cfg = Config(data_dir=tmp_path / "data")
    cfg.enhance.min_side = 8
    layout = Layout(cfg.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    reviewer = Reviewer(cfg, layout, ledger)
    ingest = Ingest(cfg, layout, ledger, reviewer)
    worker = Worker(cfg, layout, {"astro": "wheel", "enhance": "lanczos"}, CancelToken())
    return cfg, layout, ledger, reviewer, ingest, worker


def _result(site, name="p.jpg"):
    _cfg, layout, ledger, _reviewer, ingest, worker = site
    (layout.users / "gaby").mkdir(exist_ok=True)
    make_image(layout.users / "gaby" / name)
    ingest.handle(str(layout.users / "gaby" / name))
    worker.execute(ledger.claim_next())
    return next((layout.root / "inbox" / "gaby").glob(f"{name.split('.')[0]}.*.png"))


def test_a_renamed_result_is_recognised_by_its_png_chunk(site):
    _cfg, layout, ledger, reviewer, *_ = site
    image = _result(site)
    renamed = layout.root / "approved" / "my favourite.png"
    os.replace(image, renamed)
    assert reviewer.handle(renamed) == "decided"
    assert (layout.root / "datasets" / "gaby" / "p.png").exists() and not renamed.exists()


def test_a_redo_with_a_broken_sidecar_goes_back_to_the_inbox_with_the_reason(site):
    _cfg, layout, ledger, reviewer, *_ = site
    image = _result(site)
    image.with_suffix(".json").write_text("{ not json")
    os.replace(image, layout.root / "redo" / image.name)
    assert reviewer.handle(layout.root / "redo" / image.name) == "bounced"
    assert image.exists() and "valid 'params'" in image.with_name(image.stem + ".error.txt").read_text()
    assert ledger.get(image.name.split(".")[1]).state == "inbox"


def test_an_image_that_is_not_ours_gets_a_failed_entry(site):
    _cfg, layout, _ledger, reviewer, *_ = site
    stray = layout.root / "approved" / "holiday.png"
    make_image(stray)
    assert reviewer.handle(stray) == "failed"
    record = json.loads((layout.root / "failed" / "_review" / "holiday.png.error.json").read_text())
    assert "not an astrowatch result" in record["reason"] and not stray.exists()


def test_a_stray_copy_after_the_decision_is_archived(site):
    _cfg, layout, _ledger, reviewer, *_ = site
    image = _result(site)
    copy = layout.root / "rejected" / image.name
    copy.write_bytes(image.read_bytes())
    os.replace(image, layout.root / "approved" / image.name)
    assert reviewer.handle(layout.root / "approved" / image.name) == "decided"
    assert reviewer.handle(copy) == "archived" and not copy.exists()


def test_a_dataset_never_holds_two_images_for_one_caption(site):
    """photo.png filed as png, the same name approved later as webp: kohya would pair both with
    photo.txt, so the second one is filed under photo-<job>.webp."""
    cfg, layout, ledger, reviewer, *_ = site
    first = _result(site, "photo.jpg")
    os.replace(first, layout.root / "approved" / first.name)
    reviewer.handle(layout.root / "approved" / first.name)
    cfg.enhance.format = "webp"
    make_image(layout.users / "gaby" / "photo.jpg", color=(1, 2, 3))
    _cfg, _layout, _ledger, _reviewer, ingest, worker = site
    ingest.handle(str(layout.users / "gaby" / "photo.jpg"))
    worker.execute(ledger.claim_next())
    second = next((layout.root / "inbox" / "gaby").glob("photo.*.webp"))
    os.replace(second, layout.root / "approved" / second.name)
    reviewer.handle(layout.root / "approved" / second.name)
    job_id = second.name.split(".")[1]
    names = sorted(p.name for p in (layout.root / "datasets" / "gaby").iterdir())
    assert names == ["astrowatch-captions.json", "dataset.toml", f"photo-{job_id}.txt", f"photo-{job_id}.webp",
                     "photo.png", "photo.txt"]
