"""``astrowatch prompt``: in-process through ``astrowatch.cli.main`` and once as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from astrowatch.cli import main

THEMES = Path(__file__).resolve().parents[2] / "fixtures" / "themes"
FIXTURES = sorted(p.name for p in THEMES.glob("*.json"))
MINIMAL = THEMES / "astrowatch_minimal.json"


@pytest.fixture(autouse=True)
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder with no $ASTROWATCH_CONFIG: the command must work standalone."""
    monkeypatch.delenv("ASTROWATCH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["prompt", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_there_are_fixtures() -> None:
    assert "astrowatch_minimal.json" in FIXTURES and len(FIXTURES) >= 5


@pytest.mark.parametrize("name", FIXTURES)
def test_json_for_every_fixture(capsys: pytest.CaptureFixture[str], name: str) -> None:
    data = run_json(capsys, str(THEMES / name))
    assert set(data) >= {"prompt", "negative_prompt", "description", "style", "seed", "tokens", "chart"}
    assert data["style"] == "figuratif" and data["backend"] == "sdxl"
    assert data["prompt"].startswith("figurative oil painting, (a regal figure")  # Leo Sun
    chart = data["chart"]
    assert chart["sun"]["sign"] == "Leo" and chart["moon"]["sign"] == "Capricorn"
    assert chart["ascendant"]["sign"] == "Scorpio"
    assert chart["dominant_element"] in ("Fire", "Earth", "Air", "Water")
    for enc in ("clip_l", "clip_g"):
        assert data["tokens"][enc]["count"] <= data["tokens"][enc]["budget"] == 75
    assert "Soleil en Lion" in data["description"]


def test_plain_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt", str(MINIMAL)]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[0].startswith("figurative oil painting, ")
    assert lines[1].startswith("Negative prompt: text, letters")
    assert lines[2] == "" and lines[3].startswith("Style figuratif : ")


def test_backend_and_style_options(capsys: pytest.CaptureFixture[str]) -> None:
    sdapi = run_json(capsys, str(MINIMAL), "--backend", "sdapi")
    assert ":1.2)" in sdapi["prompt"] and sdapi["backend"] == "sdapi"
    openai = run_json(capsys, str(MINIMAL), "--backend", "openai", "--style", "cosmique")
    assert list(openai["tokens"]) == ["approx"] and openai["tokens"]["approx"]["budget"] == 900
    assert openai["style"] == "cosmique" and "(" not in openai["prompt"]


def test_config_file_named_or_found(capsys: pytest.CaptureFixture[str], no_config: Path) -> None:
    (no_config / "other.yaml").write_text("astro:\n  language: en\n  style: symbolique\n  backend: sdapi\n")
    kerykeion = str(THEMES / "kerykeion_v5_subject.json")  # asks for no style, unlike MINIMAL
    data = run_json(capsys, kerykeion, "-c", "other.yaml")
    assert data["style"] == "symbolique" and data["backend"] == "sdapi"
    assert run_json(capsys, str(MINIMAL), "-c", "other.yaml")["style"] == "figuratif"  # the theme's own
    assert data["description"].startswith("Style symbolic: ")
    (no_config / "config.yaml").write_text("astro:\n  language: en\n")
    assert run_json(capsys, str(MINIMAL))["description"].startswith("Style figurative: ")


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("astrowatch prompt: error: "), err
    return err


def test_missing_named_config_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt", str(MINIMAL), "-c", "nope.yaml"]) == 78
    assert "config file not found" in one_error_line(capsys)


def test_bad_input_exits_non_zero_with_one_line(capsys: pytest.CaptureFixture[str], no_config: Path) -> None:
    bad = no_config / "theme_x.json"
    bad.write_text('{"sun": ')
    assert main(["prompt", str(bad)]) == 65
    one_error_line(capsys)
    assert main(["prompt", str(no_config / "missing.json")]) == 66  # EX_NOINPUT, as the README says
    assert "missing.json: no such file" in one_error_line(capsys)
    assert main(["generate", str(no_config / "missing.json"), "-o", str(no_config / "x.png")]) == 66
    assert "astrowatch generate: error: " in capsys.readouterr().err
    assert main(["prompt", str(MINIMAL), "--style", "nope"]) == 78
    assert "known styles: cosmique, figuratif, symbolique" in one_error_line(capsys)


def test_real_process_matches_in_process(capsys: pytest.CaptureFixture[str], no_config: Path) -> None:
    expected = run_json(capsys, str(MINIMAL))
    exe = Path(sys.executable).parent / "astrowatch"
    env = {k: v for k, v in os.environ.items() if k != "ASTROWATCH_CONFIG"}
    env.update(PYTHONHASHSEED="4242", PYTHONIOENCODING="utf-8")
    proc = subprocess.run([str(exe), "prompt", str(MINIMAL), "--json"], cwd=no_config, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected
