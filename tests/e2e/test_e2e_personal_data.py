"""A person exported and forgotten through the real daemon while it runs, another user's data left
untouched; then a byte-level scan of every file of the data tree (ledger, WAL, logs, cache).  The
portrait the daemon made carries the IPTC source type and a C2PA manifest c2pa's Reader validates."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import pytest
from c2pa_certs import make_chain
from harness import inbox_images, make_image, run_cli, theme_bytes, wait_until, write_config

from astrowatch.storage.provenance import TRAINED, source_type_of

pytestmark = pytest.mark.slow
c2pa = pytest.importorskip("c2pa")

NAME = "zoltanquix"
BIRTHPLACE = "Quixotlan-sur-Mer"


def _their_theme() -> bytes:
    data = json.loads(theme_bytes(user=NAME))
    data["birth"] = "1977-03-14T05:42:00+01:00"
    data["place"] = BIRTHPLACE
    return json.dumps(data).encode()


def _tree_files(root):
    for folder, _dirs, files in os.walk(root):
        for name in files:
            yield os.path.join(folder, name)


def _markers(root, user):
    """Byte strings from this person's files: 48 bytes every 256."""
    out = set()
    for folder in ("Utilisateurs", "inbox", "archive", "datasets"):
        for path in _tree_files(root / folder / user):
            data = open(path, "rb").read()
            out.update(data[i:i + 48] for i in range(0, len(data) - 48, 256))
    return out


def test_export_then_forget_while_the_daemon_runs(tmp_path, daemon_factory):
    cert, key = make_chain(tmp_path / "pki")
    config = write_config(tmp_path, astro={"backend": "fake"}, fake={"delay_seconds": 0.05, "size": 96},
                          provenance={"c2pa": {"cert_file": str(cert), "key_file": str(key)}},
                          forget={"running_wait_seconds": 20, "reader_wait_seconds": 10})
    d = daemon_factory(config).start()
    data = d.data
    for user, theme in ((NAME, _their_theme()), ("gaby", theme_bytes(user="gaby"))):
        folder = data / "Utilisateurs" / user
        folder.mkdir(parents=True)
        (folder / f"theme_{user}.json").write_bytes(theme)
        make_image(folder / "photo.jpg", (80, 60), color=(10, 200, 30) if user == NAME else (200, 30, 60))
    wait_until(lambda: len(inbox_images(data, NAME)) == 2 and len(inbox_images(data, "gaby")) == 2,
               timeout=60, what="four results")

    # the portrait says it is generated, with a manifest c2pa validates (only the test signer untrusted)
    portrait = next(p for p in inbox_images(data, NAME) if p.name.startswith(f"theme_{NAME}."))
    photo = next(p for p in inbox_images(data, NAME) if p.name.startswith("photo."))
    raw = portrait.read_bytes()
    assert source_type_of(raw) == TRAINED
    assert source_type_of(photo.read_bytes()) is None  # a Lanczos upscale is not AI-made
    with c2pa.Reader("image/png", io.BytesIO(raw)) as reader:
        store = json.loads(reader.json())
    assert {s["code"] for s in store.get("validation_status") or []} <= {"signingCredential.untrusted"}
    manifest = store["manifests"][store["active_manifest"]]
    assert any(a["label"].startswith("c2pa.actions") for a in manifest["assertions"])
    # the ledger's sha256 is of the signed bytes: approving delivers exactly them
    os.replace(portrait, data / "approved" / portrait.name)
    delivered = data / "Utilisateurs" / NAME / f"theme_{NAME}.png"
    wait_until(delivered.exists, what="portrait delivered")
    assert hashlib.sha256(delivered.read_bytes()).digest() == hashlib.sha256(raw).digest()

    gaby_before = {p: open(p, "rb").read() for f in ("inbox", "Utilisateurs", "archive")
                   for p in _tree_files(data / f / "gaby")}
    markers = {m for m in _markers(data, NAME) if not any(m in b for b in gaby_before.values())}  # the same fixture
    assert len(markers) >= 4

    # export: the person's whole record, nothing of anyone else
    out = tmp_path / "export.zip"
    run_cli("export", NAME, "--out", str(out), config=config)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        index = json.loads(zf.read("index.json"))
        ledger = json.loads(zf.read("ledger.json"))
        logs = json.loads(zf.read("logs.json"))
        blob = b"".join(zf.read(n) for n in names)
    assert f"files/Utilisateurs/{NAME}/theme_{NAME}.json" in names
    assert f"files/Utilisateurs/{NAME}/theme_{NAME}.png" in names
    assert any(n.startswith(f"files/archive/{NAME}/") and n.endswith("photo.jpg") for n in names)
    assert any(n.startswith(f"files/inbox/{NAME}/photo.") for n in names)
    assert len(ledger["jobs"]) == 2 and {j["user"] for j in ledger["jobs"]} == {NAME}
    # every other table forget deletes from is exported too: the chart's seed, the events, the files seen
    assert ledger["chart_seeds"] and {r["user"] for r in ledger["chart_seeds"]} == {NAME}
    assert ledger["events"] and {r["user"] for r in ledger["events"]} == {NAME}
    assert ledger["seen"] and all(r["path"].startswith(f"Utilisateurs/{NAME}/") for r in ledger["seen"])
    assert logs["generations.jsonl"] and all(r["user"] == NAME for r in logs["generations.jsonl"])
    assert index["jobs"] == 2 and all(f["sha256"] for f in index["files"] if "file" in f)
    assert b"gaby" not in blob

    # forget while the daemon runs
    proc = run_cli("forget", NAME, "--yes", "--json", config=config)
    report = json.loads(proc.stdout)
    assert report["jobs"] == 2 and report["wal_truncated"] is True
    assert NAME not in proc.stdout and report["person"].startswith("erased-")

    # no path, byte or copy of the person remains in the data tree
    needles = {NAME.encode(), BIRTHPLACE.encode(), b"1977-03-14", *markers}
    for path in _tree_files(data):
        assert NAME not in path, path
        content = open(path, "rb").read()
        for needle in needles:
            assert needle not in content, (path, needle[:20])
    # another user's results are intact
    assert {p: open(p, "rb").read() for p in gaby_before} == gaby_before
    # the tombstone keeps counts; the daemon keeps working, and the same name again is a new person
    again = data / "Utilisateurs" / NAME
    again.mkdir(parents=True)
    (again / f"theme_{NAME}.json").write_bytes(theme_bytes(user=NAME))
    wait_until(lambda: len(inbox_images(data, NAME)) == 1, timeout=60, what="a new person's result")
    status = run_cli("status", "--json", config=config)
    assert status.returncode == 0
