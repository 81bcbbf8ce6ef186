"""Squatters and symlinked folders (issue 22): a plain file, a FIFO or a symlink to an outside
folder where a per-user folder goes (``failed/<u>``, ``inbox/<u>``, ``archive/<u>``,
``datasets/<u>``), logs that are symlinks, a symlinked ``Utilisateurs/<u>`` or ``datasets/<u>``:
each is moved aside to a visible ``<name>.quarantined-*`` (or refused), nothing is written outside
``data_dir``, no thread dies, and every start succeeds -- also when the squatters were placed while
the daemon was stopped with decisions waiting."""

from __future__ import annotations

import pytest
from harness import wait_until
from hostile import site_fixture  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def _real_dir(path) -> bool:
    return path.is_dir() and not path.is_symlink()


def test_squatters_where_per_user_folders_and_logs_go(site):
    d = site.start()
    data, open_dir = site.data, str(site.open_dir)
    site.attack(
        ["write", str(data / "failed" / "ua"), "c3F1YXR0ZXI="],  # a plain file
        ["fifo", str(data / "inbox" / "ub")],
        ["symlink", open_dir, str(data / "archive" / "uc")],
        ["symlink", open_dir, str(data / "datasets" / "ud")],
        ["symlink", open_dir, str(data / "inbox" / "ue")],
        ["symlink", str(site.open_dir / "log.jsonl"), str(data / "logs" / "reviews.jsonl")],
        ["symlink", str(site.open_dir / "log.jsonl"), str(data / "logs" / "generations.jsonl")],
    )
    site.drop("ua", "theme_ua.json", b'{"name": "broken", "sun": {')  # fails: failed/ua/ is a file
    site.drop_theme("ub")
    site.drop_theme("uc")
    site.drop_photo("ud")
    site.drop_theme("ue")
    uc = site.wait_result("uc", "theme_uc", d=d)
    ud = site.wait_result("ud", "photo", d=d)
    site.attack(["rename", str(uc), str(data / "rejected" / uc.name)],  # archive/uc/<job>/
                ["rename", str(ud), str(data / "approved" / ud.name)])  # datasets/ud/
    site.after(d, inputs=[("ua", "theme_ua.json"), ("ub", "theme_ub.json"), ("ue", "theme_ue.json")],
               decisions=[("uc", uc.name), ("ud", ud.name)],
               allowed={("ua", "theme_ua.json"): {"failed"}, ("ub", "theme_ub.json"): {"inbox"},
                        ("ue", "theme_ue.json"): {"inbox"}})
    for rel in ("failed/ua", "inbox/ub", "inbox/ue"):
        assert _real_dir(data / rel), rel
        assert site.quarantined(rel.split("/")[1]), f"{rel}: the squatter was not moved aside visibly"
    for rel in ("logs/reviews.jsonl", "logs/generations.jsonl"):
        path = data / rel
        assert not path.is_symlink(), f"{rel} is still the attacker's symlink"
    assert not (data / "archive" / "uc").is_symlink() and not (data / "datasets" / "ud").is_symlink()


def test_every_start_succeeds_with_squatters_placed_while_stopped(site):
    d = site.start()
    site.drop_photo("va")
    site.drop_theme("vb")
    va = site.wait_result("va", "photo", d=d)
    vb = site.wait_result("vb", "theme_vb", d=d)
    site.stop(d)
    data = site.data
    site.attack(
        ["rename", str(va), str(data / "approved" / va.name)],  # decisions waiting for the next start
        ["rename", str(vb), str(data / "rejected" / vb.name)],
        ["write", str(data / "datasets" / "va"), "c3F1YXR0ZXI="],
        ["rmtree", str(data / "archive" / "vb")], ["fifo", str(data / "archive" / "vb")],
        ["write", str(data / "failed" / "vc"), "c3F1YXR0ZXI="],
        ["write", str(data / "inbox" / "vd"), "c3F1YXR0ZXI="],
        ["rmtree", str(data / "archive" / "va")], ["symlink", str(site.open_dir), str(data / "archive" / "va")],
    )
    site.drop("vc", "theme_vc.json", b"[1, 2")  # fails into failed/vc, a file
    site.drop_theme("vd")  # a result for inbox/vd, a file
    d = site.daemon().start()  # READY, not a crash loop
    site.after(d, inputs=[("vc", "theme_vc.json"), ("vd", "theme_vd.json")],
               decisions=[("va", va.name), ("vb", vb.name)],
               allowed={("vc", "theme_vc.json"): {"failed"}, ("vd", "theme_vd.json"): {"inbox"}})
    for rel in ("datasets/va", "archive/vb", "failed/vc", "inbox/vd"):
        assert _real_dir(data / rel) or not (data / rel).exists(), rel


def test_symlinked_user_and_dataset_folders_write_nothing_outside(site):
    d = site.start()
    data, users = site.data, site.data / "Utilisateurs"
    site.drop_theme("wb")
    site.drop_photo("wc")
    wb = site.wait_result("wb", "theme_wb", d=d)
    wc = site.wait_result("wc", "photo", d=d)
    outside_wa, outside_wb, outside_wc = site.open_dir / "wa", site.open_dir / "wb", site.open_dir / "wc"
    from harness import theme_bytes
    from hostile import b64, image_bytes

    site.attack(  # the attacker's own folders outside the tree, open to every uid
        ["mkdir", str(outside_wa)], ["mkdir", str(outside_wb)], ["mkdir", str(outside_wc)],
        ["write", str(outside_wa / "theme_wa.json"), b64(theme_bytes(user="wa"))],
        ["write", str(outside_wa / "photo.jpg"), b64(image_bytes("photo.jpg", (48, 40)))],
    )
    for folder in (outside_wa, outside_wb, outside_wc):
        folder.chmod(0o777)
    site.freeze_outside()
    site.attack(
        ["symlink", str(outside_wa), str(users / "wa")],  # a user folder that points outside
        # wb: the user folder is swapped for a link outside just before the approval is delivered
        ["rename", str(users / "wb"), str(users / ".wb-away")],
        ["symlink", str(outside_wb), str(users / "wb")],
        ["rename", str(wb), str(data / "approved" / wb.name)],
        # wc: the dataset folder points outside before the photo is filed
        ["symlink", str(outside_wc), str(data / "datasets" / "wc")],
        ["rename", str(wc), str(data / "approved" / wc.name)],
    )
    def wa_visible() -> bool:  # moved aside, refused with a reason, or at least logged by name
        failed = data / "failed" / "wa"
        return bool(site.quarantined("wa") or (failed.is_dir() and list(failed.glob("*.error.json")))
                    or "Utilisateurs/wa" in d.log())

    wait_until(wa_visible, 45, interval=0.25, what="the symlinked user folder Utilisateurs/wa refused visibly")
    site.after(d, decisions=[("wb", wb.name), ("wc", wc.name)])
    assert not list(outside_wb.iterdir()) and not list(outside_wc.iterdir())
    assert sorted(p.name for p in outside_wa.iterdir()) == ["photo.jpg", "theme_wa.json"]
