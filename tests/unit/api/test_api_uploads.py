"""Uploads over the API: a bad chart or a non-image writes nothing; good ones land in the user's
folder (through safefs) for the watcher; the per-user bound answers 429."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from harness import make_image, theme_bytes

from astrowatch.runtime.settings import config_from_mapping
from astrowatch.storage.ledger import Ledger

pytest.importorskip("sse_starlette")
TestClient = pytest.importorskip("fastapi.testclient").TestClient
create_app = pytest.importorskip("astrowatch.api.app").create_app

TOKEN = "unit-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path: Path):
    config = config_from_mapping({"data_dir": "data", "api": {"max_pending_uploads_per_user": 3}}, base_dir=tmp_path)
    (tmp_path / "data" / "state").mkdir(parents=True)
    Ledger(tmp_path / "data" / "state" / "ledger.sqlite3")
    with TestClient(create_app(config, TOKEN)) as c:
        c.data = tmp_path / "data"  # type: ignore[attr-defined]
        yield c


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _png(tmp_path: Path, name: str = "p.png") -> bytes:
    make_image(tmp_path / name, size=(64, 48))
    return (tmp_path / name).read_bytes()


def test_theme_is_checked_before_it_is_written(client) -> None:
    user_dir = client.data / "Utilisateurs" / "gaby"
    bad = client.put("/api/users/gaby/theme", content=b'{"not": "a chart"}', headers=AUTH)
    assert bad.status_code == 422, bad.text
    assert "chart" in bad.json()["error"] and _files(user_dir) == []
    good = client.put("/api/users/gaby/theme", content=theme_bytes(user="gaby"), headers=AUTH)
    assert good.status_code == 202, good.text
    assert good.json()["files"] == ["theme_gaby.json"]
    assert _files(user_dir) == ["theme_gaby.json"]  # no temporary file left behind
    assert (user_dir / "theme_gaby.json").read_bytes() == theme_bytes(user="gaby")


def test_token_and_user_names(client) -> None:
    assert client.put("/api/users/gaby/theme", content=theme_bytes(user="gaby")).status_code == 401
    assert client.put("/api/users/.hidden/theme", content=b"{}", headers=AUTH).status_code == 400
    assert client.post("/api/users/_review/photos", files={"file": ("a.png", b"x")}, headers=AUTH).status_code == 400


def test_photos_are_decoded_before_they_appear(client, tmp_path) -> None:
    user_dir = client.data / "Utilisateurs" / "lina"
    not_image = client.post("/api/users/lina/photos", headers=AUTH,
                            files=[("file", ("ok.png", _png(tmp_path))), ("file", ("fake.jpg", b"hello, not a photo"))])
    assert not_image.status_code == 422, not_image.text
    assert _files(user_dir) == []  # neither file of the request, nor a temporary one
    lying = client.post("/api/users/lina/photos", headers=AUTH, files={"file": ("x.jpg", _png(tmp_path))})
    assert lying.status_code == 422 and "extension" in lying.json()["error"]
    ok = client.post("/api/users/lina/photos", headers=AUTH,
                     files=[("file", ("a.png", _png(tmp_path))), ("file", ("../../b.png", _png(tmp_path, "b.png")))])
    assert ok.status_code == 202, ok.text
    assert ok.json()["files"] == ["a.png", "b.png"]
    again = client.post("/api/users/lina/photos", headers=AUTH, files={"file": ("a.png", _png(tmp_path))})
    assert again.json()["files"] == ["a (2).png"]  # nothing is replaced
    assert _files(user_dir) == ["a (2).png", "a.png", "b.png"]


def test_size_cap_applies_while_streaming(tmp_path) -> None:
    config = config_from_mapping({"data_dir": "data", "limits": {"max_image_bytes": 1000}}, base_dir=tmp_path)
    (tmp_path / "data" / "state").mkdir(parents=True)
    Ledger(tmp_path / "data" / "state" / "ledger.sqlite3")
    with TestClient(create_app(config, TOKEN)) as c:
        r = c.post("/api/users/gaby/photos", headers=AUTH, files={"file": ("big.png", io.BytesIO(b"\x89PNG" + b"0" * 5000))})
    assert r.status_code == 413, r.text
    assert _files(tmp_path / "data" / "Utilisateurs" / "gaby") == []


def test_pending_uploads_bound(client, tmp_path) -> None:
    png = _png(tmp_path)
    ok = client.post("/api/users/gaby/photos", headers=AUTH, files=[("file", (f"{i}.png", png)) for i in range(3)])
    assert ok.status_code == 202
    full = client.post("/api/users/gaby/photos", headers=AUTH, files={"file": ("4.png", png)})
    assert full.status_code == 429 and full.headers["Retry-After"]
    assert len(_files(client.data / "Utilisateurs" / "gaby")) == 3
    too_many = client.post("/api/users/lina/photos", headers=AUTH, files=[("file", (f"{i}.png", png)) for i in range(4)])
    assert too_many.status_code == 429 and _files(client.data / "Utilisateurs" / "lina") == []
