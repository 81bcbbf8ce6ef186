"""Loading the SDXL pipelines once: model sources, device, dtype, schedulers, placement.

Only the ``sdxl*`` backend modules import torch / diffusers.  Everything here runs at
``start()`` (or when a scheduler is switched before a call); nothing here is per-image.

Model sources (``sdxl.model``, ``sdxl.refiner``, ``sdxl.vae``):

* a local diffusers folder (``model_index.json``) -> ``from_pretrained(local_files_only=True)``
* a single ``.safetensors`` checkpoint -> ``from_single_file(config=sdxl.config_dir)``
* a hub id (``org/name``) that must already be in the local Hugging Face cache.

Pickle checkpoints (``.ckpt``, ``.bin``, ``.pt``) are refused: never ``torch.load`` a pickle.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from astrowatch.core.errors import ConfigError

log = structlog.get_logger("astrowatch.backends.sdxl")

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PICKLE_SUFFIXES = frozenset({".ckpt", ".bin", ".pt", ".pth", ".pkl"})


@dataclass
class Pipes:
    """The loaded pipelines of one backend instance (one device)."""

    base: Any  # StableDiffusionXLPipeline
    img2img: Any  # StableDiffusionXLImg2ImgPipeline sharing the base's modules
    refiner: Any | None  # StableDiffusionXLImg2ImgPipeline sharing text_encoder_2 and vae
    device: str
    dtype: torch.dtype
    model_name: str
    refiner_name: str | None = None
    vae_name: str | None = None
    offloaded: bool = False
    scheduler_configs: dict[str, Any] | None = None  # as loaded: "base", "refiner"
    ip_adapter: str | None = None  # the IP-Adapter loaded into the base UNet (sdxl.ip_adapter), by name

    def __post_init__(self) -> None:
        if self.scheduler_configs is None:  # schedulers are rebuilt from these, never from a replaced one
            self.scheduler_configs = {"base": dict(self.base.scheduler.config)}
            if self.refiner is not None:
                self.scheduler_configs["refiner"] = dict(self.refiner.scheduler.config)


class _DropLongPromptWarning(logging.Filter):
    """compel encodes prompts longer than 77 tokens in chunks on purpose: the tokenizer's
    "sequence length is longer than the specified maximum" warning is noise for every job."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token indices sequence length is longer" not in record.getMessage()


_FILTER = _DropLongPromptWarning()


def quiet(*pipes: Any) -> None:
    """No progress bars in a daemon's log (loading, steps); no per-job tokenizer length warning."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers.tokenization_utils_base").addFilter(_FILTER)  # idempotent
    for pipe in pipes:
        if pipe is not None:
            pipe.set_progress_bar_config(disable=True)


# -- device and dtype ------------------------------------------------------------------------
def check_device_name(name: str) -> str:
    if name not in ("cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ConfigError(f"sdxl.device: {name!r} is not a device (use cpu, cuda or cuda:N)")
    return name


def resolve_device(name: str) -> str:
    """``cpu`` / ``cuda`` / ``cuda:N`` -> a torch device string; ConfigError if not usable."""
    check_device_name(name)
    if name == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise ConfigError(
            f"sdxl.device: {name!r} but CUDA is not available (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'none'})",
            hint="set sdxl.device: cpu, or install a CUDA build of torch",
        )
    index = int(name[5:]) if ":" in name else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"sdxl.device: {name!r} but only {count} CUDA device(s) are visible")
    return f"cuda:{index}"


def resolve_dtype(name: str, device: str) -> torch.dtype:
    if device == "cpu" and name != "float32":
        log.info("sdxl_dtype_forced", requested=name, used="float32", reason="half precision on cpu")
        return torch.float32
    return DTYPES[name]


# -- model sources ---------------------------------------------------------------------------
def classify_source(value: str, key: str) -> tuple[str, str]:
    """Return ("dir" | "file" | "hub", location) or raise ConfigError naming ``key``."""
    path = Path(value).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ConfigError(f"{key}: {value!r} is a pickle checkpoint; only .safetensors files are loaded",
                          hint="convert it to .safetensors or use a diffusers folder")
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "config.json").is_file():
            raise ConfigError(f"{key}: {value!r} is not a diffusers model folder (no model_index.json)")
        return "dir", str(path)
    if path.suffix.lower() == ".safetensors":
        if not path.is_file():
            raise ConfigError(f"{key}: {value!r} does not exist")
        return "file", str(path)
    if path.exists():
        raise ConfigError(f"{key}: {value!r} is neither a diffusers folder nor a .safetensors file")
    if HUB_ID.match(value) and not value.startswith((".", "~")):
        return "hub", value
    raise ConfigError(f"{key}: {value!r} does not exist")


def display_name(value: str) -> str:
    """The checkpoint name written in the infotext (A1111 writes the file name, no extension)."""
    path = Path(value)
    return path.stem if path.suffix.lower() == ".safetensors" else path.name


def _load_error(key: str, kind: str, value: str, exc: Exception) -> ConfigError:
    if kind == "hub":
        return ConfigError(
            f"{key}: {value!r} is not in the local Hugging Face cache; it must be downloaded first",
            hint=f"run 'hf download {value}' or set {key} to a local folder",
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(f"{key}: cannot load {value!r}: {first}")


def _from_source(cls: Any, key: str, value: str, config_dir: Path | None, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` / ``from_single_file``, offline, safetensors only."""
    kind, location = classify_source(value, key)
    kwargs["local_files_only"] = True
    try:
        if kind == "file":
            if config_dir is not None:
                kwargs["config"] = str(config_dir)
            return cls.from_single_file(location, **kwargs)
        return _from_pretrained_any_variant(cls, location, **kwargs)
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise _load_error(key, kind, value, exc) from exc


