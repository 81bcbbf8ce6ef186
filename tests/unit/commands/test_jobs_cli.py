"""``astrowatch jobs list`` and ``review list`` page the ledger with a cursor; ``status --json``
summarises (bounded lists, totals from the counters) however many jobs there are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from astrowatch.cli import main
from astrowatch.runtime.settings import config_from_mapping
from astrowatch.runtime.status import LISTED
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    mapping = {"data_dir": "data"}
    layout = Layout(config_from_mapping(mapping, base_dir=tmp_path).data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    for i in range(45):
        user = "gaby" if i % 2 else "marlowe"
        job = ledger.create_job(kind="enhance", user=user, source=f"Utilisateurs/{user}/{i}.jpg", source_sha256=f"s{i}")
        if i < 30:
            ledger.transition(job.id, "queued", "running")
            ledger.transition(job.id, "running", "publishing", result={"image": f"{i}.{job.id}.png", "backend": "fake"})
            ledger.transition(job.id, "publishing", "inbox")
    ledger.close()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    return path


def _pages(capsys, *args: str) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        assert main([*args, "--json", "--limit", "7", *(["--cursor", cursor] if cursor else [])]) == 0
        out, err = capsys.readouterr()
        pages.append(json.loads(out))
        if "--cursor " not in err:
            return pages
        cursor = err.rsplit("--cursor ", 1)[1].strip()


def test_jobs_list_pages_one_state_and_one_user(config_path: Path, capsys) -> None:
    pages = _pages(capsys, "jobs", "list", "-c", str(config_path), "--state", "queued")
    assert [len(p) for p in pages] == [7, 7, 1]
    assert len({j["job_id"] for p in pages for j in p}) == 15 and {j["state"] for p in pages for j in p} == {"queued"}
    mine = _pages(capsys, "jobs", "list", "-c", str(config_path), "--state", "inbox", "--user", "gaby")
    assert sum(len(p) for p in mine) == 15 and {j["user"] for p in mine for j in p} == {"gaby"}


def test_review_list_pages_the_inbox(config_path: Path, capsys) -> None:
    pages = _pages(capsys, "review", "list", "-c", str(config_path))
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
    assert main(["review", "list", "-c", str(config_path), "--limit", "5"]) == 0
    assert "next page: astrowatch review list --cursor " in capsys.readouterr().out


def test_status_summarises_with_bounded_lists(config_path: Path, capsys) -> None:
    assert main(["status", "-c", str(config_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"] == {"queued": 15, "inbox": 30} and info["inbox_total"] == 30
    assert len(info["inbox"]) == LISTED < 30
    assert info["by_kind"] == {"enhance": {"queued": 15, "inbox": 30}}
    assert info["by_backend"]["fake"]["results"] == 30 and info["slowest"]["backend"] == "fake"
    assert set(info["oldest"]) == {"queued", "inbox"} and "sizes_mb" not in info
    assert main(["status", "-c", str(config_path)]) == 0
    assert "inbox (30, the oldest 20 here)" in capsys.readouterr().out
