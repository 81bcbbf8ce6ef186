"""Stable Diffusion WebUI API backend (AUTOMATIC1111 / Forge started with ``--api``).

enhance: ``denoising_strength == 0`` -> ``/sdapi/v1/extra-single-image`` (upscaler only);
         above 0 -> ``/sdapi/v1/img2img`` with the "SD upscale" script (tiles + prompt).
         The result is exactly ``round(w * scale) x round(h * scale)``; the caption comes from
         ``/sdapi/v1/interrogate`` (clip or deepdanbooru) plus the technical description.
astro:   ``/sdapi/v1/txt2img`` (A1111 weight syntax from prompt fusion, optional hires fix).
         Variants (``astro.variants``) are one request each, ``batch_size: 1``: a WebUI batch takes
         one ``seed`` and draws image i with ``seed + i`` (the API has no per-image seed list), while
         variant seeds are derived by hash (:func:`astrowatch.pipeline.variants.variant_seeds`), so a
         batch could not give each image the seed recorded for its variant.

HTTP, retries and interruption live in :mod:`.sdapi_client`; this module builds payloads and
checks results.  It raises :class:`BackendUnavailable` while the WebUI is down; waiting is the
worker's business.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import io
import json
import logging
from typing import TYPE_CHECKING, Any

from astrowatch.backends.base import AstroTask, Backend, EnhanceTask, Result
from astrowatch.backends.infotext import format_infotext
from astrowatch.backends.loras import USER, LoraPlan, plan_names
from astrowatch.backends.sdapi.caption import compose_description
from astrowatch.backends.sdapi.client import SdapiClient
from astrowatch.core.errors import BackendError, BackendUnavailable, ConfigError, Interrupted, PermanentBackendError

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

    from astrowatch.core.config import Config

log = logging.getLogger("astrowatch.backends.sdapi")  # the name it had before the move

OPTIONS, SAMPLERS, UPSCALERS = "/sdapi/v1/options", "/sdapi/v1/samplers", "/sdapi/v1/upscalers"
LORAS = "/sdapi/v1/loras"
EXTRAS, IMG2IMG = "/sdapi/v1/extra-single-image", "/sdapi/v1/img2img"
TXT2IMG, INTERROGATE = "/sdapi/v1/txt2img", "/sdapi/v1/interrogate"
# modules/upscaler.py rounds every upscale DOWN to a multiple of 8 (up to 8 px off per side).
SIZE_TOLERANCE_PX = 8
CAPTION_MAX_SIDE = 1024
SCHEDULER_SUFFIXES = ("Karras", "Exponential", "Polyexponential", "SGM Uniform", "Uniform", "Simple",
                      "Normal", "DDIM", "Beta", "KL Optimal", "Align Your Steps")
HIRES_DEFAULTS: dict[str, Any] = {"hr_scale": 2.0, "hr_upscaler": "Latent", "hr_second_pass_steps": 0,
                                  "hr_denoising_strength": 0.5}


def encode_png(image: Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_image(data: Any, path: str) -> Image:
    from PIL import Image

    if not isinstance(data, str) or not data:
        raise BackendError(f"{path}: the WebUI returned no image")
    if data.startswith("data:image/"):
        data = data.split(",", 1)[-1]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
    except (OSError, ValueError, binascii.Error, Image.DecompressionBombError) as exc:
        raise BackendError(f"{path}: the WebUI returned an undecodable image ({exc})") from None
    return image if image.mode == "RGB" else image.convert("RGB")


def parse_info(data: dict[str, Any]) -> dict[str, Any]:
    """``info`` is a JSON *string* in img2img/txt2img answers."""
    info = data.get("info")
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except ValueError:
            return {}
    return info if isinstance(info, dict) else {}


def first_infotext(info: dict[str, Any]) -> str | None:
    texts = info.get("infotexts")
    if isinstance(texts, list) and texts and isinstance(texts[0], str) and texts[0].strip():
        return texts[0]
    return None


def fit_exact(image: Image, expected: tuple[int, int], path: str) -> tuple[Image, str | None]:
    """Accept the WebUI's multiple-of-8 rounding (Lanczos to the exact size); refuse anything else."""
    from PIL import Image as PILImage

    if image.size == expected:
        return image, None
    dw, dh = abs(image.width - expected[0]), abs(image.height - expected[1])
    if dw <= SIZE_TOLERANCE_PX and dh <= SIZE_TOLERANCE_PX:
        note = f"{image.width}x{image.height} -> {expected[0]}x{expected[1]} (Lanczos)"
        return image.resize(expected, PILImage.Resampling.LANCZOS), note
    raise PermanentBackendError(
        f"{path}: the WebUI returned {image.width}x{image.height}, expected {expected[0]}x{expected[1]}",
        hint="check that the WebUI's SD upscale script takes ['', overlap, upscaler, scale]")


