"""Symlink reads (issue 22): a group member points a name the daemon reads -- a caption ``.txt``
or sidecar ``.json`` moved along into a decision folder, a theme, a photo -- at a file only the
daemon's uid can read.  Nothing of it may reach the tree (datasets, ledger, archive, logs)."""

from __future__ import annotations

import pytest
from hostile import site_fixture  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def test_symlinked_captions_and_sidecars_moved_along_leak_nothing(site):
    d = site.start()
    for user in ("ana", "bea"):
        site.drop_photo(user)
    for user in ("cleo", "dan"):
        site.drop_theme(user)
    ana = site.wait_result("ana", "photo", d=d)
    bea = site.wait_result("bea", "photo", d=d)
    cleo = site.wait_result("cleo", "theme_cleo", d=d)
    dan = site.wait_result("dan", "theme_dan", d=d)
    approved, redo, secret = site.data / "approved", site.data / "redo", str(site.secret)
    site.attack(
        # ana: the caption moved along into approved/ is a link to the secret
        ["symlink", secret, str(ana.with_suffix(".txt"))],
        ["rename", str(ana.with_suffix(".txt")), str(approved / ana.with_suffix(".txt").name)],
        ["rename", str(ana), str(approved / ana.name)],
        # bea: the sidecar moved along is a link to the secret (a valid sidecar, marker in it)
        ["symlink", secret, str(bea.with_suffix(".json"))],
        ["rename", str(bea.with_suffix(".json")), str(approved / bea.with_suffix(".json").name)],
        ["rename", str(bea), str(approved / bea.name)],
        # cleo: a redo whose sidecar is the secret ("params": {"prompt": MARKER, ...})
        ["symlink", secret, str(cleo.with_suffix(".json"))],
        ["rename", str(cleo.with_suffix(".json")), str(redo / cleo.with_suffix(".json").name)],
        ["rename", str(cleo), str(redo / cleo.name)],
        # dan: the caption left in the inbox is the link; the image is approved
        ["symlink", secret, str(dan.with_suffix(".txt"))],
        ["rename", str(dan), str(approved / dan.name)],
    )
    site.after(d, decisions=[("ana", ana.name), ("bea", bea.name), ("cleo", cleo.name), ("dan", dan.name)],
               allowed={("cleo", cleo.name): {"bounced"}})
    assert "unreadable" in (site.bounce_note("cleo", cleo.name) or "").lower() or site.bounce_note("cleo", cleo.name)


def test_symlinked_themes_and_photos_are_refused_with_a_reason(site):
    d = site.start()
    site.attack(
        ["mkdir", str(site.user_dir("eve"))], ["mkdir", str(site.user_dir("fay"))],
        ["mkdir", str(site.user_dir("gil"))],
    )
    eve_secret = site.secret_theme("eve")
    site.freeze_outside()
    site.attack(
        ["symlink", str(eve_secret), str(site.user_dir("eve") / "theme_eve.json")],
        ["symlink", str(site.secret_jpg), str(site.user_dir("fay") / "photo.jpg")],
        ["symlink", str(site.secret), str(site.user_dir("gil") / "moodboard.json")],
        ["symlink", str(site.secret_jpg), str(site.user_dir("gil") / "moodboard.jpg")],
    )
    site.drop_theme("gil")  # gil's own theme, with a moodboard that is a link to the secret image
    states = site.after(d, inputs=[("eve", "theme_eve.json"), ("fay", "photo.jpg"), ("gil", "theme_gil.json")],
                        allowed={("eve", "theme_eve.json"): {"failed", "quarantined"},
                                 ("fay", "photo.jpg"): {"failed", "quarantined"}})
    for user, name in (("eve", "theme_eve.json"), ("fay", "photo.jpg")):
        if states[f"{user}/{name}"] == "failed":
            assert "link" in site.failed_record(user, name)["reason"].lower(), site.failed_record(user, name)
