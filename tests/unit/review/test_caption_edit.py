"""Editing line 1 of an enhance result (caption and tags) by the CLI and the HTTP API: exactly
the edited parts in order, the technical lines kept, the sidecar's proposal untouched, bounds
refused; approval files what was left."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from harness import make_image

from astrowatch.api.app import create_app
from astrowatch.backends.base import CancelToken
from astrowatch.cli import main
from astrowatch.core.errors import InputError
from astrowatch.intake.ingest import Ingest
from astrowatch.review.captions import edit_tags, parse_line, parse_move
from astrowatch.review.reviewer import Reviewer
from astrowatch.runtime.settings import config_from_mapping
from astrowatch.runtime.worker import Worker
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger

TOKEN = "t" * 32


def test_parse_line_uses_the_known_sentence_even_with_commas() -> None:
    parts = parse_line("ohwx, a dog, running, grass, sky", "ohwx", ["a dog, running"], has_caption=True)
    assert (parts.trigger, parts.caption, parts.tags) == ("ohwx", "a dog, running", ["grass", "sky"])
    parts = parse_line("ohwx, grass, sky", "ohwx", [], has_caption=False)
    assert (parts.caption, parts.tags) == ("", ["grass", "sky"])
    parts = parse_line("a cat, grass", "ohwx", ["a dog"], has_caption=True)  # rewritten by hand: first part
    assert (parts.trigger, parts.caption, parts.tags) == ("ohwx", "a cat", ["grass"])
    assert parts.text() == "ohwx, a cat, grass"


def test_edit_tags_set_add_remove_move_in_that_order() -> None:
    tags = ["long hair", "smile", "outdoors"]
    assert edit_tags(tags, remove=["SMILE"], add=["sky", "outdoors"], move=[("sky", 0)]) == \
        ["sky", "long hair", "outdoors"]
    assert edit_tags(tags, set_to=["b", "a", "b"], move=[("b", -1)]) == ["a", "b"]
    for bad in ({"remove": ["nope"]}, {"add": ["a, b"]}, {"add": [""]}, {"move": [("smile", 5)]},
                {"set_to": ["x" * 101]}):
        with pytest.raises(InputError):
            edit_tags(tags, **bad)
    assert parse_move("long hair:0") == ("long hair", 0)
    with pytest.raises(InputError, match="TAG:POSITION"):
        parse_move("long hair")


@pytest.fixture
def inbox(tmp_path: Path) -> dict[str, Any]:
    mapping = {"data_dir": "data", "enhance": {"backend": "lanczos", "min_side": 8},
               "dataset": {"trigger_word": "ohwx"}, "api": {"token_file": str(tmp_path / "token")}}
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "token").chmod(0o600)
    config = config_from_mapping(mapping, base_dir=tmp_path)
    layout = Layout(config.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    reviewer = Reviewer(config, layout, ledger)
    (layout.users / "gaby").mkdir()
    make_image(layout.users / "gaby" / "p.jpg")
    Ingest(config, layout, ledger, reviewer).handle(str(layout.users / "gaby" / "p.jpg"))
    worker = Worker(config, layout, {"astro": "wheel", "enhance": "lanczos"}, CancelToken())
    worker.execute(worker.ledger.claim_next())
    worker.pool.close()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    image = next((layout.root / "inbox" / "gaby").glob("p.*.png"))
    txt = image.with_suffix(".txt")
    txt.write_text("ohwx, grass, sky, sea\n" + "".join(txt.read_text().splitlines(True)[1:]))
    return {"config": config, "path": path, "layout": layout, "ledger": ledger, "reviewer": reviewer,
            "image": image, "job_id": image.name.split(".")[1]}


def test_cli_edits_caption_and_tags_then_approval_files_them(inbox: dict[str, Any], capsys) -> None:
    cfg, image, job_id = str(inbox["path"]), inbox["image"], inbox["job_id"]
    technical = image.with_suffix(".txt").read_text().splitlines()[1:]
    sidecar = json.loads(image.with_suffix(".json").read_text())
    assert main(["review", "caption", job_id, "-c", cfg, "--text", "a field, at dusk"]) == 0
    assert main(["review", "tags", job_id, "-c", cfg, "--remove", "sky", "--add", "dusk", "--move", "sea:0"]) == 0
    assert capsys.readouterr().out.splitlines()[-3] == f"{job_id}: ohwx, a field, at dusk, sea, grass, dusk"
    lines = image.with_suffix(".txt").read_text().splitlines()
    assert lines == ["ohwx, a field, at dusk, sea, grass, dusk", *technical]
    after = json.loads(image.with_suffix(".json").read_text())
    assert after == {**sidecar, "reviewed_caption": "a field, at dusk"}  # the proposal untouched
    assert main(["review", "tags", job_id, "-c", cfg, "--remove", "nope"]) == 65
    assert "tag 'nope' is not on line 1" in capsys.readouterr().err
    assert main(["review", "tags", job_id, "-c", cfg, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tags"] == ["sea", "grass", "dusk"] and shown["caption"] == "a field, at dusk"
    assert main(["review", "approve", job_id, "-c", cfg]) == 0
    moved = inbox["layout"].root / "approved" / image.name
    Ingest(inbox["config"], inbox["layout"], inbox["ledger"], inbox["reviewer"]).handle(str(moved))
    dataset = inbox["layout"].dataset_dir("gaby")
    assert (dataset / "p.txt").read_text() == "ohwx, a field, at dusk, sea, grass, dusk\n"
    record = json.loads((dataset / "astrowatch-captions.json").read_text())["images"]["p.png"]
    assert record["filed"] == "ohwx, a field, at dusk, sea, grass, dusk" and record["job_id"] == job_id
    assert record["proposed"] != record["filed"]  # the reviewer's edit is seen as one


def test_api_reads_and_patches_the_caption(inbox: dict[str, Any]) -> None:
    client = TestClient(create_app(inbox["config"], TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"/api/jobs/{inbox['job_id']}/caption"
    got = client.get(url, headers=auth)
    assert got.status_code == 200 and got.json()["tags"] == ["grass", "sky", "sea"]
    done = client.patch(url, headers=auth, json={"caption": "a meadow", "tags": ["sea", "grass"]})
    assert done.status_code == 200, done.text
    assert done.json()["line"] == "ohwx, a meadow, sea, grass"
    assert inbox["image"].with_suffix(".txt").read_text().splitlines()[0] == "ohwx, a meadow, sea, grass"
    for body, status in (({"tags": ["a, b"]}, 422), ({"tags": ["x" * 101]}, 422), ({"caption": "x" * 1001}, 422),
                         ({"tags": ["t"] * 201}, 422), ({"color": 1}, 422)):
        answer = client.patch(url, headers=auth, json=body)
        assert answer.status_code == status, (body, answer.text)
    assert inbox["image"].with_suffix(".txt").read_text().splitlines()[0] == "ohwx, a meadow, sea, grass"
    assert client.patch(url, json={"tags": []}).status_code == 401
    assert client.patch("/api/jobs/000000000000/caption", headers=auth, json={"tags": []}).status_code == 404


def test_review_redo_set_takes_the_caption_keys_but_never_a_model_folder() -> None:
    from astrowatch.core.config import Config
    from astrowatch.core.errors import ConfigError
    from astrowatch.core.jobs import JobKind
    from astrowatch.review.inbox import redo_overrides

    assert redo_overrides(Config(), JobKind.ENHANCE, ["caption.general_threshold=0.5", "caption.max_tags=5"]) == {
        "general_threshold": 0.5, "max_tags": 5}
    with pytest.raises(ConfigError, match="caption.tagger_model: unknown key"):
        redo_overrides(Config(), JobKind.ENHANCE, ["caption.tagger_model=/etc"])
