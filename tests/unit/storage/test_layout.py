"""Names from the filesystem are hostile: nothing may escape the data folder."""

from __future__ import annotations

import pytest

from astrowatch.core.errors import UnsafePathError
from astrowatch.storage.layout import Layout, check_user_name, is_ignored_name


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "a\\b", ".hidden", "bell\x07", "tab\tname", " pad",
                                  "caf\udce9", "x" * 300, "_review", "nul\x00"])
def test_unsafe_user_names_are_refused(name):
    with pytest.raises(UnsafePathError):
        check_user_name(name)


@pytest.mark.parametrize("name", ["gaby", "Zoé", "jean-pierre", "user_1", "名前"])
def test_ordinary_user_names_pass(name):
    assert check_user_name(name) == name


def test_rel_refuses_paths_outside_the_root(tmp_path):
    layout = Layout(tmp_path / "data")
    assert layout.rel(tmp_path / "data" / "inbox" / "x.png") == "inbox/x.png"
    for bad in (tmp_path / "other", tmp_path / "data" / ".." / "x"):
        with pytest.raises(UnsafePathError):
            layout.rel(bad)
    with pytest.raises(UnsafePathError):
        layout.abs("../../etc/passwd")


@pytest.mark.parametrize("name", ["x.jpg.part", ".x.jpg", "~$doc", "x.jpg~", "._x.jpg", ".DS_Store", "Thumbs.db",
                                  "a.crdownload", "a.tmp", ".a.swp", "a.swp"])
def test_drop_folder_noise_is_ignored(name):
    assert is_ignored_name(name)


def test_real_names_are_not_ignored():
    assert not is_ignored_name("photo.jpg") and not is_ignored_name("theme_gaby.json")
