"""``GET /api/inbox`` a page at a time: a JSON array of at most ``limit`` items (default 100), the
next page in ``Link: <...>; rel="next"``, every item once; ``/metrics`` from the ledger's counters."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from astrowatch.api.app import create_app
from astrowatch.runtime.settings import config_from_mapping
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger

TOKEN = "t" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _to_inbox(ledger: Ledger, user: str, i: int) -> str:
    job = ledger.create_job(kind="enhance", user=user, source=f"Utilisateurs/{user}/{i}.jpg", source_sha256=f"s{i}")
    ledger.transition(job.id, "queued", "running")
    ledger.transition(job.id, "running", "publishing", result={"image": f"{i}.{job.id}.png", "backend": "fake"})
    ledger.transition(job.id, "publishing", "inbox")
    return job.id


@pytest.fixture
def api(tmp_path: Path):
    config = config_from_mapping({"data_dir": "data"}, base_dir=tmp_path)
    layout = Layout(config.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    ids: dict[str, list[str]] = {"gaby": [], "marlowe": []}
    for i in range(230):
        user = "gaby" if i % 3 else "marlowe"
        (layout.root / "Utilisateurs" / user).mkdir(parents=True, exist_ok=True)
        ids[user].append(_to_inbox(ledger, user, i))
    return TestClient(create_app(config, TOKEN)), ids


def _follow(http: TestClient, url: str) -> tuple[list[str], list[int]]:
    seen, sizes = [], []
    while url:
        resp = http.get(url, headers=AUTH)
        assert resp.status_code == 200, resp.text
        assert isinstance(resp.json(), list)
        seen += [item["job_id"] for item in resp.json()]
        sizes.append(len(resp.json()))
        link = resp.headers.get("link")
        url = link[link.index("<") + 1:link.index(">")] if link else ""
        assert not link or link.endswith('; rel="next"')
    return seen, sizes


def test_the_inbox_comes_in_pages_of_100_by_default_each_item_once(api) -> None:
    http, ids = api
    seen, sizes = _follow(http, "/api/inbox")
    assert sizes == [100, 100, 30]
    assert sorted(seen) == sorted(ids["gaby"] + ids["marlowe"]) and len(set(seen)) == 230


def test_one_users_pages_with_a_limit(api) -> None:
    http, ids = api
    seen, sizes = _follow(http, "/api/inbox?user=marlowe&kind=enhance&limit=25")
    assert seen == ids["marlowe"] and sizes == [25, 25, 25, 2]  # oldest first, in creation order
    assert http.get("/api/inbox?kind=astro", headers=AUTH).json() == []


def test_bad_limits_and_cursors_are_refused(api) -> None:
    http, _ids = api
    assert http.get("/api/inbox?limit=1001", headers=AUTH).status_code == 422
    assert http.get("/api/inbox?limit=0", headers=AUTH).status_code == 422
    resp = http.get("/api/inbox?cursor=not-a-cursor", headers=AUTH)  # the schema's pattern refuses it
    assert resp.status_code == 422 and "cursor" in resp.json()["error"]
    # any string of the documented pattern is a valid cursor: the page after that key (here: nothing)
    assert http.get("/api/inbox?cursor=99999999999.5-0123456789ab", headers=AUTH).json() == []


def test_metrics_come_from_the_counters(api) -> None:
    http, _ids = api
    text = http.get("/metrics").text
    assert 'astrowatch_jobs{kind="enhance",state="inbox"} 230.0' in text
    assert "astrowatch_inbox_results_all 230.0" in text
    assert 'astrowatch_image_seconds_count{backend="fake"} 230.0' in text
    assert "marlowe" not in text  # no user name without the token
    assert "marlowe" not in http.get("/metrics", headers=AUTH).text  # nor with it, unless configured


def test_the_per_user_series_is_served_where_configured_and_with_the_token(api, tmp_path: Path) -> None:
    config = config_from_mapping({"data_dir": "data", "api": {"metrics_per_user": True}}, base_dir=tmp_path)
    http = TestClient(create_app(config, TOKEN))
    assert "marlowe" not in http.get("/metrics").text
    assert 'astrowatch_inbox_results{user="marlowe"} 77.0' in http.get("/metrics", headers=AUTH).text
