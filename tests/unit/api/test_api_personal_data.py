"""``DELETE /api/users/{user}`` and ``GET /api/users/{user}/export``: behind the token, another user
untouched, the ledger's rows tombstoned, and cancelled like every terminal state."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from harness import drop_theme

from astrowatch.api.app import create_app
from astrowatch.core.jobs import JobState
from astrowatch.intake.ingest import Ingest
from astrowatch.review.reviewer import Reviewer
from astrowatch.runtime.settings import config_from_mapping
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger

TOKEN = "t" * 24


@pytest.fixture
def client(tmp_path: Path):
    config = config_from_mapping({"data_dir": "data", "astro": {"backend": "wheel", "wheel_size": 256}},
                                 base_dir=tmp_path)
    layout = Layout(config.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    ingest = Ingest(config, layout, ledger, Reviewer(config, layout, ledger))
    for user in ("marlowe", "gaby"):
        ingest.handle(str(drop_theme(config.data_dir, user) / f"theme_{user}.json"))
    return TestClient(create_app(config, TOKEN)), layout, ledger


def test_export_then_delete_a_user(client) -> None:
    http, layout, ledger = client
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert http.delete("/api/users/marlowe").status_code == 401
    assert http.delete("/api/users/..", headers=auth).status_code in (400, 404)
    got = http.get("/api/users/marlowe/export", headers=auth)
    assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        assert "files/Utilisateurs/marlowe/theme_marlowe.json" in zf.namelist()
        assert json.loads(zf.read("ledger.json"))["jobs"][0]["user"] == "marlowe"
        assert not any("gaby" in n for n in zf.namelist())
    gone = http.delete("/api/users/marlowe", headers=auth)
    assert gone.status_code == 200, gone.text
    report = gone.json()
    assert report["jobs"] == 1 and report["cancelled"] == 1 and "marlowe" not in gone.text
    assert not (layout.users / "marlowe").exists() and (layout.users / "gaby" / "theme_gaby.json").exists()
    states = {j.user: j.state for j in ledger.by_state(*JobState)}
    assert states["gaby"] == JobState.QUEUED and states[report["person"]] == JobState.CANCELLED
    assert "marlowe" not in states
    assert b"marlowe" not in layout.ledger_path.read_bytes()