def is_blank(image: Image) -> bool:
    extrema = image.getextrema()
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    return all(lo == hi for lo, hi in bands)


def check_not_blank(image: Image, path: str, source: Image | None = None) -> None:
    """A one-colour result (NaN VAE, black image...) is an error, unless the input was one colour."""
    if is_blank(image) and (source is None or not is_blank(source)):
        raise BackendError(f"{path}: the WebUI returned a blank image (every pixel {image.getpixel((0, 0))})")


def unknown_name(key: str, value: str, available: list[str], what: str, url: str) -> str:
    close = difflib.get_close_matches(value, available, n=1, cutoff=0.6)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key}: {value!r} is not available on the WebUI at {url}{guess}; available {what}: " + (
        ", ".join(available) or "none")


class SdapiBackend(Backend):
    name = "sdapi"
    kinds = frozenset({"astro", "enhance"})

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.client = SdapiClient(config.sdapi)
        self.model_name: str | None = None
        self.upscalers: list[str] = []
        self.samplers: list[str] = []
        self.sampler_aliases: set[str] = set()
        self._ready = False
        self._reachable: bool | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Health check, read upscalers and samplers, validate the configured names."""
        try:
            options = self.client.get(OPTIONS, retries=0)
            upscalers = self.client.get(UPSCALERS, retries=0)
            samplers = self.client.get(SAMPLERS, retries=0)
        except BackendUnavailable:
            self._reachable = False
            raise
        except PermanentBackendError as exc:
            raise ConfigError(f"sdapi.url {self.client.base} does not serve the WebUI API ({exc})",
                              hint="start the WebUI with --api (or --nowebui)") from None
        self._reachable = True
        self.model_name = options.get("sd_model_checkpoint") if isinstance(options, dict) else None
        self.upscalers = [u["name"] for u in upscalers or [] if isinstance(u, dict) and u.get("name")]
        self.samplers = [s["name"] for s in samplers or [] if isinstance(s, dict) and s.get("name")]
        self.sampler_aliases = {a for s in samplers or [] if isinstance(s, dict) for a in s.get("aliases") or []}
        self._validate()
        self._check_loras()
        self._ready = True
        log.info("sdapi: WebUI at %s, model %s, %d upscalers, %d samplers", self.client.base,
                 self.model_name, len(self.upscalers), len(self.samplers))

    def health(self) -> None:
        if not self._ready:
            self.start()
            return
        try:
            self.client.get(SAMPLERS, retries=0, timeout=min(self.config.sdapi.read_timeout, 10.0))
        except BackendUnavailable:
            self._reachable = False
            raise
        except PermanentBackendError as exc:
            self._reachable = False
            raise BackendUnavailable(f"the WebUI at {self.client.base} is not healthy ({exc})") from None
        self._reachable = True

    def close(self) -> None:
        self.client.close()

    def settings_key(self) -> Any:
        e = self.config.enhance
        return {"sdapi": self.config.sdapi.model_dump(mode="json"), "upscaler": e.upscaler,
                "sampler_name": e.sampler_name, "scale_factor": e.scale_factor}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.client.base, "model": self.model_name,
                "reachable": self._reachable}

    # -- validation --------------------------------------------------------------------------------
    def _serves(self, kind: str) -> bool:
        chosen = {k: getattr(self.config, k).backend for k in ("astro", "enhance")}
        if not any(v in ("sdapi", "auto") for v in chosen.values()):
            return True  # created explicitly (job override, CLI): check everything
        return chosen[kind] in ("sdapi", "auto")

    def _sampler_known(self, name: str) -> bool:
        if name in self.samplers or name in self.sampler_aliases:
            return True
        for suffix in SCHEDULER_SUFFIXES:  # "DPM++ 2M Karras": old name, still accepted by 1.9+
            if name.endswith(" " + suffix) and name[: -len(suffix) - 1] in self.samplers:
                return True
        return False

    def _upscaler_problem(self, key: str, name: str, scale: float) -> str | None:
        if name not in self.upscalers:
            return unknown_name(key, name, self.upscalers, "upscalers", self.client.base)
        if name == "None" and scale != 1:
            return f"{key}: 'None' does not resize; pick an upscaler ({', '.join(self.upscalers[1:4])}...)"
        return None

    def _sampler_problem(self, key: str, name: str) -> str | None:
        if self._sampler_known(name):
            return None
        return unknown_name(key, name, self.samplers, "samplers", self.client.base)

    def _validate(self) -> None:
        problems: list[str | None] = []
        if self._serves("enhance"):
            e = self.config.enhance
            problems += [self._upscaler_problem("enhance.upscaler", e.upscaler, e.scale_factor),
                         self._sampler_problem("enhance.sampler_name", e.sampler_name)]
        if self._serves("astro"):
            problems.append(self._sampler_problem("sdapi.sampler_name", self.config.sdapi.sampler_name))
        found = [p for p in problems if p]
        if found:
            raise ConfigError("; ".join(found))

    def _lora_names(self) -> set[str]:
        """Names and aliases the WebUI accepts in ``<lora:...>`` (``GET /sdapi/v1/loras``)."""
        try:
            listed = self.client.get(LORAS, retries=0)
        except PermanentBackendError as exc:
            raise ConfigError(f"sdapi.loras: the WebUI at {self.client.base} does not list LoRAs ({exc})",
                              hint="enable its built-in Lora extension, or empty sdapi.loras") from None
        return {str(n[k]) for n in listed or [] if isinstance(n, dict) for k in ("name", "alias") if n.get(k)}

    def _check_loras(self) -> None:
        """Configured names without ``{user}`` must exist on the WebUI: a config error otherwise."""
        fixed = [e for e in self.config.sdapi.loras if USER not in e.name]
        if fixed and self._serves("astro"):
            plan_names(fixed, "", self._lora_names())

    def plan_loras(self, user: str, override: Any = None) -> LoraPlan:
        """The job's ``<lora:name:weight>`` tags; a ``{user}`` name the WebUI does not list is skipped."""
        entries = self.config.sdapi.loras
        if not entries and override is None:
            return LoraPlan()
        self._ensure_started()
        return plan_names(entries, user, self._lora_names(), override)

    def _require(self, problem: str | None) -> None:
        if problem:
            raise PermanentBackendError(problem)

    def _ensure_started(self) -> None:
        if not self._ready:
            self.start()

    def _post(self, path: str, payload: dict[str, Any], task: AstroTask | EnhanceTask) -> dict[str, Any]:
        try:
            data = self.client.post(path, payload, cancel=task.cancel, progress=task.progress)
        except BackendUnavailable:
            self._reachable = False
            raise
        self._reachable = True
        if not isinstance(data, dict):
            raise BackendError(f"{path}: unexpected answer from the WebUI ({type(data).__name__})")
        return data

    # -- parameters --------------------------------------------------------------------------------
    def _merged(self, section: Any, overrides: dict[str, Any]) -> Any:
        """The config section with the job's overrides of its keys, validated like the config."""
        from pydantic import ValidationError

        data = section.model_dump()
        data.update({k: v for k, v in overrides.items() if k in data})
        try:
            return type(section).model_validate(data)
        except ValidationError as exc:
            bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise PermanentBackendError(f"job parameters: {bad}") from None

    # -- enhance -----------------------------------------------------------------------------------
    def enhance(self, task: EnhanceTask) -> Result:
        self._ensure_started()
        p = self._merged(self.config.enhance, task.params)
        self._require(self._upscaler_problem("upscaler", p.upscaler, p.scale_factor))
        w, h = task.image.size
        expected = (round(w * p.scale_factor), round(h * p.scale_factor))
        if p.denoising_strength <= 0:
            image, meta = self._extras(task, p)
        else:
            self._require(self._sampler_problem("sampler_name", p.sampler_name))
            image, meta = self._sd_upscale(task, p)
        image, size_fix = fit_exact(image, expected, meta["path"])
        check_not_blank(image, meta["path"], task.image)
        description, caption, caption_text = self._description(task, image, p.caption_model, p.scale_factor)
        infotext = meta["infotext"] or format_infotext("", "", {
            "Postprocess upscale by": p.scale_factor, "Postprocess upscaler": p.upscaler,
            "Size": f"{expected[0]}x{expected[1]}"})
        extra = {"route": meta["route"], "caption": caption, "webui": self.client.base}
        if caption_text:  # the sentence itself, for the caption step (line 1)
            extra["caption_text"] = caption_text
        if size_fix:
            extra["size_fix"] = size_fix
        return Result(image=image, backend=self.name, model=meta["model"], params=meta["params"],
                      seed=meta["seed"], prompt=meta.get("prompt"), negative_prompt=meta.get("negative_prompt"),
                      description=description, infotext=infotext, extra=extra)

    def _extras(self, task: EnhanceTask, p: Any) -> tuple[Image, dict[str, Any]]:
        payload = {"image": encode_png(task.image), "resize_mode": 0, "upscaling_resize": p.scale_factor,
                   "upscaler_1": p.upscaler, "upscaler_2": "None", "extras_upscaler_2_visibility": 0,
                   "gfpgan_visibility": 0, "codeformer_visibility": 0, "codeformer_weight": 0,
                   "upscaling_crop": True, "show_extras_results": True}
        data = self._post(EXTRAS, payload, task)
        params = {"scale_factor": p.scale_factor, "upscaler": p.upscaler, "denoising_strength": 0.0,
                  "caption_model": p.caption_model}
        return decode_image(data.get("image"), EXTRAS), {
            "path": EXTRAS, "route": "extra-single-image", "model": p.upscaler, "seed": None,
            "params": params, "infotext": None}

    def _upscaler_arg(self, name: str) -> int | str:
        """The script's upscaler index (every WebUI version takes it; names only newer ones)."""
        return self.upscalers.index(name) if name in self.upscalers else name

    def _sd_upscale(self, task: EnhanceTask, p: Any) -> tuple[Image, dict[str, Any]]:
        payload = {"init_images": [encode_png(task.image)], "denoising_strength": p.denoising_strength,
                   "prompt": p.prompt, "negative_prompt": p.negative_prompt, "steps": p.steps,
                   "cfg_scale": p.cfg_scale, "sampler_name": p.sampler_name, "seed": task.seed,
                   "width": p.tile_size, "height": p.tile_size, "resize_mode": 0, "batch_size": 1,
                   "n_iter": 1, "save_images": False, "send_images": True, "script_name": "SD upscale",
                   "script_args": ["", p.tile_overlap, self._upscaler_arg(p.upscaler), p.scale_factor]}
        data = self._post(IMG2IMG, payload, task)
        info = parse_info(data)
        images = data.get("images") or [None]
        params = {k: getattr(p, k) for k in ("scale_factor", "upscaler", "denoising_strength", "prompt",
                                             "negative_prompt", "steps", "cfg_scale", "sampler_name",
                                             "tile_size", "tile_overlap", "caption_model")}
        return decode_image(images[0], IMG2IMG), {
            "path": IMG2IMG, "route": "img2img+SD upscale", "model": info.get("sd_model_name") or self.model_name,
            "seed": info.get("seed", task.seed), "params": params, "infotext": first_infotext(info),
            "prompt": p.prompt, "negative_prompt": p.negative_prompt}

    def interrogate(self, task: EnhanceTask, model: str) -> str:
        """The WebUI's caption of ``task.image`` (``clip`` or ``deepdanbooru``): the caption step's
        ``sdapi`` captioner when another backend upscaled."""
        self._ensure_started()
        return self._interrogate(task, model)

    def _interrogate(self, task: EnhanceTask, model: str) -> str:
        thumb = task.image.copy()
        thumb.thumbnail((CAPTION_MAX_SIDE, CAPTION_MAX_SIDE))
        data = self._post(INTERROGATE, {"image": encode_png(thumb), "model": model}, task)
        caption = " ".join(str(data.get("caption") or "").split()).strip(" ,")
        if not caption:
            raise BackendError(f"{INTERROGATE}: the WebUI returned an empty caption")
        return caption

    def _description(self, task: EnhanceTask, image: Image, model: str,
                     scale: float) -> tuple[str, str, str | None]:
        """(text, caption source, caption).  Line 1 is the training caption (trigger word first)."""
        from astrowatch.backends.describe import technical_description

        language = str(task.params.get("language", self.config.astro.language))
        facts = {**task.facts, "upscaled_from": list(task.image.size), "scale_factor": scale}
        technical = technical_description(image, facts, language)
        caption, note, source = None, None, "none" if model == "none" else f"webui:{model}"
        if model != "none":
            try:
                caption = self._interrogate(task, model)
            except (Interrupted, ConfigError):
                raise
            except BackendError as exc:
                log.warning("sdapi: interrogate (%s) failed, technical description only: %s", model, exc)
                note = f"caption: WebUI interrogate unavailable, technical description only ({exc.message})"
                source = "technical"
        text = compose_description(self.config.dataset.trigger_word, caption, technical, note)
        return text, source, caption

    # -- astro -------------------------------------------------------------------------------------
    def generate(self, task: AstroTask) -> Result:
        self._ensure_started()
        loras: LoraPlan | None = task.params.get("loras")
        s = self._merged(self.config.sdapi, {k: v for k, v in task.params.items() if k != "loras"})
        self._require(self._sampler_problem("sampler_name", s.sampler_name))
        prompt = loras.prompt_with_tags(task.prompt) if loras else task.prompt
        used = {k: getattr(s, k) for k in ("sampler_name", "scheduler", "steps", "cfg_scale", "width",
                                           "height", "hires_fix")}
        payload = {"prompt": prompt, "negative_prompt": task.negative_prompt, "seed": task.seed,
                   **{k: used[k] for k in ("sampler_name", "scheduler", "steps", "cfg_scale", "width", "height")},
                   "batch_size": 1, "n_iter": 1, "save_images": False, "send_images": True}
        if s.hires_fix:
            hires = {k: task.params.get(k, v) for k, v in HIRES_DEFAULTS.items()}
            used.update(hires)
            payload.update(enable_hr=True, hr_scale=float(hires["hr_scale"]), hr_upscaler=hires["hr_upscaler"],
                           hr_second_pass_steps=int(hires["hr_second_pass_steps"]),
                           denoising_strength=float(hires["hr_denoising_strength"]))
        data = self._post(TXT2IMG, payload, task)
        info = parse_info(data)
        image = decode_image((data.get("images") or [None])[0], TXT2IMG)
        check_not_blank(image, TXT2IMG)
        seed = int(info.get("seed", task.seed))
        infotext = first_infotext(info) or format_infotext(prompt, task.negative_prompt, {
            "Steps": s.steps, "Sampler": s.sampler_name, "Schedule type": s.scheduler, "CFG scale": s.cfg_scale,
            "Seed": seed, "Size": f"{s.width}x{s.height}", "Model": info.get("sd_model_name") or self.model_name})
        return Result(image=image, backend=self.name, model=info.get("sd_model_name") or self.model_name,
                      params=used, seed=seed, prompt=task.prompt, negative_prompt=task.negative_prompt,
                      infotext=infotext, extra={"webui": self.client.base})
