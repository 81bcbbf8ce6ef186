"""Dedupe and supersede rules of ingest, on a real ledger and real files (no daemon)."""

from __future__ import annotations

import json
import os

import pytest
from harness import make_image, theme_bytes

from astrowatch.core.config import Config
from astrowatch.intake.ingest import Ingest
from astrowatch.review.reviewer import Reviewer
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger


@pytest.fixture
def ingest(tmp_path):
    cfg = Config(data_dir=tmp_path / "data")
    layout = Layout(cfg.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    return Ingest(cfg, layout, ledger, Reviewer(cfg, layout, ledger))


def _user(ingest, name="gaby"):
    folder = ingest.layout.users / name
    folder.mkdir(exist_ok=True)
    return folder


def test_theme_rewritten_with_the_same_content_makes_no_new_job(ingest):
    theme = _user(ingest) / "theme_gaby.json"
    theme.write_bytes(theme_bytes())
    assert ingest.handle(str(theme)) == "job"
    assert ingest.handle(str(theme)) == "unchanged"  # same size and mtime: not even re-hashed
    theme.write_bytes(theme_bytes())
    os.utime(theme, ns=(1, 10**18))
    assert ingest.handle(str(theme)) == "duplicate"
    assert len(ingest.ledger.jobs_for_source("gaby", "Utilisateurs/gaby/theme_gaby.json")) == 1


def other_chart() -> bytes:
    doc = json.loads(theme_bytes("astrowatch_minimal.json"))
    doc["sun"] = {"sign": "Aries", "degree": 3.0, "house": 5}
    doc["birth"] = "1991-03-24T08:00:00+01:00"
    return json.dumps(doc).encode()


def test_new_theme_content_supersedes_queued_jobs_and_is_snapshotted(ingest):
    theme = _user(ingest) / "theme_gaby.json"
    theme.write_bytes(theme_bytes("astrowatch_minimal.json"))
    ingest.handle(str(theme))
    theme.write_bytes(other_chart())
    assert ingest.handle(str(theme)) == "job"
    new, old = ingest.ledger.jobs_for_source("gaby", "Utilisateurs/gaby/theme_gaby.json")
    assert (old.state, new.state) == ("superseded", "queued")
    snapshot = ingest.layout.archive_dir("gaby", new.id) / "theme_gaby.json"
    assert snapshot.read_bytes() == theme.read_bytes()
    theme.write_bytes(theme_bytes("astrowatch_minimal.json"))  # back to the first content: a new job
    assert ingest.handle(str(theme)) == "job"


def test_the_same_chart_in_another_format_makes_no_job(ingest):
    theme = _user(ingest) / "theme_gaby.json"
    theme.write_bytes(theme_bytes("astrowatch_minimal.json"))
    assert ingest.handle(str(theme)) == "job"
    for fixture in ("kerykeion_v5_subject.json", "immanuel_natal.json", "astrologer_api_legacy.json"):
        theme.write_bytes(theme_bytes(fixture))
        assert ingest.handle(str(theme)) == "same render", fixture
    assert len(ingest.ledger.jobs_for_source("gaby", "Utilisateurs/gaby/theme_gaby.json")) == 1
    theme.write_bytes(b'{"not": "a chart"}')  # unparseable: a job, whose run says why
    assert ingest.handle(str(theme)) == "job"


def test_the_same_chart_after_the_persons_lora_was_retrained_makes_a_job(tmp_path):
    cfg = Config(data_dir=tmp_path / "data",
                 sdxl={"loras": [{"path": "datasets/{user}/lora/{user}.safetensors", "weight": 0.8}]})
    layout = Layout(cfg.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    ingest = Ingest(cfg, layout, ledger, Reviewer(cfg, layout, ledger))
    theme = _user(ingest) / "theme_gaby.json"
    theme.write_bytes(theme_bytes("astrowatch_minimal.json"))
    assert ingest.handle(str(theme)) == "job"
    theme.write_bytes(theme_bytes("kerykeion_v5_subject.json"))  # re-exported: same render
    assert ingest.handle(str(theme)) == "same render"
    lora = layout.root / "datasets" / "gaby" / "lora" / "gaby.safetensors"
    lora.parent.mkdir(parents=True)
    lora.write_bytes(b"trained after the first job")
    later = ledger.jobs_for_source("gaby", "Utilisateurs/gaby/theme_gaby.json")[0].created_at + 60
    os.utime(lora, (later, later))
    theme.write_bytes(theme_bytes("immanuel_natal.json"))  # rewritten after the LoRA was trained
    assert ingest.handle(str(theme)) == "job"


def test_a_photo_is_one_job_until_it_is_published(ingest):
    photo = _user(ingest) / "p.jpg"
    make_image(photo)
    assert ingest.handle(str(photo)) == "job"
    os.utime(photo, ns=(1, 10**18))  # a NAS indexer touches it
    assert ingest.handle(str(photo)) == "duplicate"
    make_image(photo, color=(1, 2, 3))  # replaced by another picture before it ran
    assert ingest.handle(str(photo)) == "job"
    states = sorted(j.state for j in ingest.ledger.jobs_for_source("gaby", "Utilisateurs/gaby/p.jpg"))
    assert states == ["queued", "superseded"]


def test_our_own_outputs_and_style_images_are_not_inputs(ingest):
    folder = _user(ingest)
    for name in ("theme_gaby.png", "moodboard.png", "notes.txt", ".DS_Store", "x.jpg.part"):
        make_image(folder / name) if name.endswith(".png") else (folder / name).write_bytes(b"x")
        assert ingest.handle(str(folder / name)) == "ignored"
    assert ingest.ledger.counts() == {}


def test_a_theme_named_for_another_user_gets_a_failed_entry_once(ingest):
    theme = _user(ingest) / "theme_bob.json"
    theme.write_bytes(theme_bytes())
    assert ingest.handle(str(theme)) == "failed"
    assert ingest.handle(str(theme)) == "unchanged"
    entries = sorted(p.name for p in (ingest.layout.root / "failed" / "gaby").iterdir())
    assert entries == ["theme_bob.json", "theme_bob.json.error.json"] and theme.exists()


def test_a_redo_interrupted_after_queuing_its_child_still_gets_the_theme_snapshot(ingest):
    theme = _user(ingest) / "theme_gaby.json"
    theme.write_bytes(theme_bytes())
    ingest.handle(str(theme))
    ledger, layout = ingest.ledger, ingest.layout
    job = ledger.jobs_for_source("gaby", "Utilisateurs/gaby/theme_gaby.json")[0]
    for frm, to in (("queued", "running"), ("running", "publishing"), ("publishing", "inbox")):
        ledger.transition(job.id, frm, to, result={"params": {"style": "figuratif"}} if to == "publishing" else None)
    ledger.transition(job.id, "inbox", "deciding", decision="redo", decision_data={"overrides": {"style": "cosmique"}})
    # the crash: the child was created, its snapshot not yet copied
    child = ledger.create_job(kind="astro", user="gaby", source=job.source, source_sha256=job.source_sha256,
                              params={"style": "cosmique"}, parent_id=job.id)
    ingest.reviewer.finish(ledger.get(job.id))  # what recovery runs at the next start
    assert (layout.archive_dir("gaby", child.id) / "theme_gaby.json").read_bytes() == theme.read_bytes()
    assert ledger.get(job.id).state == "redone"
    assert [j.id for j in ledger.jobs_for_source("gaby", job.source) if j.parent_id == job.id] == [child.id]


def test_image_like_files_that_cannot_be_used_get_a_failed_entry(ingest):
    import json

    folder = _user(ingest)
    (folder / "IMG_1.CR2").write_bytes(b"II*\x00" + bytes(60))
    (folder / "logo.svg").write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    make_image(folder / "photo.dat", fmt="JPEG")
    for name in ("IMG_1.CR2", "logo.svg", "photo.dat"):
        assert ingest.handle(str(folder / name)) == "failed"
        record = json.loads((ingest.layout.root / "failed" / "gaby" / f"{name}.error.json").read_text())
        assert record["reason"].startswith(f"{name}: ") and "HEIC/HEIF" in record["accepted"]
        assert not (folder / name).exists()
    (folder / "notes.txt").write_text("BM: a note that starts like a bitmap")
    assert ingest.handle(str(folder / "notes.txt")) == "ignored" and (folder / "notes.txt").exists()
    assert ingest.ledger.counts() == {}


def test_heic_avif_and_gif_become_enhance_jobs(ingest):
    folder = _user(ingest)
    for name in ("a.heic", "b.HEIF", "c.avif", "d.gif"):
        (folder / name).write_bytes(name.encode() * 10)  # content is checked when the job runs
        assert ingest.handle(str(folder / name)) == "job"
