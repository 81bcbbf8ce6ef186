"""A tiny random IP-Adapter for the tiny SDXL (offline), laid out like h94/IP-Adapter:
``<dest>/sdxl_models/ip-adapter_sdxl.safetensors`` + ``<dest>/sdxl_models/image_encoder/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def build_tiny_ip_adapter(dest: Path, base_dir: Path, *, seed: int = 0) -> Path:
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet: Any = UNet2DConditionModel.from_pretrained(base_dir / "unet")
    cross = int(unet.config.cross_attention_dim)
    projection = 32
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=projection, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, image_size=32, patch_size=8))
    folder = dest / "sdxl_models"
    encoder.save_pretrained(folder / "image_encoder")
    tokens = 4  # ImageProjection: num_image_text_embeds
    state: dict[str, torch.Tensor] = {
        "image_proj.proj.weight": torch.randn(tokens * cross, projection) * 0.5,
        "image_proj.proj.bias": torch.zeros(tokens * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key = 1  # diffusers' converter: the n-th cross-attention processor reads ip_adapter.{2n+1}
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        attn = unet.get_submodule(name[: -len(".processor")])
        hidden = attn.to_k.weight.shape[0]
        state[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.5
        state[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.5
        key += 2
    save_file(state, str(folder / "ip-adapter_sdxl.safetensors"))
    return dest
