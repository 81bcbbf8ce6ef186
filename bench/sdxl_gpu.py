"""Time the SDXL backend's own generate code on the full-size SDXL architecture, random weights.

Nothing is downloaded and nothing is saved unless ``--save`` asks: the UNet / VAE / text encoders are built with
the real SDXL base 1.0 (and refiner 1.0) shapes directly on the device (``with
torch.device("cuda")``), cast to bf16, wrapped with ``SdxlBackend.from_pipeline`` and timed
through ``SdxlBackend.generate`` -- the same encode / denoise / decode / upscale code the daemon
runs.  Random weights give noise images, but every FLOP of a real image is spent.

Cases (markdown table on stdout, ``--out FILE`` to also write it):

* base, bf16, SDPA attention (diffusers' default ``AttnProcessor2_0`` on torch 2);
* base + refiner (ensemble of experts, switch at 0.8);
* base + the x2 upscale pass (Lanczos, img2img at strength 0.25, tiled VAE);
* base with ``torch.compile`` (max-autotune, channels_last): first image includes compiling.

For each: time to first image, mean seconds per image over ``--runs``, steps/s, peak VRAM.

    python bench/sdxl_gpu.py                      # GPU: 1024x1024, 30 steps
    python bench/sdxl_gpu.py --tiny               # CPU smoke test on the tiny test model
    python bench/sdxl_gpu.py --save DIR           # also keep the random base for bench/overhead.py --model DIR

On a machine lent by the device tool, ``bench/run_gpu.sh`` runs this and the daemon-overhead
figure in one call (see bench/README.md, "GPU figures").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "tests" / "support"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

# Full-size shapes (shared/reference/sdxl.md; refiner from sd_xl_refiner.yaml: 384 channels,
# mult 1-2-4-4, depth 4, context 1280 = bigG only, adm 2560 = 5 x 256 + 1280): 2.567 G / 2.260 G params.
BASE_UNET = dict(
    block_out_channels=[320, 640, 1280], transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20],
    cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, layers_per_block=2, use_linear_projection=True,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], sample_size=128, norm_num_groups=32,
)
REFINER_UNET = dict(
    block_out_channels=[384, 768, 1536, 1536], transformer_layers_per_block=4, attention_head_dim=[6, 12, 24, 24],
    cross_attention_dim=1280, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2560, layers_per_block=2, use_linear_projection=True,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], sample_size=128,
)
VAE = dict(
    block_out_channels=[128, 256, 512, 512], in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, sample_size=1024,
    scaling_factor=0.13025, force_upcast=True, norm_num_groups=32,
)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              hidden_act="quick_gelu", projection_dim=768)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              hidden_act="gelu", projection_dim=1280)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")
PROMPT = ("a natal chart rendered as a cathedral rose window, deep indigo and gold leaf, the sun in leo, "
          "the moon in pisces, intricate, luminous, highly detailed")
NEGATIVE = "blurry, lowres, text, watermark"


@dataclass
class Row:
    case: str
    size: str
    steps: int
    first: float | None = None
    times: list[float] = field(default_factory=list)
    steps_per_s: float | None = None
    peak_gib: float | None = None
    note: str = ""

    def markdown(self) -> str:
        mean = f"{statistics.mean(self.times):.2f}" if self.times else "-"
        spread = f" ± {statistics.stdev(self.times):.2f}" if len(self.times) > 1 else ""
        first = f"{self.first:.2f}" if self.first is not None else "-"
        sps = f"{self.steps_per_s:.2f}" if self.steps_per_s else "-"
        peak = f"{self.peak_gib:.1f}" if self.peak_gib is not None else "-"
        return f"| {self.case} | {self.size} | {self.steps} | {first} | {mean}{spread} | {sps} | {peak} | {self.note} |"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda; cpu with --tiny)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--size", type=int, default=None, help="width = height (default 1024; 64 with --tiny)")
    p.add_argument("--steps", type=int, default=None, help="default 30 (4 with --tiny)")
    p.add_argument("--runs", type=int, default=3, help="timed images per case after the first (default 3)")
    p.add_argument("--scheduler", default="dpmpp_2m_karras")
    p.add_argument("--cases", default="base,refiner,upscale,compile",
                   help="comma list from base,refiner,upscale,compile (default: all); none: build (and --save) only")
    p.add_argument("--tiny", action="store_true", help="the tiny random test model (a smoke test, any machine)")
    p.add_argument("--out", type=Path, help="also write the markdown table to this file")
    p.add_argument("--save", type=Path, metavar="DIR",
                   help="also save the random base pipeline (save_pretrained, in --dtype) as a diffusers folder,\n"
                        "for bench/overhead.py --model DIR (the same figures through astrowatch drain)")
    args = p.parse_args(argv)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.size = args.size or (64 if args.tiny else 1024)
    args.steps = args.steps or (4 if args.tiny else 30)
    return args


def _on_device(device: str, dtype: Any, factory: Any) -> Any:
    """Random init directly on the device (no 10 GB CPU init), then cast."""
    import torch

    with torch.device(device):
        module = factory()
    return module.to(dtype=dtype).eval().requires_grad_(False)


def build_full_size(device: str, dtype: Any, with_refiner: bool) -> tuple[Any, Any]:
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from sdxl_tiny import tiny_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with tempfile.TemporaryDirectory() as tmp:
        tok, tok_2 = tiny_tokenizers(Path(tmp))  # byte-level BPE: ids < 514, inside the 49408 vocab

    def clip(cfg: dict[str, Any], t: Any) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=t.bos_token_id,
                              eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id, **cfg)

    enc = _on_device(device, dtype, lambda: CLIPTextModel(clip(CLIP_L, tok)))
    enc_2 = _on_device(device, dtype, lambda: CLIPTextModelWithProjection(clip(CLIP_G, tok_2)))
    vae = _on_device(device, dtype, lambda: AutoencoderKL(**VAE))
    unet = _on_device(device, dtype, lambda: UNet2DConditionModel(**BASE_UNET))
    base = StableDiffusionXLPipeline(vae=vae, text_encoder=enc, text_encoder_2=enc_2, tokenizer=tok,
                                     tokenizer_2=tok_2, unet=unet, scheduler=EulerDiscreteScheduler(**SCHEDULER),
                                     add_watermarker=False)
    refiner = None
    if with_refiner:
        refiner = StableDiffusionXLImg2ImgPipeline(
            vae=vae, text_encoder=None, text_encoder_2=enc_2, tokenizer=None, tokenizer_2=tok_2,
            unet=_on_device(device, dtype, lambda: UNet2DConditionModel(**REFINER_UNET)),
            scheduler=EulerDiscreteScheduler(**SCHEDULER), requires_aesthetics_score=True,
            force_zeros_for_empty_prompt=False, add_watermarker=False)
    return base, refiner


def build_tiny(device: str, with_refiner: bool) -> tuple[Any, Any]:
    from sdxl_tiny import build_tiny_pipelines

    base, refiner = build_tiny_pipelines()
    base.to(device)
    if with_refiner:
        refiner.unet.to(device)
    return base, refiner if with_refiner else None


def _config(args: argparse.Namespace) -> Any:
    from astrowatch.runtime.settings import config_from_mapping

    sdxl = {"model": "random-weights", "device": args.device, "dtype": args.dtype, "steps": args.steps,
            "width": args.size, "height": args.size, "scheduler": args.scheduler}
    return config_from_mapping({"sdxl": sdxl}, base_dir=ROOT)


def _task(seed: int, params: dict[str, Any]) -> Any:
    from astrowatch.backends.base import AstroTask

    return AstroTask(job_id=f"bench-{seed}", user="bench", chart=None,  # type: ignore[arg-type]
                     params=params, seed=seed, prompt=PROMPT, negative_prompt=NEGATIVE)


def _sync_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def measure(backend: Any, case: str, args: argparse.Namespace, params: dict[str, Any]) -> Row:
    """Time to first image, then ``args.runs`` more, through ``SdxlBackend.generate``."""
    from astrowatch.core.errors import BackendError

    out = args.size * (2 if params.get("upscale") == "2" else 1)
    row = Row(case=case, size=f"{args.size}² → {out}²" if out != args.size else f"{args.size}²", steps=args.steps)
    _sync_reset(backend.device)
    rates = []
    for i in range(args.runs + 1):
        started = time.perf_counter()
        try:
            result = backend.generate(_task(1000 + i, params))
            rates.append(result.extra["timings"].get("steps_per_second") or 0.0)
        except BackendError as exc:  # random weights may decode to NaN in half precision
            row.note = f"{exc.message[:60]}"
        elapsed = time.perf_counter() - started
        if i == 0:
            row.first = elapsed
        else:
            row.times.append(elapsed)
        print(f"  {case}: image {i} {elapsed:.2f} s", file=sys.stderr, flush=True)
    row.steps_per_s = statistics.mean(rates[1:] or rates) if rates else None
    row.peak_gib = _peak_gib(backend.device)
    return row


def run_cases(args: argparse.Namespace, base: Any, refiner: Any) -> list[Row]:
    from astrowatch.backends.sdxl.backend import SdxlBackend
    from astrowatch.backends.sdxl.load import compile_unets

    cases = {c.strip() for c in args.cases.split(",")}
    config = _config(args)
    rows = []
    plain = SdxlBackend.from_pipeline(config, base, model_name="sdxl-random")
    if "base" in cases:
        rows.append(measure(plain, f"base, {args.dtype}, SDPA", args, {}))
    if "refiner" in cases and refiner is not None:
        both = SdxlBackend.from_pipeline(config, base, refiner, model_name="sdxl-random")
        rows.append(measure(both, "base + refiner (switch 0.8)", args, {}))
    if "upscale" in cases:
        rows.append(measure(plain, "base + x2 upscale pass (strength 0.25, tiled VAE)", args, {"upscale": "2"}))
    if "compile" in cases:
        compile_unets(plain._pipes)  # what sdxl.compile: true does at start()
        rows.append(measure(plain, "base + torch.compile (max-autotune, channels_last)", args, {}))
    return rows


def environment(args: argparse.Namespace, base: Any, build_s: float) -> str:
    import diffusers
    import torch

    gpu = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    processor = type(next(iter(base.unet.attn_processors.values()))).__name__
    params = sum(p.numel() for p in base.unet.parameters()) / 1e9
    return (f"{gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); diffusers {diffusers.__version__}; "
            f"UNet {params:.3f} G params, attention {processor}; scheduler {args.scheduler}; "
            f"random-weight build {build_s:.1f} s")


def save_base(base: Any, folder: Path) -> None:
    """The random base as a diffusers folder that ``sdxl.model`` (and ``from_pretrained``) accept."""
    started = time.perf_counter()
    base.save_pretrained(folder, safe_serialization=True)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**30
    print(f"saved the random base to {folder} ({size:.2f} GiB) in {time.perf_counter() - started:.1f} s",
          file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from astrowatch.backends.sdxl.load import DTYPES, resolve_device

    args.device = resolve_device(args.device)
    dtype = torch.float32 if args.tiny else DTYPES[args.dtype]
    args.dtype = str(dtype).removeprefix("torch.")  # what the table reports
    with_refiner = "refiner" in args.cases
    started = time.perf_counter()
    if args.tiny:
        base, refiner = build_tiny(args.device, with_refiner)
    else:
        base, refiner = build_full_size(args.device, dtype, with_refiner)
    env = environment(args, base, time.perf_counter() - started)
    if args.save:
        save_base(base, args.save)
    rows = run_cases(args, base, refiner)
    lines = [f"SDXL backend benchmark: {env}", "",
             "| case | size | steps | first image (s) | s/image | steps/s | peak VRAM (GiB) | note |",
             "|---|---|---|---|---|---|---|---|", *(r.markdown() for r in rows)]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
