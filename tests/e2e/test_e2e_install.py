"""The bare package (no extras) installed from the package registry into a fresh venv runs its
default backends: ``astrowatch drain`` and ``astrowatch run`` turn a theme and a photo into results.

Slow and needs the package registry (pip resolves the core dependencies there); set
ASTROWATCH_SKIP_INSTALL_TEST=1 to skip it offline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import venv
from pathlib import Path

import pytest
from harness import TEST_CONFIG, drop_theme, make_image, wait_until, write_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(os.environ.get("ASTROWATCH_SKIP_INSTALL_TEST")), reason="ASTROWATCH_SKIP_INSTALL_TEST set"),
]
CONFIG = {k: v for k, v in TEST_CONFIG.items() if k not in ("astro", "enhance")}  # backends: auto


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("bare") / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    proc = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", str(ROOT)],
                          capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0 and "Could not find a version" in proc.stderr + proc.stdout:
        pytest.skip(f"the package registry is not reachable: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env_dir


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_the_bare_install_has_only_core_dependencies(bare_venv):
    code = ("import importlib.util as u, astrowatch, sys\n"
            "print(astrowatch.__file__)\n"
            "print(','.join(m for m in ('torch', 'diffusers', 'streamlit', 'matplotlib') if u.find_spec(m)))")
    out = subprocess.run([str(bare_venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         check=True, env=_env(), cwd=bare_venv).stdout.splitlines()
    assert str(bare_venv) in out[0] and out[1] == ""  # our copy, not the worktree; no extras


def test_drain_and_run_with_the_default_backends(bare_venv, tmp_path):
    cfg = write_config(tmp_path, base=CONFIG)
    data = tmp_path / "data"
    drop_theme(data)
    make_image(data / "Utilisateurs" / "gaby" / "photo.png", size=(96, 64))
    exe = str(bare_venv / "bin" / "astrowatch")
    proc = subprocess.run([exe, "drain", "--timeout", "120", "--config", str(cfg)], capture_output=True,
                          text=True, env=_env(), cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    inbox = data / "inbox" / "gaby"
    assert len(list(inbox.glob("*.png"))) == 2 and not list((data / "failed").rglob("*.error.json"))
    log = proc.stdout + proc.stderr
    assert '"backend": "wheel"' in log and '"backend": "lanczos"' in log, log[-2000:]

    daemon = subprocess.Popen([exe, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=_env(), cwd=tmp_path)
    try:
        make_image(data / "Utilisateurs" / "gaby" / "second.png", size=(80, 80), color=(10, 200, 10))
        wait_until(lambda: len(list(inbox.glob("second.*.png"))) == 1, 60, what="the run daemon's result")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    status = subprocess.run([exe, "status", "--config", str(cfg)], capture_output=True, text=True,
                            env=_env(), cwd=tmp_path, check=True)
    assert "inbox (3)" in status.stdout, status.stdout
