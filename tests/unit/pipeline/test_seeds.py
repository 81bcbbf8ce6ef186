"""The seed a chart was drawn with is reused for it: the ledger's record, the jobs of release 0.1.0
(indexed from their snapshots, or found by their old seed once retention removed them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from harness import FIXTURES, theme_bytes

from astrowatch.chart.identity import identity_seed, identity_sha256
from astrowatch.chart.parse import parse_chart_bytes
from astrowatch.core.config import Config
from astrowatch.core.jobs import IngestOutcome, JobKind, JobState
from astrowatch.fusion import chart_seed
from astrowatch.intake.ingest import Ingest
from astrowatch.pipeline.seeds import SeedBook
from astrowatch.review.reviewer import Reviewer
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Job, Ledger

THEME = "Utilisateurs/{user}/theme_{user}.json"


@pytest.fixture
def env(tmp_path):
    cfg = Config(data_dir=tmp_path / "data")
    layout = Layout(cfg.data_dir)
    layout.ensure()
    return cfg, layout, Ledger(layout.ledger_path)


def chart(fixture: str, user: str = "gaby"):
    return parse_chart_bytes(theme_bytes(fixture, user), user=user, source=f"theme_{user}.json")


def drawn(env, user: str, data: bytes, seed: int, params: dict | None = None) -> Job:
    """An astro job as a release left it: its snapshot archived, its picture drawn with ``seed``."""
    _, layout, ledger = env
    job = ledger.create_job(kind=JobKind.ASTRO, user=user, source=THEME.format(user=user), source_sha256="x" * 64,
                            params=params or {})
    snapshot = layout.archive_dir(user, job.id) / f"theme_{user}.json"
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.write_bytes(data)
    ledger.transition(job.id, JobState.QUEUED, JobState.RUNNING)
    ledger.transition(job.id, JobState.RUNNING, JobState.PUBLISHING, result={"seed": seed, "params": {"seed": seed}})
    return ledger.get(job.id)


def book(env) -> SeedBook:
    cfg, layout, ledger = env
    return SeedBook(ledger, layout, cfg)


def legacy_seed(c) -> int:
    return identity_seed(identity_sha256(c, legacy=True))


def test_a_chart_never_drawn_gets_its_own_seed_and_keeps_the_first_recorded(env):
    gaby = chart("kerykeion_v6_subject.json")
    assert book(env).seed_for(gaby) == chart_seed(gaby)
    assert book(env).resolve(gaby, job_id="j1") == chart_seed(gaby)
    env[2].keep_chart_seed("gaby", identity_sha256(gaby), 7)  # a second writer loses
    assert book(env).seed_for(chart("immanuel_natal.json")) == chart_seed(gaby)
    assert book(env).seed_for(chart("kerykeion_v6_subject.json", user="kim")) != chart_seed(gaby)


def test_a_picture_of_release_0_1_0_keeps_its_seed_in_every_format(env):
    old = theme_bytes("astrowatch_minimal.json")
    drawn(env, "gaby", old, 181670504)  # as in tests/fixtures/release-0.1.0.tar.gz
    assert legacy_seed(chart("astrowatch_minimal.json")) == 181670504 != chart_seed(chart("astrowatch_minimal.json"))
    seeds = {f.name: book(env).seed_for(chart(f.name)) for f in sorted((FIXTURES / "themes").glob("*.json"))}
    assert set(seeds.values()) == {181670504}, seeds
    assert env[2].meta_get("chart_seeds_indexed") == "1"


def test_the_old_seed_is_found_once_retention_removed_the_snapshot(env):
    cfg, layout, ledger = env
    job = drawn(env, "gaby", theme_bytes("astrowatch_minimal.json"), 181670504)
    shutil.rmtree(layout.archive_dir("gaby", job.id))
    assert book(env).seed_for(chart("kerykeion_v5_subject.json")) == 181670504  # same user, instant, place
    assert book(env).resolve(chart("kerykeion_v5_subject.json")) == 181670504
    assert book(env).seed_for(chart("immanuel_natal.json")) == 181670504  # recorded since


def test_a_snapshot_replaced_by_a_symlink_is_never_read(env, tmp_path):
    """archive/ is shared with the group: the old jobs' snapshots are read through safefs."""
    _, layout, ledger = env
    job = drawn(env, "gaby", theme_bytes("astrowatch_minimal.json"), 181670504)
    snapshot = layout.archive_dir("gaby", job.id) / "theme_gaby.json"
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes(theme_bytes("astrowatch_minimal.json"))
    snapshot.unlink()
    snapshot.symlink_to(outside)
    book(env).seed_for(chart("kerykeion_v6_subject.json"))  # indexes release 0.1.0's jobs once
    assert ledger.meta_get("chart_seeds_indexed") == "1"
    assert ledger.chart_seed("gaby", identity_sha256(chart("astrowatch_minimal.json"))) is None


def test_a_polar_birth_drawn_under_the_old_rule_keeps_that_seed_for_kerykeion_5(env):
    polar = FIXTURES / "themes" / "polar"
    v6 = (polar / "kerykeion_v6_subject.json").read_bytes()
    old_v6 = legacy_seed(parse_chart_bytes(v6, user="ole", source="theme_ole.json"))
    drawn(env, "ole", v6, old_v6)
    v5 = parse_chart_bytes((polar / "kerykeion_v5_subject.json").read_bytes(), user="ole", source="theme_ole.json")
    assert legacy_seed(v5) != old_v6  # latitude 66.0: release 0.1.0 drew another picture
    assert book(env).seed_for(v5) == old_v6


def test_explicit_seeds_are_the_jobs_own_not_the_charts(env):
    drawn(env, "gaby", theme_bytes("astrowatch_minimal.json"), 42, params={"seed": 42})
    gaby = chart("astrowatch_minimal.json")
    assert book(env).seed_for(gaby) == chart_seed(gaby)


def test_a_polar_theme_rewritten_after_the_upgrade_in_another_format_makes_no_job(env):
    cfg, layout, ledger = env
    polar = FIXTURES / "themes" / "polar"
    v6 = (polar / "kerykeion_v6_subject.json").read_bytes()
    job = drawn(env, "ole", v6, legacy_seed(parse_chart_bytes(v6, user="ole", source="theme_ole.json")))
    ledger.transition(job.id, JobState.PUBLISHING, JobState.INBOX)
    ingest = Ingest(cfg, layout, ledger, Reviewer(cfg, layout, ledger))
    theme: Path = layout.users / "ole" / "theme_ole.json"
    theme.parent.mkdir(parents=True)
    for fixture in ("kerykeion_v5_subject.json", "astrologer_api_chart_data.json", "immanuel_natal.json"):
        theme.write_bytes((polar / fixture).read_bytes())
        assert ingest.handle(str(theme)) == IngestOutcome.SAME_RENDER, fixture
    moved = json.loads((polar / "astrowatch_minimal.json").read_text())
    moved["birth"] = "1990-08-04T21:10:00+02:00"  # another instant: another chart
    moved["moon"] = {"sign": "Verseau", "degree": 2.5, "house": 3}
    theme.write_text(json.dumps(moved))
    assert ingest.handle(str(theme)) == IngestOutcome.JOB
