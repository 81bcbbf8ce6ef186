"""The units in systemd/ as systemd itself judges them: ``systemd-analyze verify`` is clean and
``systemd-analyze security --offline=true`` rates each at an exposure of 2.0 or less.

Checked on a copy whose ``ExecStart`` is ``/bin/true`` (the real one exists only once installed),
the worker template as instance ``@0``."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import ROOT

UNITS = sorted((ROOT / "systemd").glob("*.service"))
MAX_EXPOSURE = 2.0
ANALYZE = shutil.which("systemd-analyze")


def _offline_supported() -> bool:
    if ANALYZE is None:
        return False
    proc = subprocess.run([ANALYZE, "security", "--help"], capture_output=True, text=True, timeout=30, check=False)
    return "--offline" in proc.stdout


pytestmark = pytest.mark.skipif(not _offline_supported(),
                                reason="no systemd-analyze with --offline on PATH (Debian: apt-get install systemd)")


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("units")
    out = []
    for unit in UNITS:
        text = re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", unit.read_text(encoding="utf-8"))
        copy = folder / unit.name.replace("@.service", "@0.service")
        copy.write_text(text, encoding="utf-8")
        out.append(copy)
    return out


def test_every_unit_is_there() -> None:
    assert {u.name for u in UNITS} == {"astrowatch.service", "astrowatch-worker@.service", "astrowatch-api.service"}


def test_systemd_analyze_verify_is_clean(copies) -> None:
    proc = subprocess.run([ANALYZE, "verify", *map(str, copies)], capture_output=True, text=True, timeout=120,
                          check=False)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines() if "astrowatch" in line]
    assert proc.returncode == 0 and not complaints, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", [u.name for u in UNITS])
def test_exposure_is_at_most_2(copies, name) -> None:
    copy = next(c for c in copies if c.name == name.replace("@.service", "@0.service"))
    proc = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(copy)],
                          capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, proc.stdout
