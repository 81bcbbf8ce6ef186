"""Redo and API parameters: one check, with bounds, editable keys only, enabled backends only."""

from __future__ import annotations

from pathlib import Path

import pytest

from astrowatch.core.errors import InputError
from astrowatch.review.inbox import redo_overrides
from astrowatch.review.params import check_params, enabled_backends
from astrowatch.runtime.settings import config_from_mapping


def _config(tmp_path: Path, **sections: object):
    return config_from_mapping({"data_dir": "data", **sections}, base_dir=tmp_path)


@pytest.mark.parametrize(("key", "value", "words"), [
    ("steps", 100_000, "from 1 to 150"),
    ("steps", 2.5, "whole number"),
    ("steps", True, "whole number"),
    ("cfg_scale", float("nan"), "from 0 to 30"),
    ("width", 1000_000, "from 64 to 4096"),
    ("width", 1001, "multiple of 8"),
    ("strength", 1.5, "from 0 to 1"),
    ("denoising_strength", -0.1, "from 0 to 1"),
    ("scale_factor", 64, "from 1 to 8"),
    ("seed", -5, "from 0 to 4294967295"),
    ("size", "99999x2", "WIDTHxHEIGHT"),
    ("style", "baroque", "figuratif"),
    ("prompt", "x" * 5000, "at most 2000"),
    ("loras", [{}] * 100, "at most 16"),
])
def test_a_value_out_of_bounds_is_refused_naming_the_key_and_the_range(tmp_path: Path, key: str, value: object,
                                                                        words: str) -> None:
    with pytest.raises(InputError) as err:
        check_params(_config(tmp_path), "astro", {key: value})
    assert repr(key) in err.value.message and words in err.value.message


@pytest.mark.parametrize("key", ["url", "base_url", "api_key_file", "auth", "device", "model", "job_id", "_x", "sha256"])
def test_keys_a_reviewer_may_not_set_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(InputError, match="cannot be set") as err:
        check_params(_config(tmp_path), "enhance", {key: "http://attacker.example"})
    assert "steps" in (err.value.hint or "")


def test_values_within_bounds_pass_and_numbers_are_normalised(tmp_path: Path) -> None:
    params = {"steps": 40.0, "cfg_scale": 7, "width": 1024, "seed": 5, "style": "figuratif", "size": "1024x1536",
              "init_strength": None, "loras": [{"name": "me", "weight": 0.8}]}
    assert check_params(_config(tmp_path), "astro", params) == {**params, "steps": 40}


def test_fake_is_reachable_only_where_the_config_selects_it(tmp_path: Path) -> None:
    plain = _config(tmp_path, astro={"backend": "wheel"}, enhance={"backend": "lanczos"})
    assert enabled_backends(plain, "astro") == ["wheel"] and enabled_backends(plain, "enhance") == ["lanczos"]
    with pytest.raises(InputError, match="enables for astro jobs: wheel"):
        check_params(plain, "astro", {"backend": "fake"})
    testing = _config(tmp_path, astro={"backend": "fake"})
    assert check_params(testing, "astro", {"backend": "fake"}) == {"backend": "fake"}
    assert "fake" not in enabled_backends(testing, "enhance")


def test_backends_whose_section_the_config_fills_in_are_enabled(tmp_path: Path) -> None:
    config = _config(tmp_path, astro={"backend": "wheel"}, enhance={"backend": "lanczos"},
                     sdapi={"url": "http://127.0.0.1:7861"}, sdxl={"model": "/models/x.safetensors"})
    assert enabled_backends(config, "astro") == ["wheel", "sdxl", "sdapi"]
    assert enabled_backends(config, "enhance") == ["lanczos", "sdapi", "sdxl"]
    auto = _config(tmp_path)  # auto may pick the WebUI or the CPU backend
    assert enabled_backends(auto, "astro") == ["wheel", "sdapi"]
    with pytest.raises(InputError):
        check_params(auto, "astro", {"backend": "auto"})


def test_review_redo_set_is_checked_with_the_same_bounds(tmp_path: Path) -> None:
    config = _config(tmp_path, enhance={"backend": "lanczos"})
    assert redo_overrides(config, "enhance", ["enhance.scale_factor=3"]) == {"scale_factor": 3}
    with pytest.raises(InputError, match="'scale_factor'.*from 1 to 8"):
        redo_overrides(config, "enhance", ["enhance.scale_factor=300"])
    with pytest.raises(InputError, match="'url' cannot be set"):
        redo_overrides(config, "enhance", ["sdapi.url=http://attacker.example"])
    with pytest.raises(InputError, match="'backend'"):
        redo_overrides(config, "enhance", ["enhance.backend=fake"])