def _from_pretrained_any_variant(cls: Any, location: str, **kwargs: Any) -> Any:
    """Plain weights first, then the ``fp16`` variant (hub snapshots often hold only that one)."""
    try:
        return cls.from_pretrained(location, use_safetensors=True, **kwargs)
    except (OSError, ValueError) as first:
        try:
            return cls.from_pretrained(location, use_safetensors=True, variant="fp16", **kwargs)
        except (OSError, ValueError):
            raise first from None


# -- loading -----------------------------------------------------------------------------------
def load_vae(value: str, dtype: torch.dtype, config_dir: Path | None) -> Any:
    from diffusers import AutoencoderKL

    kind, location = classify_source(value, "sdxl.vae")
    extra: dict[str, Any] = {}
    if kind == "dir" and (Path(location) / "vae").is_dir():
        extra["subfolder"] = "vae"  # a whole pipeline folder: take its VAE
    elif kind == "file" and config_dir is not None:
        extra["subfolder"] = "vae"
    return _from_source(AutoencoderKL, "sdxl.vae", value, config_dir, dtype=dtype, **extra)


def load_base(model: str, dtype: torch.dtype, config_dir: Path | None, vae: Any | None) -> Any:
    from diffusers import StableDiffusionXLPipeline

    kwargs: dict[str, Any] = {"dtype": dtype, "add_watermarker": False}
    if vae is not None:
        kwargs["vae"] = vae
    return _from_source(StableDiffusionXLPipeline, "sdxl.model", model, config_dir, **kwargs)


def load_refiner(value: str, base: Any, dtype: torch.dtype) -> Any:
    """The refiner shares the base's ``text_encoder_2`` and ``vae`` (no second copy)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    return _from_source(
        StableDiffusionXLImg2ImgPipeline, "sdxl.refiner", value, None, dtype=dtype,
        text_encoder_2=base.text_encoder_2, vae=base.vae, add_watermarker=False,
    )


def img2img_from(base: Any) -> Any:
    """An img2img pipeline over the base's modules (no copy, no dtype change; cf. ``from_pipe``,
    which casts every shared module to float32 unless told otherwise)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    return StableDiffusionXLImg2ImgPipeline(
        **base.components, requires_aesthetics_score=False, add_watermarker=False,
        force_zeros_for_empty_prompt=bool(base.config.get("force_zeros_for_empty_prompt", True)),
    )


