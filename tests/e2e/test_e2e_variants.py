"""Several variants per chart (issue 29), against the real daemon, picked by moving files."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from harness import run_cli, theme_bytes, wait_until, write_config

pytestmark = pytest.mark.slow


def _inbox(data, user="gaby"):
    folder = data / "inbox" / user
    return sorted(p for p in folder.glob("*.png")) if folder.exists() else []


def _move(image, dest_dir):
    dest_dir.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".txt"):
        side = image.with_suffix(suffix)
        if side.exists():
            os.replace(side, dest_dir / side.name)
    os.replace(image, dest_dir / image.name)


def _reviews(data):
    path = data / "logs" / "reviews.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _start(tmp_path, daemon_factory, n=3):
    d = daemon_factory(write_config(tmp_path, astro={"variants": n, "backend": "fake"}, fake={"size": 64})).start()
    user = d.data / "Utilisateurs" / "gaby"
    user.mkdir(parents=True)
    (user / "theme_gaby.json").write_bytes(theme_bytes("kerykeion_v5_subject.json"))
    images = wait_until(lambda: len(_inbox(d.data)) == n + 1 and _inbox(d.data), what=f"{n} variants + sheet")
    return d, user, images


def _status(d):
    return json.loads(run_cli("status", "--json", config=d.config_path).stdout)["counts"]


def test_one_job_three_variants_pick_one_then_second_pick_bounced(tmp_path, daemon_factory):
    d, user, images = _start(tmp_path, daemon_factory)
    data = d.data
    sheet = next(p for p in images if p.name.endswith(".sheet.png"))
    variants = [p for p in images if p != sheet]
    assert [p.name.rsplit(".", 2)[1] for p in variants] == ["v1", "v2", "v3"]
    assert len({p.name.split(".")[1] for p in images}) == 1  # one job
    sidecars = [json.loads(p.with_suffix(".json").read_text()) for p in variants]
    seeds = [s["seed"] for s in sidecars]
    assert len(set(seeds)) == 3 and [s["params"]["seed"] for s in sidecars] == seeds
    assert len({_sha(p) for p in variants}) == 3  # three different images
    listed = json.loads(sheet.with_suffix(".json").read_text())["variants"]
    assert [v["seed"] for v in listed] == seeds

    # the contact sheet cannot be delivered: back in the inbox with a reason
    _move(sheet, data / "approved")
    wait_until(lambda: sheet.exists() and sheet.with_name(sheet.name[:-4] + ".error.txt").exists(), what="bounce")
    assert "contact sheet" in sheet.with_name(sheet.name[:-4] + ".error.txt").read_text()
    assert not (user / "theme_gaby.png").exists()

    # pick variant 2: exactly its bytes delivered, the siblings retired
    picked = variants[1]
    want = _sha(picked)
    _move(picked, data / "approved")
    delivered = user / "theme_gaby.png"
    wait_until(delivered.exists, what="pick delivered")
    assert _sha(delivered) == want
    wait_until(lambda: not _inbox(data), what="siblings retired")
    job_id = picked.name.split(".")[1]
    archive = data / "archive" / "gaby" / job_id
    assert {variants[0].name, variants[2].name, sheet.name} <= {f.name for f in archive.iterdir()}
    review = wait_until(lambda: _reviews(data) and _reviews(data)[-1])
    assert review["variant"] == 2 and review["not_picked"] == [1, 3]
    assert _status(d) == {"delivered": 1}

    # a second variant of the decided job moved into approved/: refused with a reason
    second = data / "approved" / variants[0].name
    os.replace(archive / variants[0].name, second)
    wait_until(lambda: not second.exists(), what="second pick handled")
    refused = data / "failed" / "_review" / (variants[0].name + ".error.json")
    wait_until(refused.exists, what="second pick refused")
    assert "variant 2 was picked" in json.loads(refused.read_text())["reason"]
    assert _sha(delivered) == want
    assert d.stop() == 0


def test_all_variants_rejected_rejects_and_redo_from_a_variant_seed(tmp_path, daemon_factory):
    d, user, images = _start(tmp_path, daemon_factory, n=2)
    data = d.data
    v1, v2 = [p for p in images if ".v" in p.name]
    _move(v1, data / "rejected")
    wait_until(lambda: not (data / "rejected" / v1.name).exists(), what="one variant rejected")
    assert _status(d) == {"inbox": 1}  # its sibling still waits
    seed2 = json.loads(v2.with_suffix(".json").read_text())["seed"]
    _move(v2, data / "redo")  # redo from variant 2's seed
    wait_until(lambda: len(_inbox(data)) == 3, what="the redo's variants")
    child = json.loads(next(p for p in _inbox(data) if p.name.endswith(".v1.png")).with_suffix(".json").read_text())
    assert child["seed"] == seed2 and child["parent_job"] == v2.name.split(".")[1]
    for p in _inbox(data):
        if ".v" in p.name:
            _move(p, data / "rejected")
    wait_until(lambda: _status(d) == {"redone": 1, "rejected": 1}, what="all rejected")
    wait_until(lambda: not _inbox(data), what="sheet archived")
    assert not (user / "theme_gaby.png").exists()
    assert d.stop() == 0


def test_pick_through_the_api_and_the_cli(tmp_path, daemon_factory):
    from api_support import ApiProcess, wait_state

    config = write_config(tmp_path, astro={"backend": "fake"}, fake={"size": 64})
    d = daemon_factory(config).start()
    (d.data / "Utilisateurs" / "rey").mkdir(parents=True)
    (d.data / "Utilisateurs" / "rey" / "theme_rey.json").write_bytes(theme_bytes("kerykeion_v5_subject.json", "rey"))
    api = ApiProcess(config)
    try:
        api.start()
        first = wait_state(api, "/api/astro-image/rey", {"inbox"})["job_id"]
        assert api.get("/api/inbox").json()[0]["variants"] is None  # one image: as before
        api.post(f"/api/jobs/{first}/reject")
        wait_state(api, f"/api/jobs/{first}", {"rejected"})
        resp = api.post("/api/astro-image/rey", json={"variants": 3})
        job = wait_state(api, resp.json()["status_url"], {"inbox"})["job_id"]
        item = next(i for i in api.get("/api/inbox").json() if i["job_id"] == job)
        assert [v["variant"] for v in item["variants"]] == [1, 2, 3]
        pngs = [api.get(v["image"]).content for v in item["variants"]]
        assert len(set(pngs)) == 3 and api.get(item["image"]).content not in pngs  # the sheet
        assert api.post(f"/api/jobs/{job}/approve").status_code == 422  # which one?
        assert api.post(f"/api/jobs/{job}/pick", json={"variant": 9}).status_code == 422
        assert api.post(f"/api/jobs/{job}/pick", json={"variant": 3}).status_code == 202
        wait_state(api, f"/api/jobs/{job}", {"delivered"})
        assert (d.data / "Utilisateurs" / "rey" / "theme_rey.png").read_bytes() == pngs[2]
        assert _reviews(d.data)[-1]["via"] == "api" and _reviews(d.data)[-1]["variant"] == 3

        # the CLI: approve asks for the variant, pick moves it
        third = wait_state(api, api.post("/api/astro-image/rey", json={"variants": 2, "seed": 5}).json()["status_url"],
                           {"inbox"})["job_id"]
        refused = run_cli("review", "approve", third, config=config, check=False)
        assert refused.returncode != 0 and "pick" in refused.stderr
        v2 = next(p for p in _inbox(d.data, "rey") if p.name.endswith(".v2.png")).read_bytes()
        run_cli("review", "pick", third, "2", config=config)
        wait_state(api, f"/api/jobs/{third}", {"delivered"})
        assert (d.data / "Utilisateurs" / "rey" / "theme_rey.png").read_bytes() == v2
    finally:
        api.close()
    assert d.stop() == 0
