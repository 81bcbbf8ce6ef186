"""``astrowatch review``: answers and acts while the inbox holds FIFOs and links (a group member's
tricks), and ``redo --set`` is held to the parameter bounds."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import make_image

from astrowatch.backends.base import CancelToken
from astrowatch.cli import main
from astrowatch.intake.ingest import Ingest
from astrowatch.review.reviewer import Reviewer
from astrowatch.runtime.settings import config_from_mapping
from astrowatch.runtime.worker import Worker
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger


@pytest.fixture
def inbox(tmp_path: Path) -> tuple[Path, Path]:
    mapping = {"data_dir": "data", "enhance": {"backend": "lanczos", "min_side": 8}}
    config = config_from_mapping(mapping, base_dir=tmp_path)
    layout = Layout(config.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    (layout.users / "gaby").mkdir()
    make_image(layout.users / "gaby" / "p.jpg")
    Ingest(config, layout, ledger, Reviewer(config, layout, ledger)).handle(str(layout.users / "gaby" / "p.jpg"))
    worker = Worker(config, layout, {"astro": "wheel", "enhance": "lanczos"}, CancelToken())
    worker.execute(worker.ledger.claim_next())
    worker.pool.close()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    return path, next((layout.root / "inbox" / "gaby").glob("p.*.png"))


def _cli(*args: str) -> int:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(main(list(args))), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), f"astrowatch {' '.join(args)} blocked"
    return int(out[0])


@pytest.mark.timeout(30)
def test_review_list_and_approve_answer_while_fifos_sit_in_the_inbox(inbox: tuple[Path, Path], capsys) -> None:
    config, image = inbox
    stem = image.name.rsplit(".", 1)[0]
    for name in ("stray.png", f"{stem}.txt.tmp"):
        os.mkfifo(image.parent / name)
    os.replace(image.parent / f"{stem}.txt.tmp", image.parent / f"{stem}.txt")  # a FIFO caption
    capsys.readouterr()  # drop the worker's log lines
    assert _cli("review", "list", "-c", str(config), "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in rows] == [f"inbox/gaby/{image.name}"]
    assert _cli("review", "approve", "-c", str(config), image.name) == 0
    assert (image.parent.parent.parent / "approved" / image.name).is_file()


def test_redo_set_out_of_bounds_is_refused_and_nothing_moves(inbox: tuple[Path, Path], capsys) -> None:
    config, image = inbox
    code = main(["review", "redo", "-c", str(config), image.name, "--set", "enhance.scale_factor=500"])
    err = capsys.readouterr().err
    assert code != 0 and "scale_factor" in err and "from 1 to 8" in err
    assert image.is_file() and "params" in json.loads(image.with_suffix(".json").read_text())
    code = main(["review", "redo", "-c", str(config), image.name, "--set", "sdapi.url=http://attacker.example"])
    assert code != 0 and "'url' cannot be set" in capsys.readouterr().err and image.is_file()
