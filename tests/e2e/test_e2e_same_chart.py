"""Same chart, same picture: the real daemon does not redraw a chart re-exported in another
format, and a theme whose last job failed for a reason that is not the file's can be retried by
rewriting or touching it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3

import pytest
from harness import FIXTURES, drop_theme, inbox_images, theme_bytes, wait_until, write_config

pytestmark = pytest.mark.slow


def jobs(data):
    conn = sqlite3.connect(data / "state" / "ledger.sqlite3")
    try:
        return [dict(zip(("id", "state", "parent_id", "source_sha256"), row, strict=False)) for row in conn.execute(
            "SELECT id, state, parent_id, source_sha256 FROM jobs ORDER BY created_at, rowid")]
    finally:
        conn.close()


def log_events(d):
    return [json.loads(x).get("event") for x in d.log_path.read_text().splitlines() if x.startswith("{")]


def test_a_chart_re_exported_by_another_producer_makes_no_new_job(tmp_path, daemon_factory):
    d = daemon_factory(write_config(tmp_path)).start()
    user = drop_theme(d.data, fixture="kerykeion_v5_subject.json")
    wait_until(lambda: inbox_images(d.data), what="first result")
    theme = user / "theme_gaby.json"
    same = "theme rewritten with the same prompt, seed and parameters: no new job"
    for n, fixture in enumerate(("kerykeion_v6_subject.json", "immanuel_natal.json",
                                 "astrologer_api_chart_data.json", "astrowatch_minimal.json"), 1):
        before = theme.read_bytes()
        theme.write_bytes(theme_bytes(fixture))  # the upstream app upgraded its astrology library
        assert theme.read_bytes() != before
        wait_until(lambda n=n: log_events(d).count(same) == n, what=f"{fixture} recognised as the same chart")
    assert len(jobs(d.data)) == 1 and len(inbox_images(d.data)) == 1

    moved = json.loads(theme_bytes("astrowatch_minimal.json"))
    moved["birth"] = "1990-08-04T18:30:00+02:00"  # a corrected birth time is another picture
    moved["ascendant"] = {"sign": "Sagittarius", "degree": 12.0}
    theme.write_text(json.dumps(moved))
    wait_until(lambda: len(inbox_images(d.data)) == 2, what="the corrected chart drawn")
    assert len(jobs(d.data)) == 2
    assert d.stop() == 0


def test_a_polar_birth_re_exported_in_every_format_makes_one_job_with_one_seed(tmp_path, daemon_factory):
    """Ole, born in Tromsø (69.6492 N): kerykeion 4/5 write latitude 66.0, kerykeion 6 and immanuel
    69.6492; the birth instant is the same, so is the seed, and no format makes a second job."""
    polar = FIXTURES / "themes" / "polar"
    d = daemon_factory(write_config(tmp_path)).start()
    user = d.data / "Utilisateurs" / "ole"
    user.mkdir(parents=True)
    theme = user / "theme_ole.json"
    theme.write_bytes((polar / "kerykeion_v6_subject.json").read_bytes())
    wait_until(lambda: inbox_images(d.data, "ole"), what="first result")
    same = "theme rewritten with the same prompt, seed and parameters: no new job"
    others = [f for f in sorted(polar.glob("*.json")) if f.name != "kerykeion_v6_subject.json"]
    assert len(others) == 7
    for n, fixture in enumerate(others, 1):
        theme.write_bytes(fixture.read_bytes())
        wait_until(lambda n=n: log_events(d).count(same) == n, what=f"{fixture.name} recognised as the same chart")
    assert len(jobs(d.data)) == 1 and len(inbox_images(d.data, "ole")) == 1
    [sidecar] = (d.data / "inbox" / "ole").glob("*.json")
    seed = json.loads(sidecar.read_text())["seed"]
    assert d.stop() == 0
    from astrowatch.chart.parse import parse_chart_file
    from astrowatch.fusion import chart_seed

    assert {chart_seed(parse_chart_file(f, user="ole")) for f in polar.glob("*.json")} == {seed}


@pytest.mark.parametrize("how", ["touch", "rewrite"])
def test_same_theme_after_a_backend_failure_makes_a_new_job(tmp_path, daemon_factory, how):
    cfg = write_config(tmp_path, astro={"backend": "fake"}, fake={"raise_error": "permanent"})
    d = daemon_factory(cfg).start()
    user = drop_theme(d.data)
    theme = user / "theme_gaby.json"
    failed = d.data / "failed" / "gaby" / "theme_gaby.json.error.json"
    wait_until(failed.exists, what="the first job failed")
    write_config(tmp_path, astro={"backend": "fake"})  # the operator fixes the backend ...
    d.signal(signal.SIGHUP)
    wait_until(lambda: "config reloaded" in d.log(), what="reload")
    if how == "touch":  # ... and retries by touching the theme
        st = theme.stat()
        os.utime(theme, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    else:
        theme.write_bytes(theme.read_bytes())
    wait_until(lambda: inbox_images(d.data), what="the retried theme drawn")
    first, second = jobs(d.data)
    assert first["state"] == "failed" and second["parent_id"] == first["id"]
    assert first["source_sha256"] == second["source_sha256"]
    assert d.stop() == 0


def test_same_theme_after_an_input_failure_stays_a_duplicate(tmp_path, daemon_factory):
    cfg = write_config(tmp_path, astro={"backend": "fake"}, fake={"raise_error": "input"})
    d = daemon_factory(cfg).start()
    user = drop_theme(d.data)
    theme = user / "theme_gaby.json"
    wait_until((d.data / "failed" / "gaby" / "theme_gaby.json.error.json").exists, what="failed")
    st = theme.stat()
    os.utime(theme, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    # A rescan (every 2 s in tests) sees the new mtime: it must record it and make no job.
    conn = sqlite3.connect(d.data / "state" / "ledger.sqlite3")
    try:
        wait_until(lambda: conn.execute("SELECT mtime_ns FROM seen WHERE path LIKE '%theme_gaby.json'")
                   .fetchone()[0] == theme.stat().st_mtime_ns, timeout=15, what="the touched theme seen")
    finally:
        conn.close()
    assert [j["state"] for j in jobs(d.data)] == ["failed"]
    assert d.stop() == 0
