"""The config is the daemon's: init writes it 0640 whatever the umask; run, api and doctor refuse a
config or secret file that someone other than the service user or root could change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import run_cli, write_config

pytestmark = pytest.mark.slow


def cli_with_umask(umask: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = ["sh", "-c", f'umask {umask}; exec "$@"', "sh", sys.executable, "-m", "astrowatch", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_init_under_umask_0002_writes_the_config_0640_and_tightens_an_existing_one(tmp_path):
    proc = cli_with_umask("0002", "init", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    config = tmp_path / "config.yaml"
    assert mode(config) == 0o640
    config.chmod(0o666)  # a fresh clone under umask 0002 has a group-writable config.yaml: make run still starts
    proc = cli_with_umask("0002", "init", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert mode(config) == 0o640 and f"tightened {config} from 0666 to 0640" in proc.stdout


def test_run_api_and_doctor_refuse_a_config_or_secret_the_group_can_write(tmp_path):
    cfg = write_config(tmp_path)
    run_cli("init", str(tmp_path), config=cfg)
    cfg.chmod(0o664)
    for command in ("run", "api"):
        proc = run_cli(command, config=cfg, check=False)
        assert proc.returncode == 78, proc.stderr
        assert f"{cfg}: the config is writable by its group (mode 0664)" in proc.stderr
        assert f"chmod 640 {cfg}" in proc.stderr and "Traceback" not in proc.stderr
    doctor = run_cli("doctor", config=cfg, check=False)
    assert doctor.returncode == 1
    assert "[FAIL] config and secret files:" in doctor.stdout and f"chmod 640 {cfg}" in doctor.stdout
    cfg.chmod(0o640)
    token = tmp_path / "api_token"
    token.write_text("a-token-of-more-than-sixteen-chars\n")
    token.chmod(0o606)
    cfg = write_config(tmp_path, api={"token_file": str(token)})
    cfg.chmod(0o640)
    proc = run_cli("api", config=cfg, check=False)
    assert proc.returncode == 78 and f"{token}: api.token_file is writable by others" in proc.stderr
    assert "a-token-of-more" not in proc.stderr
    assert f"chmod 600 {token}" in run_cli("doctor", config=cfg, check=False).stdout
    if os.geteuid() == 0:  # only root can give the file away: another user's config is refused too
        token.chmod(0o600)
        os.chown(cfg, 65534, -1)
        proc = run_cli("run", config=cfg, check=False)
        assert proc.returncode == 78 and "owned by" in proc.stderr and f"chown root {cfg}" in proc.stderr
