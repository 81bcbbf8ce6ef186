"""Whether an ``sdxl.ip_adapter`` folder is complete, without loading torch (``doctor`` asks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ENCODER_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def ip_adapter_paths(cfg: Any) -> tuple[Path, Path]:
    """(the weights file, the image encoder folder) of ``sdxl.ip_adapter``: the encoder named
    without a "/" lies inside ``subfolder``, with one from the folder's root (diffusers' rule)."""
    folder = Path(cfg.model)
    encoder = folder / cfg.image_encoder if "/" in cfg.image_encoder else folder / cfg.subfolder / cfg.image_encoder
    return folder / cfg.subfolder / cfg.weight_name, encoder


def ip_adapter_problems(cfg: Any) -> list[str]:
    """What the configured IP-Adapter folder lacks (empty when complete, or when none is configured)."""
    if cfg.model is None:
        return []
    weights, encoder = ip_adapter_paths(cfg)
    problems = []
    if not weights.is_file():
        problems.append(f"{weights} is not a file")
    if not (encoder / "config.json").is_file():
        problems.append(f"{encoder / 'config.json'} is missing (the image encoder, a CLIPVisionModelWithProjection)")
    if not any((encoder / name).is_file() for name in ENCODER_WEIGHTS):
        problems.append(f"{encoder} holds no model.safetensors (the image encoder's weights; .safetensors only)")
    return problems
