"""Session fixtures: the tiny caption models of :mod:`caption_tiny`, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_wd14(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from caption_tiny import build_wd14

    return build_wd14(tmp_path_factory.mktemp("wd14") / "wd-standin-tagger")


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from caption_tiny import build_blip

    return build_blip(tmp_path_factory.mktemp("blip") / "blip-tiny")


@pytest.fixture(scope="session")
def tiny_florence2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")  # 5.x (the sdxl extra): Florence-2 is native there
    from caption_tiny import build_florence2

    return build_florence2(tmp_path_factory.mktemp("florence2") / "florence2-tiny")

