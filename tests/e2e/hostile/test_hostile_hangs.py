"""Blocking special files and runaway jobs (issue 22): FIFOs named like a theme, photo, caption or
sidecar in ``Utilisateurs/``, the inbox and the decision folders never block the daemon, ``review
list`` or ``status``; SIGTERM ends the daemon within 5 s with them in place, and a restart with
them still there reaches READY.  A job running past ``limits.job_timeout_seconds`` is stopped."""

from __future__ import annotations

import time

import pytest
from harness import wait_until
from hostile import site_fixture  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def test_fifos_everywhere_block_nothing(site):
    d = site.start()
    site.drop_photo("hal")
    site.drop_theme("ida")
    hal = site.wait_result("hal", "photo", d=d)
    ida = site.wait_result("ida", "theme_ida", d=d)
    users, inbox, approved, redo = site.data / "Utilisateurs", site.data / "inbox", site.data / "approved", \
        site.data / "redo"
    site.attack(
        ["mkdir", str(users / "jon")], ["mkdir", str(users / "kim")],
        ["fifo", str(users / "jon" / "theme_jon.json")],  # a theme that is a FIFO
        ["fifo", str(users / "jon" / "photo.jpg")],  # a photo that is a FIFO
        ["fifo", str(users / "kim" / "photo.txt")],  # caption- and sidecar-named FIFOs beside a real photo
        ["fifo", str(users / "kim" / "photo.json")],
        # hal: caption and sidecar in the inbox become FIFOs, then the image is approved
        ["fifo", str(hal.with_suffix(".txt"))], ["fifo", str(hal.with_suffix(".json"))],
        ["rename", str(hal), str(approved / hal.name)],
        # ida: approved with a FIFO sidecar and caption "moved along"
        ["fifo", str(approved / ida.with_suffix(".json").name)], ["fifo", str(approved / ida.with_suffix(".txt").name)],
        ["rename", str(ida), str(approved / ida.name)],
        # lonely FIFOs named like results in the decision folders and the inbox
        ["fifo", str(approved / "lonely.0123456789ab.png")], ["fifo", str(redo / "lonely.0123456789ab.png")],
        ["fifo", str(inbox / "hal" / "ghost.0123456789ab.json")],
        ["fifo", str(inbox / "hal" / "ghost.0123456789ab.png")],
    )
    site.drop_photo("kim")
    for who in (site.reviewer, site.attacker):  # the group's commands answer while the FIFOs sit there
        for args in (("review", "list"), ("status",)):
            t0 = time.monotonic()
            proc = who.cli(*args, env=site.env(), check=False, timeout=20)
            assert proc.returncode == 0 and time.monotonic() - t0 < 10, (args, proc.stdout, proc.stderr)
    site.after(d, inputs=[("jon", "theme_jon.json"), ("jon", "photo.jpg"), ("kim", "photo.jpg")],
               decisions=[("hal", hal.name), ("ida", ida.name)],
               allowed={("kim", "photo.jpg"): {"inbox"}})


def test_sigterm_is_obeyed_within_five_seconds_while_a_fifo_is_being_watched(site):
    d = site.start()
    site.attack(["mkdir", str(site.user_dir("lea"))], ["fifo", str(site.user_dir("lea") / "theme_lea.json")],
                ["fifo", str(site.data / "approved" / "x.0123456789ab.json")])
    time.sleep(site_stability(site) * 4)  # past the stability window: the daemon has looked at them
    site.stop(d)  # exit 0 within 5 s
    d = site.daemon().start()  # with the FIFOs still there
    site.probe(d)
    site.stop(d)


def site_stability(site) -> float:
    import yaml

    return float(yaml.safe_load(site.config.read_text())["watch"]["stability_seconds"])


def test_a_job_past_the_job_timeout_is_stopped_with_that_reason(site):
    site.configure(fake={"size": 32, "delay_seconds": 30}, limits={"min_free_mb": 20, "job_timeout_seconds": 1},
                   retries={"max_attempts": 2, "backoff_seconds": 0.1})
    d = site.start()
    site.drop_theme("max")
    t0 = time.monotonic()
    record = wait_until(lambda: site.failed_record("max", "theme_max.json"), 25, interval=0.2,
                        what="the job stopped after limits.job_timeout_seconds and failed with that reason")
    assert time.monotonic() - t0 < 25
    assert "timeout" in record["reason"].lower() or "timed out" in record["reason"].lower(), record
    assert d.proc.poll() is None, d.log()
    site.configure()  # no delay: the daemon takes new files again after a restart
    d = site.restart(d)
    site.after(d, inputs=[("max", "theme_max.json")], restart=False)