def place(pipes: Pipes, *, cpu_offload: bool) -> None:
    """Move the pipelines to their device, or let accelerate offload them model by model."""
    if cpu_offload and pipes.device != "cpu":
        enable_offload(pipes)
        return
    if cpu_offload:
        log.info("sdxl_cpu_offload_ignored", reason="device is cpu")
    for pipe in (pipes.base, pipes.refiner):
        if pipe is not None:
            pipe.to(pipes.device)


def enable_offload(pipes: Pipes) -> None:
    for pipe in (pipes.base, pipes.img2img, pipes.refiner):
        if pipe is not None:
            pipe.enable_model_cpu_offload(device=pipes.device)
    pipes.offloaded = True


def compile_unets(pipes: Pipes) -> None:
    """``torch.compile`` (max-autotune, channels_last) the UNets; compiled at the first image."""
    for pipe in (pipes.base, pipes.refiner):
        if pipe is not None:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.unet.compile(mode="max-autotune", fullgraph=True)


def load_ip_adapter(pipes: Pipes, cfg: Any) -> None:
    """``sdxl.ip_adapter``: a local folder laid out like h94/IP-Adapter, loaded with diffusers' own
    loader into the base UNet (shared by the img2img pipeline, which gets the image encoder too)."""
    from astrowatch.backends.sdxl.folders import ip_adapter_problems

    folder = Path(cfg.model)
    problems = ip_adapter_problems(cfg)
    if problems:
        raise ConfigError("sdxl.ip_adapter.model: " + "; ".join(problems),
                          hint="a local folder laid out like h94/IP-Adapter: sdxl_models/ip-adapter_sdxl.safetensors "
                               "and sdxl_models/image_encoder/")
    try:
        pipes.base.load_ip_adapter(str(folder), subfolder=cfg.subfolder, weight_name=cfg.weight_name,
                                   image_encoder_folder=cfg.image_encoder, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise _load_error("sdxl.ip_adapter.model", "IP-Adapter folder", str(folder), exc) from None
    base = pipes.base
    pipes.img2img.register_modules(image_encoder=base.image_encoder, feature_extractor=base.feature_extractor)
    pipes.ip_adapter = f"{folder.name}/{cfg.weight_name}"
    log.info("sdxl_ip_adapter_loaded", adapter=pipes.ip_adapter, scale=cfg.scale)


# -- schedulers --------------------------------------------------------------------------------
def make_scheduler(name: str, config: Any) -> Any:
    """A fresh scheduler named as in ``sdxl.scheduler`` from a pipeline's scheduler config."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    if name == "dpmpp_2m_karras":
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True, euler_at_final=True)
    if name == "dpmpp_2m_sde_karras":
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="sde-dpmsolver++", solver_order=2, use_karras_sigmas=True,
            euler_at_final=True)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config, use_karras_sigmas=False)
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    raise ConfigError(f"sdxl.scheduler: unknown scheduler {name!r}")


# -- the whole load ----------------------------------------------------------------------------
def load_pipes(sdxl: Any, device_name: str) -> Pipes:
    """Load base (+ vae, + refiner) for one device as configured; ConfigError on any bad source."""
    if not sdxl.model:
        raise ConfigError("sdxl.model is not set", hint="a diffusers folder, a .safetensors file or a hub id")
    device = resolve_device(device_name)
    dtype = resolve_dtype(sdxl.dtype, device)
    quiet()
    vae = load_vae(sdxl.vae, dtype, sdxl.config_dir) if sdxl.vae else None
    base = load_base(sdxl.model, dtype, sdxl.config_dir, vae)
    refiner = load_refiner(sdxl.refiner, base, dtype) if sdxl.refiner else None
    pipes = Pipes(
        base=base, img2img=img2img_from(base), refiner=refiner, device=device, dtype=dtype,
        model_name=display_name(sdxl.model),
        refiner_name=display_name(sdxl.refiner) if sdxl.refiner else None,
        vae_name=display_name(sdxl.vae) if sdxl.vae else None,
    )
    place(pipes, cpu_offload=sdxl.cpu_offload)
    if sdxl.compile:
        compile_unets(pipes)
    return pipes
