"""A tiny random SDXL base pipeline and refiner, built offline and saved like a real model.

The components follow diffusers' own ``get_dummy_components`` for SDXL (see
``shared/reference/sdxl.md``); the tokenizer is a byte-level CLIP BPE written as
``vocab.json`` + ``merges.txt`` (no hub).  ``torch.manual_seed(0)`` before each component makes
the weights identical on every build, so saved folders are reproducible.

The refiner is a ``StableDiffusionXLImg2ImgPipeline`` with only ``text_encoder_2``/``tokenizer_2``
(shared with the base, like the real refiner), ``requires_aesthetics_score=True``: its UNet
cross-attends to text_encoder_2's hidden size only (32) and its time embedding carries 5 ids
(original size, crop, aesthetic score) -> ``projection_class_embeddings_input_dim = 5*8 + 32 = 72``.

Usage: ``python tests/support/sdxl_tiny.py OUT_DIR`` writes ``OUT_DIR/base`` and ``OUT_DIR/refiner``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

HIDDEN = 32  # both text encoders' hidden size and the projection size
TIME_EMBED = 8  # addition_time_embed_dim


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map, as CLIP uses it."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=False))


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """The smallest valid CLIP BPE: 256 byte chars, the same with ``</w>``, bos, eos (514 ids)."""
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")
    return vocab_file, merges_file


def tiny_tokenizers(folder: Path) -> tuple[Any, Any]:
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_tokenizer_files(folder)
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    merges: list[str] = []  # merges.txt holds only the version header
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    tok_2 = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77, pad_token="!")
    return tok, tok_2


def _text_encoders(tok: Any, tok_2: Any) -> tuple[Any, Any]:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def config(t: Any) -> CLIPTextConfig:
        return CLIPTextConfig(
            bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id,
            hidden_size=HIDDEN, intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4,
            num_hidden_layers=5, vocab_size=len(t), hidden_act="gelu", projection_dim=HIDDEN,
        )

    torch.manual_seed(0)
    enc = CLIPTextModel(config(tok))
    torch.manual_seed(0)
    enc_2 = CLIPTextModelWithProjection(config(tok_2))
    return enc, enc_2


def _unet(*, refiner: bool) -> Any:
    import torch
    from diffusers import UNet2DConditionModel

    time_ids = 5 if refiner else 6  # refiner: size, crop, aesthetic score; base: size, crop, target
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=time_ids * TIME_EMBED + HIDDEN,
        cross_attention_dim=HIDDEN if refiner else 2 * HIDDEN, norm_num_groups=1,
    )


def _vae_and_scheduler() -> tuple[Any, Any]:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4, sample_size=128,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    return vae, scheduler


def build_tiny_pipelines() -> tuple[Any, Any]:
    """In memory: (StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline refiner)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    with tempfile.TemporaryDirectory() as tmp:
        tok, tok_2 = tiny_tokenizers(Path(tmp))
    enc, enc_2 = _text_encoders(tok, tok_2)
    vae, scheduler = _vae_and_scheduler()
    base = StableDiffusionXLPipeline(
        vae=vae, text_encoder=enc, text_encoder_2=enc_2, tokenizer=tok, tokenizer_2=tok_2,
        unet=_unet(refiner=False), scheduler=scheduler, add_watermarker=False,
    )
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=vae, text_encoder=None, text_encoder_2=enc_2, tokenizer=None, tokenizer_2=tok_2,
        unet=_unet(refiner=True), scheduler=scheduler, requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False, add_watermarker=False,
    )
    return base, refiner


def build_tiny_sdxl(dest: Path) -> tuple[Path, Path]:
    """Build and ``save_pretrained`` the tiny base and refiner under ``dest``; return both dirs."""
    base, refiner = build_tiny_pipelines()
    base_dir, refiner_dir = dest / "base", dest / "refiner"
    base.save_pretrained(base_dir)
    refiner.save_pretrained(refiner_dir)
    return base_dir, refiner_dir


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python tests/support/sdxl_tiny.py OUT_DIR", file=sys.stderr)
        return 2
    base_dir, refiner_dir = build_tiny_sdxl(Path(argv[0]))
    print(f"base: {base_dir}\nrefiner: {refiner_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
