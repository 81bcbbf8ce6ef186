"""Local SDXL backend: diffusers + compel, loaded once per device, kept warm.

One instance owns the pipelines of one device (``SdxlBackend(config, device="cuda:1")``); a
pipeline is not thread-safe, so calls on one instance are serialised by a lock and the daemon
runs one worker thread per instance.  ``start()`` loads (see :mod:`.sdxl_load`),
``generate()`` / ``enhance()`` run one image each (helpers in :mod:`.sdxl_run`, prompt
embeddings in :mod:`.sdxl_prompt`):

* prompts through ``compel.CompelForSDXL`` (no 77-token truncation), its parser short-cut
  for astrowatch's own prompt syntax;
* a fresh ``torch.Generator("cpu").manual_seed(task.seed)`` per image: same seed, same image;
* base + refiner as an ensemble of experts (``denoising_end`` / ``denoising_start``);
* ``upscale: "2"``: Lanczos x2 then img2img at low strength with a tiled VAE;
* NaN / all-black decodes retried once with the VAE in float32, then ``BackendError``;
* CUDA out-of-memory: free, retry once with VAE tiling + CPU offload, then ``BackendError``
  naming the settings that would fit;
* an interrupt (second SIGTERM) stops between steps and raises ``Interrupted``.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import structlog
import torch
from PIL import Image

from astrowatch.backends.base import AstroTask, Backend, EnhanceTask, Result
from astrowatch.backends.infotext import format_infotext
from astrowatch.backends.loras import LoraPlan, plan_files
from astrowatch.backends.sdxl.load import (
    Pipes,
    check_device_name,
    enable_offload,
    img2img_from,
    load_ip_adapter,
    load_pipes,
    make_scheduler,
    quiet,
)
from astrowatch.backends.sdxl.lora import AdapterSet
from astrowatch.backends.sdxl.prompt import Embeds, base_compel, encode_base, encode_refiner, refiner_compel
from astrowatch.backends.sdxl.run import (
    RunParams,
    StepMonitor,
    Timings,
    decode_checked,
    infotext_fields,
    merge_params,
    oom_advice,
    round8,
    vae_tiling,
)
from astrowatch.core.errors import BackendError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config

log = structlog.get_logger("astrowatch.backends.sdxl")

RELOAD_KEYS = ("model", "refiner", "vae", "config_dir", "dtype", "compile", "cpu_offload")
TILE_PIXELS = 1024 * 1024  # enhance: tile the VAE above this many pixels
LANCZOS = Image.Resampling.LANCZOS


class SdxlBackend(Backend):
    name: ClassVar[str] = "sdxl"
    kinds: ClassVar[frozenset[str]] = frozenset({"astro", "enhance"})

    def __init__(self, config: Config, device: str | None = None) -> None:
        super().__init__(config)
        self.device: str = check_device_name(device) if device else config.sdxl.device
        self.load_seconds: float | None = None
        self._pipes: Pipes | None = None
        self._compel: Any = None
        self._refiner_compel: Any = None
        self._adapters: AdapterSet | None = None
        self._lock = threading.Lock()
        self._image_seconds: list[float] = []
        self._low_memory = False

    @classmethod
    def from_pipeline(cls, config: Config, pipe: Any, refiner: Any = None, *,
                      model_name: str = "in-memory") -> SdxlBackend:
        """Wrap pipelines built in memory (benchmarks): no loading, the same generate code.

        ``pipe`` is a ``StableDiffusionXLPipeline`` and ``refiner`` an optional
        ``StableDiffusionXLImg2ImgPipeline``, both already on their device and dtype.
        """
        backend = cls(config, device=_device_name(pipe.device))
        pipes = Pipes(base=pipe, img2img=img2img_from(pipe), refiner=refiner, device=str(pipe.device),
                      dtype=pipe.unet.dtype, model_name=model_name,
                      refiner_name=f"{model_name}-refiner" if refiner is not None else None)
        backend._install(pipes, 0.0)
        return backend

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the pipelines once (ConfigError if a source, the device or CUDA is unusable)."""
        if self._pipes is not None:
            return
        started = time.perf_counter()
        pipes = load_pipes(self.config.sdxl, self.device)
        self._install(pipes, time.perf_counter() - started)
        self._lora().load_configured(self.config.sdxl.loras, self.config.data_dir)  # ConfigError: exit 78
        if self.config.sdxl.ip_adapter.model is not None:  # loaded once, kept resident
            load_ip_adapter(pipes, self.config.sdxl.ip_adapter)
        log.info("sdxl_loaded", model=pipes.model_name, refiner=pipes.refiner_name, device=pipes.device,
                 dtype=_dtype_name(pipes.dtype), seconds=round(self.load_seconds or 0.0, 2))

    def _install(self, pipes: Pipes, seconds: float) -> None:
        quiet(pipes.base, pipes.img2img, pipes.refiner)
        if pipes.dtype == torch.bfloat16 and pipes.base.vae.config.get("force_upcast"):
            # bf16 has float32's range: no need for diffusers to flip the VAE to float32 around
            # every img2img encode (the upscale pass at 2048^2 would pay it in memory and time)
            pipes.base.vae.register_to_config(force_upcast=False)
        self._pipes = pipes
        self._compel = base_compel(pipes.base)
        self._refiner_compel = refiner_compel(pipes.refiner) if pipes.refiner is not None else None
        self._adapters = AdapterSet(pipes.base, pipes.refiner)
        self.load_seconds = seconds

    def plan_loras(self, user: str, override: Any = None) -> LoraPlan:
        """The adapters a job of ``user`` uses (``sdxl.loras``, or the job's ``loras``); see loras.py."""
        return plan_files(self.config.sdxl.loras, user, self.config.data_dir, override)

    def close(self) -> None:
        with self._lock:
            on_cuda = self._pipes is not None and self._pipes.device.startswith("cuda")
            self._pipes = self._compel = self._refiner_compel = self._adapters = None
            gc.collect()
            if on_cuda:
                torch.cuda.empty_cache()

    def settings_key(self) -> Any:
        """Only what needs a reload; scheduler, steps, sizes... apply to the next image as is."""
        sdxl = self.config.sdxl
        key = {k: getattr(sdxl, k) for k in RELOAD_KEYS}
        key["config_dir"] = str(sdxl.config_dir) if sdxl.config_dir else None
        key["device"] = self.device
        ip = sdxl.ip_adapter  # the scale and the fallback apply to the next image as is
        key["ip_adapter"] = [str(ip.model) if ip.model else None, ip.subfolder, ip.weight_name, ip.image_encoder]
        return key

    def describe(self) -> dict[str, Any]:
        pipes, times = self._pipes, list(self._image_seconds)
        steady = times[1:] or times
        return {
            "name": self.name, "loaded": pipes is not None,
            "model": pipes.model_name if pipes else self.config.sdxl.model,
            "refiner": pipes.refiner_name if pipes else self.config.sdxl.refiner,
            "device": self.device, "dtype": _dtype_name(pipes.dtype) if pipes else self.config.sdxl.dtype,
            "load_seconds": round(self.load_seconds, 2) if self.load_seconds is not None else None,
            "images": len(times),
            "first_image_seconds": round(times[0], 3) if times else None,
            "mean_seconds_per_image": round(sum(steady) / len(steady), 3) if steady else None,
            "low_memory_fallback": self._low_memory,
            "loras_resident": len(self._adapters.resident) if self._adapters else 0,
        }

    # -- public helpers ----------------------------------------------------------------------------
    def encode(self, prompt: str, negative_prompt: str = "") -> Embeds:
        """The base prompt embeddings as ``generate`` computes them (no 77-token truncation)."""
        pipes = self._loaded()
        zero = bool(pipes.base.config.get("force_zeros_for_empty_prompt", True))
        return encode_base(self._compel, prompt, negative_prompt, zero_empty_negative=zero)

    # -- astro -----------------------------------------------------------------------------------
    def generate(self, task: AstroTask) -> Result:
        return self.generate_variants(task, [task.seed])[0]

    def generate_variants(self, task: AstroTask, seeds: list[int]) -> list[Result]:
        """All ``seeds`` in one batched call (``num_images_per_prompt`` with one generator per
        image, so each is reproducible from its own seed)."""
        pipes = self._loaded()
        run = merge_params(self.config.sdxl, task.params)
        factor = 2 if run.upscale else 1
        done: list[Result] = []

        def batch() -> Result:
            done[:] = self._generate(pipes, task, run, seeds)
            return done[0]

        with self._lock:
            self._oom_guard(batch, run.width, run.height, upscale=run.upscale, final=factor)
        return done

    def _generate(self, pipes: Pipes, task: AstroTask, run: RunParams, seeds: list[int]) -> list[Result]:
        from dataclasses import replace

        task.cancel.check()
        started, timings = time.perf_counter(), Timings()
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        monitor = StepMonitor(task.cancel, task.progress)
        with timings.measure("lora_seconds"):
            self._lora().activate(task.params.get("loras"))
        with timings.measure("encode_seconds"):
            embeds = self.encode(task.prompt, task.negative_prompt)
        self._set_schedulers(pipes, run.scheduler)
        style = self._style(pipes, task)
        latents = self._denoise(pipes, task, run, embeds, generators, monitor, timings, style)
        results = []
        for i, seed in enumerate(seeds):
            with timings.measure("decode_seconds"):
                image, retried = decode_checked(pipes.base, latents[i:i + 1])
            if run.upscale:
                task.cancel.check()
                image, again = self._upscale(pipes, image, run, embeds, generators[i], monitor, timings, style)
                retried = retried or again
            results.append(self._astro_result(pipes, replace(task, seed=seed), run, image, started, timings,
                                              monitor, retried, style))
        return results

    def _style(self, pipes: Pipes, task: AstroTask) -> dict[str, Any]:
        """The IP-Adapter's call arguments: the reference at the job's scale; once an adapter is
        loaded every call needs an image, so a job without one passes a neutral image at scale 0
        (the same pixels as no adapter)."""
        if not pipes.ip_adapter:
            return {}
        scale = _number(task.params.get("ip_adapter_scale"), self.config.sdxl.ip_adapter.scale,
                        "ip_adapter_scale", 0.0, 2.0)
        if task.style_image is None:
            scale, image = 0.0, Image.new("RGB", (64, 64))
        else:
            from astrowatch.storage.images import open_image

            limits = self.config.limits
            image = open_image(task.style_image, max_pixels=limits.max_image_pixels,
                               max_bytes=limits.max_image_bytes).convert("RGB")
        pipes.base.set_ip_adapter_scale(scale)
        return {"ip_adapter_image": image, "_scale": scale}

    def _denoise(self, pipes: Pipes, task: AstroTask, run: RunParams, embeds: Embeds,
                 generator: list[torch.Generator], monitor: StepMonitor, timings: Timings,
                 style: dict[str, Any]) -> torch.Tensor:
        common = {"num_inference_steps": run.steps, "guidance_scale": run.cfg_scale, "generator": generator,
                  "output_type": "latent", "callback_on_step_end": monitor, "num_images_per_prompt": len(generator)}
        base_only = {k: v for k, v in style.items() if not k.startswith("_")}  # the refiner has no adapter
        if pipes.refiner is not None:
            common["denoising_end"] = run.refiner_switch
        init = self._init_image(task, run)
        with timings.measure("base_seconds"):
            if init is not None:
                out = pipes.img2img(image=init, strength=run.init_strength, **common, **base_only,
                                    **embeds.kwargs())
            else:
                out = pipes.base(width=run.width, height=run.height, **common, **base_only, **embeds.kwargs())
        monitor.check()
        if pipes.refiner is None:
            base_images: torch.Tensor = out.images
            return base_images
        task.cancel.check()
        self._lora().for_refiner(task.params.get("loras"))
        with timings.measure("encode_seconds"):
            refiner_embeds = encode_refiner(self._refiner_compel, task.prompt, task.negative_prompt)
        common.pop("denoising_end")
        common["num_images_per_prompt"] = 1  # the base's latents are the batch already
        with timings.measure("refiner_seconds"):
            out = pipes.refiner(image=out.images, denoising_start=run.refiner_switch, **common,
                                **refiner_embeds.kwargs())
        monitor.check()
        refined: torch.Tensor = out.images
        return refined

    def _init_image(self, task: AstroTask, run: RunParams) -> Image.Image | None:
        """The moodboard / wheel as img2img start, only when the job asks (``init_strength``)."""
        if task.init_image is None or run.init_strength is None:
            return None
        from astrowatch.storage.images import open_image

        limits = self.config.limits
        image = open_image(task.init_image, max_pixels=limits.max_image_pixels, max_bytes=limits.max_image_bytes)
        return image.convert("RGB").resize((run.width, run.height), LANCZOS)

    def _upscale(self, pipes: Pipes, image: Image.Image, run: RunParams, embeds: Embeds,
                 generator: torch.Generator, monitor: StepMonitor, timings: Timings,
                 style: dict[str, Any]) -> tuple[Image.Image, bool]:
        """Lanczos x2, then img2img at ``upscale_strength`` with a tiled VAE."""
        big = image.resize((image.width * 2, image.height * 2), LANCZOS)
        self._set_schedulers(pipes, run.scheduler)
        steps = _img2img_steps(run.steps, run.upscale_strength)
        with timings.measure("upscale_seconds"), vae_tiling(pipes.base.vae):
            out = pipes.img2img(
                image=big, strength=run.upscale_strength, num_inference_steps=steps,
                guidance_scale=run.cfg_scale, generator=generator, output_type="latent",
                callback_on_step_end=monitor, **{k: v for k, v in style.items() if not k.startswith("_")},
                **embeds.kwargs())
            monitor.check()
            return decode_checked(pipes.img2img, out.images)

    def _astro_result(self, pipes: Pipes, task: AstroTask, run: RunParams, image: Image.Image, started: float,
                      timings: Timings, monitor: StepMonitor, retried: bool, style: dict[str, Any]) -> Result:
        total = time.perf_counter() - started
        self._image_seconds.append(total)
        refined = pipes.refiner is not None
        loras: LoraPlan | None = task.params.get("loras")
        upscale_steps = int(_img2img_steps(run.steps, run.upscale_strength) * run.upscale_strength)
        fields = infotext_fields(
            run, task.seed, pipes.model_name, VAE=pipes.vae_name,
            Refiner=pipes.refiner_name if refined else None,
            **{"Refiner switch at": run.refiner_switch if refined else None,
               "Hires upscale": 2 if run.upscale else None, "Hires steps": upscale_steps if run.upscale else None,
               "Hires upscaler": "Lanczos" if run.upscale else None,
               "Denoising strength": run.upscale_strength if run.upscale else None,
               "Lora hashes": loras.hashes_field() if loras else None,
               "IP-Adapter": pipes.ip_adapter, "IP-Adapter scale": style.get("_scale") if style else None,
               "IP-Adapter reference": task.style_sha256[:10] if style and task.style_sha256 else None})
        params = {"steps": run.steps, "cfg_scale": run.cfg_scale, "width": run.width, "height": run.height,
                  "scheduler": run.scheduler, "upscale": "2" if run.upscale else "none",
                  "refiner_switch": run.refiner_switch if refined else None,
                  "init_strength": run.init_strength, "device": pipes.device, "dtype": _dtype_name(pipes.dtype)}
        if style:  # the adapter, its scale and the reference it was given (none: scale 0)
            params["ip_adapter"] = {"model": pipes.ip_adapter, "scale": style["_scale"],
                                    "reference_sha256": task.style_sha256 if task.style_image else None}
        return Result(
            image=image, backend=self.name, model=pipes.model_name, params=params, seed=task.seed,
            prompt=task.prompt, negative_prompt=task.negative_prompt,
            infotext=format_infotext(loras.prompt_with_tags(task.prompt) if loras else task.prompt,
                                     task.negative_prompt, fields),
            extra={"timings": self._timings(timings, monitor, total), "vae_fp32_retry": retried,
                   "size": f"{image.width}x{image.height}"},
        )

    # -- enhance ---------------------------------------------------------------------------------
    def enhance(self, task: EnhanceTask) -> Result:
        pipes = self._loaded()
        scale = _number(task.params.get("scale_factor"), self.config.enhance.scale_factor, "scale_factor", 1.0, 8.0)
        w, h = task.image.size
        with self._lock:
            return self._oom_guard(lambda: self._enhance(pipes, task, scale), w, h, upscale=False, final=scale)

    def _enhance(self, pipes: Pipes, task: EnhanceTask, scale: float) -> Result:
        task.cancel.check()
        cfg, sdxl = self.config.enhance, self.config.sdxl
        strength = _number(task.params.get("strength"), sdxl.enhance_strength, "strength", 0.0, 1.0)
        steps = int(_number(task.params.get("steps"), cfg.steps, "steps", 1, 150))
        started, timings, monitor = time.perf_counter(), Timings(), StepMonitor(task.cancel, task.progress)
        self._lora().activate(None)  # LoRAs are for astro images: photos bound for a dataset stay unstyled
        source = task.image.convert("RGB")
        target = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
        image = source.resize((round8(target[0]), round8(target[1])), LANCZOS)
        retried = False
        if strength * steps >= 1.0:
            with timings.measure("encode_seconds"):
                embeds = self.encode(cfg.prompt, cfg.negative_prompt)
            self._set_schedulers(pipes, sdxl.scheduler)
            tiled = image.width * image.height > TILE_PIXELS
            with timings.measure("img2img_seconds"), vae_tiling(pipes.base.vae, tiled):
                out = pipes.img2img(
                    image=image, strength=strength, num_inference_steps=steps, guidance_scale=cfg.cfg_scale,
                    generator=torch.Generator("cpu").manual_seed(task.seed), output_type="latent",
                    callback_on_step_end=monitor, **embeds.kwargs())
                monitor.check()
                image, retried = decode_checked(pipes.img2img, out.images)
        if image.size != target:
            image = image.resize(target, LANCZOS)
        total = time.perf_counter() - started
        self._image_seconds.append(total)
        params = {"scale_factor": scale, "strength": strength, "steps": steps, "cfg_scale": cfg.cfg_scale,
                  "scheduler": sdxl.scheduler, "size": f"{target[0]}x{target[1]}"}
        return Result(image=image, backend=self.name, model=pipes.model_name, params=params, seed=task.seed,
                      prompt=cfg.prompt, negative_prompt=cfg.negative_prompt,
                      description=self._describe_enhanced(task, image),
                      extra={"timings": self._timings(timings, monitor, total), "vae_fp32_retry": retried})

    def _describe_enhanced(self, task: EnhanceTask, image: Image.Image) -> str:
        from astrowatch.backends.describe import technical_description

        return technical_description(image, dict(task.facts), self.config.astro.language)

    # -- shared ------------------------------------------------------------------------------------
    def _loaded(self) -> Pipes:
        if self._pipes is None:
            raise BackendError("the sdxl backend is not started (start() loads the model)")
        return self._pipes

    def _lora(self) -> AdapterSet:
        if self._adapters is None:
            raise BackendError("the sdxl backend is not started (start() loads the model)")
        return self._adapters

    def _set_schedulers(self, pipes: Pipes, name: str) -> None:
        """Fresh schedulers of the asked kind on every pipeline (they hold per-run state)."""
        configs = pipes.scheduler_configs or {}
        pipes.base.scheduler = make_scheduler(name, configs["base"])
        pipes.img2img.scheduler = make_scheduler(name, configs["base"])
        if pipes.refiner is not None:
            pipes.refiner.scheduler = make_scheduler(name, configs["refiner"])

    def _timings(self, timings: Timings, monitor: StepMonitor, total: float) -> dict[str, Any]:
        values: dict[str, Any] = dict(timings.values)
        denoise = sum(values.get(k, 0.0) for k in ("base_seconds", "refiner_seconds", "upscale_seconds",
                                                     "img2img_seconds"))
        values.update(load_seconds=round(self.load_seconds or 0.0, 3), total_seconds=round(total, 4),
                      steps=monitor.steps,
                      steps_per_second=round(monitor.steps / denoise, 3) if denoise > 0 else None)
        return values

    def _oom_guard(self, run: Callable[[], Result], width: int, height: int, *, upscale: bool,
                   final: float) -> Result:
        """Run; on CUDA OOM free memory and retry once with VAE tiling + CPU offload."""
        try:
            return run()
        except torch.OutOfMemoryError:
            pass  # leave the except block so the traceback's frames (and their tensors) can go
        self._free_memory()
        if not self._low_memory:
            self._enter_low_memory()
            try:
                result = run()
            except torch.OutOfMemoryError:
                pass
            else:
                result.extra["oom_retry"] = True
                return result
            self._free_memory()
        pipes = self._loaded()
        advice = oom_advice(width, height, upscale=upscale, cpu_offload=pipes.offloaded)
        tried = "VAE tiling and CPU offload" if pipes.offloaded else "VAE tiling"
        raise BackendError(f"out of memory for {width}x{height} (output x{final:g}) on {pipes.device}, "
                           f"also after retrying with {tried}", hint=advice)

    def _enter_low_memory(self) -> None:
        """VAE tiling and model CPU offload from now on (until the next reload)."""
        pipes = self._loaded()
        pipes.base.vae.enable_tiling()
        if pipes.device.startswith("cuda") and not pipes.offloaded:
            enable_offload(pipes)
        self._low_memory = True
        log.warning("sdxl_out_of_memory_retry", device=pipes.device, vae_tiling=True, cpu_offload=pipes.offloaded)

    def _free_memory(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _img2img_steps(steps: int, strength: float) -> int:
    """img2img runs ``int(steps * strength)`` steps: ask for enough that at least one runs."""
    return max(steps, int(1.0 / strength) + 1) if strength > 0 else steps


def _number(value: Any, default: float, key: str, low: float, high: float) -> float:
    if value is None:
        return float(default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"job parameters: {key}: {value!r} is not a number") from None
    if not low <= number <= high:
        raise InputError(f"job parameters: {key}: {number:g} is not in [{low:g}, {high:g}]")
    return number


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _device_name(device: Any) -> str:
    text = str(device)
    return text if text in ("cpu", "cuda") or text.startswith("cuda:") else "cpu"
