"""The safe-read and safe-write layer refuses every trick a group member can play on a name."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from astrowatch.storage import safefs
from astrowatch.storage.safefs import Unreadable


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = (tmp_path / "data").resolve()
    (r / "Utilisateurs" / "ana").mkdir(parents=True)
    return r


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    s = tmp_path / "secret.key"
    s.write_text("MARKER-SECRET")
    return s


def test_a_regular_file_is_read_with_its_identity(root: Path) -> None:
    f = root / "Utilisateurs" / "ana" / "theme_ana.json"
    f.write_text("{}")
    snap = safefs.read_bytes(f, root=root, max_bytes=10)
    assert snap.data == b"{}"
    assert snap.identity == (os.stat(f).st_dev, os.stat(f).st_ino)


def test_a_symlink_to_a_secret_is_refused(root: Path, secret: Path) -> None:
    f = root / "Utilisateurs" / "ana" / "caption.txt"
    f.symlink_to(secret)
    with pytest.raises(Unreadable, match="symbolic link"):
        safefs.read_bytes(f, root=root, max_bytes=100)
    assert safefs.read_text_or_none(f, root=root) is None


def test_a_symlinked_folder_is_refused(root: Path, tmp_path: Path, secret: Path) -> None:
    (root / "Utilisateurs" / "eve").symlink_to(tmp_path)
    with pytest.raises(Unreadable, match="not a folder"):
        safefs.read_bytes(root / "Utilisateurs" / "eve" / "secret.key", root=root, max_bytes=100)


def test_a_fifo_is_refused_at_once(root: Path) -> None:
    f = root / "Utilisateurs" / "ana" / "x.txt"
    os.mkfifo(f)
    done = threading.Event()

    def attempt() -> None:
        with pytest.raises(Unreadable, match="FIFO"):
            safefs.read_bytes(f, root=root, max_bytes=100)
        done.set()

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    assert done.wait(5), "opening a FIFO blocked"


def test_a_hard_link_is_refused(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text("x")
    f = root / "Utilisateurs" / "ana" / "x.txt"
    os.link(other, f)
    with pytest.raises(Unreadable, match="hard links"):
        safefs.read_bytes(f, root=root, max_bytes=100)


def test_sizes_are_checked_before_reading(root: Path) -> None:
    f = root / "Utilisateurs" / "ana" / "big.json"
    with open(f, "wb") as fh:
        fh.truncate(8 << 30)  # sparse: costs nothing to make
    with pytest.raises(Unreadable, match="over the 1048576-byte limit"):
        safefs.read_bytes(f, root=root, max_bytes=1 << 20, what="sidecar")
    with pytest.raises(Unreadable, match="over"):
        safefs.sha256_of(f, root=root, max_bytes=1 << 20)


def test_a_swapped_file_is_refused(root: Path) -> None:
    f = root / "Utilisateurs" / "ana" / "a.json"
    f.write_text("1")
    held = root / "Utilisateurs" / "ana" / "held"
    os.rename(f, held)  # the checked file stays alive under another name: its inode cannot be reused
    seen = safefs.identity(os.lstat(held))
    f.write_text("2")  # a new file under the checked name
    with pytest.raises(Unreadable, match="replaced"):
        safefs.read_bytes(f, root=root, max_bytes=10, expect=seen)
    assert safefs.read_bytes(held, root=root, max_bytes=10, expect=seen).data == b"1"


def test_a_missing_file_is_gone(root: Path) -> None:
    with pytest.raises(Unreadable) as info:
        safefs.read_bytes(root / "Utilisateurs" / "ana" / "nope", root=root, max_bytes=10)
    assert info.value.gone


def test_paths_outside_the_root_are_refused(root: Path, tmp_path: Path) -> None:
    with pytest.raises(safefs.UnsafePathError):
        safefs.read_bytes(tmp_path / "x", root=root, max_bytes=10)


def test_deep_json_is_bad_input_not_a_crash(root: Path) -> None:
    with pytest.raises(ValueError, match="deeper"):
        safefs.loads_bounded("[" * 200_000 + "]" * 200_000)
    assert safefs.loads_bounded('{"a": "[[[[["}', max_depth=2) == {"a": "[[[[["}
    f = root / "Utilisateurs" / "ana" / "s.json"
    f.write_text("[" * 100_000)
    assert safefs.read_json_or_none(f, root=root) is None


@pytest.mark.parametrize("squatter", ["file", "symlink", "fifo"])
def test_a_squatter_where_a_folder_belongs_is_moved_aside(root: Path, tmp_path: Path, squatter: str) -> None:
    target = root / "failed" / "ana"
    target.parent.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    if squatter == "file":
        target.write_text("squat")
    elif squatter == "symlink":
        target.symlink_to(outside)
    else:
        os.mkfifo(target)
    safefs.write_text(target / "x.error.json", "{}", root=root)
    assert target.is_dir() and not target.is_symlink()
    assert (target / "x.error.json").read_text() == "{}"
    assert list(outside.iterdir()) == []
    assert [p.name.split(".quarantined-")[0] for p in target.parent.iterdir() if ".quarantined-" in p.name] == ["ana"]


def test_a_symlink_at_a_written_name_is_replaced_never_followed(root: Path, secret: Path) -> None:
    f = root / "Utilisateurs" / "ana" / "theme_ana.png"
    f.symlink_to(secret)
    safefs.write_bytes(f, b"png", root=root)
    assert secret.read_text() == "MARKER-SECRET"
    assert not f.is_symlink() and f.read_bytes() == b"png"


def test_an_append_never_follows_a_symlinked_log(root: Path, secret: Path) -> None:
    log = root / "logs" / "reviews.jsonl"
    log.parent.mkdir()
    log.symlink_to(secret)
    with safefs.append_file(log, root=root) as fh:
        fh.write(b"line\n")
    assert secret.read_text() == "MARKER-SECRET"
    assert log.read_bytes() == b"line\n"


def test_moves_stay_inside_the_root(root: Path, tmp_path: Path) -> None:
    src = root / "Utilisateurs" / "ana" / "p.jpg"
    src.write_bytes(b"jpg")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "archive").mkdir()
    (root / "archive" / "ana").symlink_to(outside)
    safefs.move_out(src, root / "archive" / "ana" / "p.jpg", root=root)
    assert list(outside.iterdir()) == []
    assert (root / "archive" / "ana" / "p.jpg").read_bytes() == b"jpg"
    assert not src.exists()
