"""Session fixture: the tiny random SDXL base + refiner saved once per test process.

Import it into a test module with ``from sdxl_fixtures import tiny_sdxl  # noqa: F401``.  The
build is cached per process, so several modules importing the fixture still build it once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from extras import require

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: no network, ever

_BUILT: dict[str, tuple[Path, Path]] = {}


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(base dir, refiner dir) of the tiny SDXL, saved with ``save_pretrained``."""
    require("diffusers", "sdxl")
    require("compel", "sdxl")
    if "dirs" not in _BUILT:
        from sdxl_tiny import build_tiny_sdxl

        _BUILT["dirs"] = build_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl"))
    return _BUILT["dirs"]
