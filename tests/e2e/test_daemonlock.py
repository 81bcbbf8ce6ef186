"""One daemon per data folder: the lock on state/daemon.lock, and what a second daemon does."""

from __future__ import annotations

import os
import time

import pytest
from harness import DaemonProcess, drop_theme, run_cli, wait_until, write_config

from astrowatch.core.errors import AlreadyRunning
from astrowatch.storage.lock import DaemonLock


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    with DaemonLock(tmp_path / "state"):
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}") as err:
            DaemonLock(tmp_path / "state").acquire()  # another open file description: a second daemon
        assert err.value.exit_code == 75 and "systemctl stop" in str(err.value)
    with DaemonLock(tmp_path / "state"):  # released on exit: a restart is never blocked
        pass


@pytest.mark.slow
def test_a_second_run_or_drain_exits_at_once_while_one_shot_commands_keep_working(tmp_path):
    cfg = write_config(tmp_path)
    with DaemonProcess(cfg) as first:
        for command in ("run", "drain"):
            t0 = time.monotonic()
            proc = run_cli(command, config=cfg, check=False)
            assert proc.returncode == 75, proc.stderr
            assert time.monotonic() - t0 < 10
            assert "already runs" in proc.stderr and f"pid {first.proc.pid}" in proc.stderr
            assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert first.proc.poll() is None  # the first one is untouched
        drop_theme(tmp_path / "data")
        wait_until(lambda: list((tmp_path / "data" / "inbox" / "gaby").glob("*.png")), 30, what="a result")
        assert "daemon: running" in run_cli("status", config=cfg).stdout
        run_cli("review", "list", config=cfg)
        run_cli("stats", config=cfg)
        assert first.stop() == 0
    # the lock went with the daemon: the next one starts (and drains at once)
    assert run_cli("drain", "--timeout", "30", config=cfg, check=False).returncode == 0


@pytest.mark.slow
def test_a_killed_daemon_leaves_no_lock_behind(tmp_path):
    cfg = write_config(tmp_path)
    with DaemonProcess(cfg) as first:
        first.kill()
    with DaemonProcess(cfg) as second:
        assert second.stop() == 0
