"""Forgery (issue 22): a PNG the daemon did not make, dropped into ``approved/`` under a waiting
job's file name, is bounced back to the inbox with a ``.error.txt`` and never delivered as
``theme_<user>.png``; the daemon's own result, approved the same way, still is."""

from __future__ import annotations

import pytest
from hostile import b64, image_bytes, site_fixture  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def test_a_forged_png_under_a_waiting_jobs_name_is_bounced(site):
    d = site.start()
    site.drop_theme("yan")
    site.drop_theme("yves")
    yan = site.wait_result("yan", "theme_yan", d=d)
    yves = site.wait_result("yves", "theme_yves", d=d)
    genuine = yves.read_bytes()
    forged = image_bytes("x.png", (32, 32))
    assert forged != yan.read_bytes()
    approved = site.data / "approved"
    site.attack(
        ["write", str(approved / ".forged.png.w~"), b64(forged)],
        ["rename", str(approved / ".forged.png.w~"), str(approved / yan.name)],  # the job's name, not its bytes
        ["rename", str(yves), str(approved / yves.name)],  # the genuine result, approved as usual
    )
    site.after(d, decisions=[("yan", yan.name), ("yves", yves.name)],
               allowed={("yan", yan.name): {"bounced", "refused"}, ("yves", yves.name): {"decided"}})
    delivered = site.user_dir("yan") / "theme_yan.png"
    assert not delivered.exists() or delivered.read_bytes() != forged, "the forged PNG was delivered"
    assert (site.user_dir("yves") / "theme_yves.png").read_bytes() == genuine
