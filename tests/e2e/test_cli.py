"""The CLI starts fast and never imports the heavy libraries for --help or the daemon core."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from harness import run_cli, write_config

HEAVY = ("torch", "diffusers", "transformers", "compel", "pydantic")


def test_help_imports_no_heavy_library():
    code = ("import sys\nfrom astrowatch.cli import build_parser\n"
            "try:\n    build_parser().parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: astrowatch" in out and out.strip().splitlines()[-1] == "HEAVY="


def test_daemon_core_imports_no_torch():
    code = ("import sys, astrowatch.runtime.daemon, astrowatch.runtime.worker, astrowatch.backends.wheel.backend, "
            "astrowatch.backends.lanczos, astrowatch.review.reviewer\n"
            "print(','.join(m for m in ('torch', 'diffusers', 'transformers', 'compel') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_config_errors_exit_non_zero_with_one_clear_line(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("watch:\n  stabilty_seconds: 1\n")
    proc = run_cli("status", config=cfg, check=False)
    assert proc.returncode == 78
    assert proc.stderr.strip().count("\n") == 0 and "watch.stabilty_seconds: unknown key" in proc.stderr


def test_init_creates_folders_and_a_valid_commented_config(tmp_path):
    run_cli("init", str(tmp_path / "site"))
    text = (tmp_path / "site" / "config.yaml").read_text()
    assert "# astrowatch configuration" in text
    for folder in ("Utilisateurs", "inbox", "approved", "rejected", "redo", "failed", "datasets", "archive",
                   "logs", "state"):
        assert (tmp_path / "site" / "data" / folder).is_dir()
    run_cli("init", str(tmp_path / "site"))  # idempotent: keeps the existing config


def test_status_and_doctor_on_an_empty_site(tmp_path):
    cfg = write_config(tmp_path)
    out = run_cli("status", config=cfg).stdout
    assert "daemon: not running" in out and "no ledger yet" in out
    doc = run_cli("doctor", config=cfg, check=False)
    assert "[  ok] config" in doc.stdout and "astro backend: wheel ready" in doc.stdout
    assert doc.returncode == 1 and "(run 'astrowatch init')" in doc.stdout and "inbox/" in doc.stdout
    run_cli("init", str(tmp_path))
    assert run_cli("doctor", config=cfg).returncode == 0


@pytest.mark.parametrize("command", [["review", "list", "--json"], ["status", "--json"], ["--help"]])
def test_a_closed_pipe_is_quiet(tmp_path, command):
    """``astrowatch review list --json | head``: the reader is gone before anything is written."""
    cfg = write_config(tmp_path)
    run_cli("init", str(tmp_path))
    args = command if command == ["--help"] else [*command, "--config", str(cfg)]
    read, write = os.pipe()
    os.close(read)  # the reader (head) has already exited
    proc = subprocess.run([sys.executable, "-m", "astrowatch", *args], stdout=write, stderr=subprocess.PIPE,
                          text=True, timeout=60)
    os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 141) if command == ["--help"] else proc.returncode == 141
