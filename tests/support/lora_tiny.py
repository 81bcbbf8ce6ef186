"""Tiny LoRA files for the tiny SDXL, made with peft and saved with diffusers' own ``save_lora_weights``.

``make_sdxl_lora(path, seed)`` puts peft LoRA layers (``LoraConfig`` on the attention projections)
into a fresh copy of the tiny SDXL's UNet and both text encoders, gives ``lora_B`` random values
(peft starts it at zero, which would be a no-op adapter) and saves the adapter the way a trainer
would hand it over: ``StableDiffusionXLPipeline.save_lora_weights``.  ``make_sd15_lora`` does the
same on a small SD 1.5-shaped UNet (attention in its first down block, 768-wide cross-attention),
saved with ``StableDiffusionPipeline.save_lora_weights``: a LoRA for another base model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
SELF_ATTENTION = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0"]


def _randomise_b(model: Any, seed: int, scale: float) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)


def _inject(model: Any, targets: list[str], seed: int, scale: float) -> dict[str, Any]:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=targets)
    inject_adapter_in_model(config, model)
    _randomise_b(model, seed, scale)
    return get_peft_model_state_dict(model)


def make_sdxl_lora(path: Path, seed: int, *, scale: float = 0.5, text_encoders: bool = True,
                   unet_targets: list[str] | None = None) -> Path:
    """A LoRA for the tiny SDXL base written to ``path`` (a ``.safetensors`` file name).

    ``unet_targets=SELF_ATTENTION`` makes one that also fits the tiny refiner's UNet (its
    cross-attention is narrower, its self-attention the same)."""
    from diffusers import StableDiffusionXLPipeline
    from sdxl_tiny import build_tiny_pipelines

    base, _refiner = build_tiny_pipelines()
    layers = {"unet_lora_layers": _inject(base.unet, unet_targets or UNET_TARGETS, seed, scale)}
    if text_encoders:
        layers["text_encoder_lora_layers"] = _inject(base.text_encoder, TEXT_TARGETS, seed + 1, scale)
        layers["text_encoder_2_lora_layers"] = _inject(base.text_encoder_2, TEXT_TARGETS, seed + 2, scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(str(path.parent), weight_name=path.name, **layers)
    return path


def make_sd15_lora(path: Path, seed: int = 7) -> Path:
    """A LoRA for an SD 1.5-shaped UNet (it cannot fit the tiny SDXL)."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, norm_num_groups=1, attention_head_dim=2,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(str(path.parent), weight_name=path.name,
                                              unet_lora_layers=_inject(unet, UNET_TARGETS, seed, 0.5))
    return path
