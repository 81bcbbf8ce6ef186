"""No silent skips in CI: tests/support/check_skips.py and the extras helper."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from extras import require

SCRIPT = Path(__file__).resolve().parents[1] / "support" / "check_skips.py"


def run_on(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    junit = tmp_path / "junit.xml"
    junit.write_text(body, encoding="utf-8")
    return subprocess.run([sys.executable, str(SCRIPT), str(junit)], capture_output=True, text=True, timeout=60)


def report(*skips: str) -> str:
    cases = "".join(f'<testcase classname="tests.t" name="test_{i}"><skipped type="pytest.skip" '
                    f'message="{reason}">t.py:1: {reason}</skipped></testcase>' for i, reason in enumerate(skips))
    return f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{cases}' \
           '<testcase classname="tests.t" name="test_ok"/></testsuite></testsuites>'


def test_allowed_skips_are_printed_with_their_reasons_and_pass(tmp_path: Path) -> None:
    proc = run_on(tmp_path, report("no Chromium on PATH (looked for chromium)"))
    assert proc.returncode == 0, proc.stderr
    assert "[allowed] tests.t::test_0: no Chromium on PATH (looked for chromium)" in proc.stdout


def test_a_skip_not_in_the_allowlist_fails(tmp_path: Path) -> None:
    proc = run_on(tmp_path, report("no Chromium on PATH", "the 'sdxl' extra is not installed (diffusers)"))
    assert proc.returncode == 1
    assert "[NOT ALLOWED] tests.t::test_1: the 'sdxl' extra is not installed (diffusers)" in proc.stdout
    assert "1 skip(s) not in skip_allowlist.txt" in proc.stderr


def test_a_missing_report_fails(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "none.xml")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_an_installed_extra_that_does_not_import_is_an_error_not_a_skip() -> None:
    with pytest.raises(ImportError):
        require("astrowatch_no_such_module", "sdxl", dist="pytest")  # installed distribution, broken import
    with pytest.raises(pytest.skip.Exception, match="the 'ui' extra is not installed"):
        require("astrowatch_no_such_module", "ui", dist="astrowatch-no-such-distribution")
    assert require("yaml", "core", dist="PyYAML").safe_load("a: 1") == {"a": 1}


def test_on_a_real_pytest_junit_report(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "@pytest.mark.skipif(True, reason='no Chromium on PATH (looked for chromium)')\n"
        "def test_browser(): pass\n"
        "def test_extra(): pytest.skip('the sdxl extra is not installed')\n"
        "def test_fine(): pass\n", encoding="utf-8")
    junit = tmp_path / "junit.xml"
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # not this repository's settings
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                    "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"), f"--junitxml={junit}",
                    str(tmp_path / "test_sample.py")], cwd=tmp_path, capture_output=True, timeout=120)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(junit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "[allowed] test_sample::test_browser: no Chromium on PATH (looked for chromium)" in proc.stdout
    assert "[NOT ALLOWED] test_sample::test_extra: the sdxl extra is not installed" in proc.stdout
