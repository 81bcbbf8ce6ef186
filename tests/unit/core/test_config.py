"""Typed config: unknown keys are errors naming the key; paths resolve against the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from astrowatch.core.config import Config, config_from_mapping
from astrowatch.core.errors import ConfigError
from astrowatch.runtime.settings import apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[3]


def _write(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_repository_config_is_the_shipped_template_and_valid():
    assert (ROOT / "config.yaml").read_text() == (ROOT / "astrowatch" / "config.example.yaml").read_text()
    cfg = load_config(ROOT / "config.yaml")
    assert cfg.data_dir == ROOT / "data" and cfg.astro.backend == "auto"


def test_unknown_key_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"watch\.stabilty_seconds: unknown key"):
        load_config(_write(tmp_path, {"watch": {"stabilty_seconds": 1}}))
    with pytest.raises(ConfigError, match="colour: unknown key"):
        load_config(_write(tmp_path, {"colour": 1}))


def test_bad_values_are_errors_with_the_file_name(tmp_path):
    path = _write(tmp_path, {"sdxl": {"width": 1001, "scheduler": "nope"}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "sdxl.width" in str(err.value) and "sdxl.scheduler" in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("a: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    sub = tmp_path / "etc"
    sub.mkdir()
    path = _write(sub, {"data_dir": "../srv/data", "astro": {"styles_file": "styles.yaml"}})
    (sub / "styles.yaml").write_text("aquarelle: {prefix: watercolour}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path)
    assert cfg.data_dir == tmp_path / "srv" / "data"
    assert cfg.astro.styles_file == sub / "styles.yaml"


def test_environment_names_the_config(tmp_path, monkeypatch):
    path = _write(tmp_path, {"retries": {"max_attempts": 7}})
    monkeypatch.setenv("ASTROWATCH_CONFIG", str(path))
    assert load_config().retries.max_attempts == 7


def test_set_overrides(tmp_path):
    cfg = load_config(_write(tmp_path, {}))
    new = apply_overrides(cfg, ["sdxl.steps=12", "enhance.scale_factor=1.5"])
    assert new.sdxl.steps == 12 and new.enhance.scale_factor == 1.5 and new.data_dir == cfg.data_dir
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(cfg, ["sdxl.stepz=1"])
    for bad in ("sdxl.stepz=1", "style=cosmique", "nosection.key=1"):  # the valid keys are listed
        with pytest.raises(ConfigError, match=r"unknown key; valid keys: data_dir, watch\.stability_seconds.*"
                                              r"astro\.style.*sdxl\.steps"):
            apply_overrides(cfg, [bad])
    with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
        apply_overrides(cfg, ["astro.style"])


def test_defaults_follow_the_seed_recommendations():
    e = Config().enhance
    assert (e.scale_factor, e.upscaler, e.steps, e.cfg_scale, e.sampler_name) == (2, "R-ESRGAN 4x+", 20, 7.0, "Euler a")


def test_styles_are_checked_when_the_config_loads(tmp_path):
    path = _write(tmp_path, {"astro": {"style": "cosmic"}})
    with pytest.raises(ConfigError, match=r"astro.style: unknown style 'cosmic'; valid styles: cosmique, "
                                          r"figuratif, symbolique"):
        load_config(path)
    (tmp_path / "styles.yaml").write_text("cosmic: {extends: cosmique}\n")
    path = _write(tmp_path, {"astro": {"style": "cosmic", "styles_file": "styles.yaml"}})
    assert load_config(path).astro.style == "cosmic"
    (tmp_path / "styles.yaml").write_text("cosmic: {budget: -3}\n")  # a broken style, even unused
    with pytest.raises(ConfigError, match="style 'cosmic': budget must be"):
        load_config(_write(tmp_path, {"astro": {"styles_file": "styles.yaml"}}))
    with pytest.raises(ConfigError, match="styles_file.*file not found"):
        load_config(_write(tmp_path, {"astro": {"styles_file": "missing.yaml"}}))
    bad_candidate = {"feedback": {"candidates": {"astro.style": ["figuratif", "cosmik"]}}}
    with pytest.raises(ConfigError, match="feedback.candidates.astro.style: unknown style 'cosmik'"):
        load_config(_write(tmp_path, bad_candidate))
    with pytest.raises(ConfigError, match="unknown style 'cosmic'"):
        apply_overrides(load_config(_write(tmp_path, {})), ["astro.style=cosmic"])


def test_job_timeout_must_stay_below_celerys_visibility_timeout_with_the_celery_executor(tmp_path):
    """A job still running when Redis's visibility timeout expires would be delivered twice."""
    with pytest.raises(ConfigError, match=r"limits\.job_timeout_seconds \(3600\) must be smaller than "
                                          r"celery\.visibility_timeout \(3600\)"):
        config_from_mapping({"executor": "celery", "limits": {"job_timeout_seconds": 3600}}, base_dir=tmp_path)
    ok = config_from_mapping({"executor": "celery", "limits": {"job_timeout_seconds": 3599}}, base_dir=tmp_path)
    assert ok.limits.job_timeout_seconds == 3599
    local = config_from_mapping({"limits": {"job_timeout_seconds": 7200}}, base_dir=tmp_path)  # no broker
    assert local.limits.job_timeout_seconds == 7200
    defaults = config_from_mapping({}, base_dir=tmp_path)  # the documented ordering of the defaults
    assert max(defaults.sdapi.read_timeout, defaults.openai.timeout) < defaults.limits.job_timeout_seconds \
        < defaults.celery.visibility_timeout
