"""Size bombs (issue 22) on the CPU backends (wheel, lanczos; no model resident): a 1.5 GB sparse
sidecar, an 8 GB sparse photo and 200,000 nested brackets are refused with a reason before
anything is hashed or read whole; the daemon's peak RSS stays under 600 MB; an ordinary photo
dropped at the same time still reaches the inbox in bounded time.  A redo naming the ``fake``
backend, which this config does not use, is refused."""

from __future__ import annotations

import json
import time

import pytest
from harness import wait_until
from hostile import b64, image_bytes, site_fixture, vm_hwm_mb  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

GB = 1 << 30


def test_size_bombs_are_refused_and_cost_nothing(site):
    site.configure(astro={"backend": "wheel", "wheel_size": 256}, enhance={"backend": "lanczos", "min_side": 16})
    d = site.start()
    for user in ("xd", "xf", "xg"):
        site.drop_photo(user)
    site.drop_theme("xe")
    xd, xf, xg = (site.wait_result(u, "photo", d=d) for u in ("xd", "xf", "xg"))
    xe = site.wait_result("xe", "theme_xe", d=d)
    fake_redo = json.loads(xe.with_suffix(".json").read_text())
    fake_redo["params"]["backend"] = "fake"
    data, users = site.data, site.data / "Utilisateurs"
    jpeg_head = image_bytes("photo.jpg", (48, 40))[:600]
    t0 = time.monotonic()
    site.attack(
        ["mkdir", str(users / "xa")], ["mkdir", str(users / "xb")],
        ["sparse", str(users / "xa" / "big.jpg"), 8 * GB, b64(jpeg_head)],  # 8 GB photo
        ["write", str(users / "xb" / "theme_xb.json"), b64(b"[" * 200_000 + b"]" * 200_000)],
        # xd: a 1.5 GB sparse sidecar, then a redo (which reads it)
        ["sparse", str(xd.with_suffix(".json")), 3 * GB // 2, b64(b'{"params": {"size": 64, "x": "')],
        ["rename", str(xd), str(data / "redo" / xd.name)],
        # xf: a sidecar of 200,000 nested brackets, then a redo
        ["write", str(xf.with_suffix(".json")), b64(b'{"params": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")],
        ["rename", str(xf), str(data / "redo" / xf.name)],
        # xg: a 1.5 GB sparse sidecar moved along into approved/
        ["sparse", str(xg.with_suffix(".json")), 3 * GB // 2, b64(b'{"force": true, "p": "')],
        ["rename", str(xg.with_suffix(".json")), str(data / "approved" / xg.with_suffix(".json").name)],
        ["rename", str(xg), str(data / "approved" / xg.name)],
        # xe: a redo naming the test backend, which this config does not enable
        ["write", str(xe.with_suffix(".json")), b64(json.dumps(fake_redo).encode())],
        ["rename", str(xe), str(data / "redo" / xe.name)],
    )
    site.drop_photo("xc")  # an ordinary photo at the same time
    site.wait_result("xc", "photo", timeout=30, d=d)
    took = time.monotonic() - t0
    assert took < 30, f"an ordinary photo waited {took:.0f} s behind the bombs"
    wait_until(lambda: site.input_state("xa", "big.jpg") and site.input_state("xb", "theme_xb.json")
               and all(site.decision_state(u, p.name) for u, p in (("xd", xd), ("xf", xf), ("xe", xe))), 45,
               interval=0.25, what="the bombs refused")
    peak = vm_hwm_mb(d.proc.pid)
    print(f"peak RSS of the daemon under the bombs: {peak:.0f} MB")
    assert peak < 600, f"peak RSS {peak:.0f} MB"
    assert site.input_state("xa", "big.jpg") == "failed"
    assert "byte" in site.failed_record("xa", "big.jpg")["reason"].lower() or \
        "limit" in site.failed_record("xa", "big.jpg")["reason"].lower(), site.failed_record("xa", "big.jpg")
    assert site.input_state("xb", "theme_xb.json") == "failed"
    assert "depth" in site.failed_record("xb", "theme_xb.json")["reason"].lower() or \
        "nest" in site.failed_record("xb", "theme_xb.json")["reason"].lower()
    for user, result in (("xd", xd), ("xf", xf)):
        assert site.decision_state(user, result.name) == "bounced", (user, site.decision_state(user, result.name))
    # the fake redo: bounced with a reason naming it, or its child failed naming it; never run
    if site.decision_state("xe", xe.name) == "bounced":
        note = site.bounce_note("xe", xe.name)
        assert "fake" in note or "backend" in note, note
    else:
        failed = wait_until(lambda: [r for r in (data / "failed" / "xe").glob("*.error.json")
                                     if "fake" in r.read_text()] if (data / "failed" / "xe").is_dir() else [],
                            30, what="the redo's child job failed, naming the backend")
        assert failed
    for sidecar in (data / "inbox" / "xe").glob("*.json"):
        assert json.loads(sidecar.read_text()).get("backend") != "fake", sidecar
    assert "RecursionError" not in d.log() and "Traceback" not in d.log(), d.log()
    site.after(d, inputs=[("xa", "big.jpg"), ("xb", "theme_xb.json"), ("xc", "photo.jpg")],
               decisions=[("xd", xd.name), ("xf", xf.name), ("xg", xg.name), ("xe", xe.name)])
