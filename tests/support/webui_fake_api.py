"""Endpoint logic of the fake WebUI (see webui_server.py): schemas, 422s, Pillow work, the lock.

Shapes follow AUTOMATIC1111's modules/api: FastAPI validation errors are
``{"detail": [{"loc", "msg", "type"}]}`` (pydantic 1 wording); every other error goes through the
WebUI's ``handle_exception``: ``{"error": <exception class>, "detail": <HTTPException detail or "">,
"body": "", "errors": str(exc)}`` with the exception's status (500 unless an HTTPException).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw, PngImagePlugin

DEFAULT_UPSCALERS = ("None", "Lanczos", "Nearest", "DAT x2", "ESRGAN_4x", "LDSR", "R-ESRGAN 4x+",
                     "R-ESRGAN 4x+ Anime6B", "ScuNET", "SwinIR 4x")
DEFAULT_SAMPLERS = ("DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "Euler a", "Euler", "LMS", "Heun", "DDIM",
                    "UniPC")
LATENT_MODES = ("Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                "Latent (nearest)", "Latent (nearest-exact)")
MODEL_NAME, MODEL_HASH = "sd_xl_base_1.0", "31e35c80fc"
MODEL_TITLE = f"{MODEL_NAME}.safetensors [{MODEL_HASH}]"
VERSION = "v1.10.1"

_PROCESSING = {"prompt": "str", "negative_prompt": "str", "seed": "int", "sampler_name": "str",
               "sampler_index": "str", "scheduler": "str", "steps": "int", "cfg_scale": "float",
               "width": "int", "height": "int", "batch_size": "int", "n_iter": "int",
               "send_images": "bool", "save_images": "bool", "script_name": "str", "script_args": "list",
               "alwayson_scripts": "dict", "override_settings": "dict", "denoising_strength": "float"}
SCHEMAS: dict[str, dict[str, str]] = {
    "/sdapi/v1/extra-single-image": {
        "image": "str", "resize_mode": "mode01", "upscaling_resize": "pos_float", "upscaling_resize_w": "int",
        "upscaling_resize_h": "int", "upscaling_crop": "bool", "upscaler_1": "str", "upscaler_2": "str",
        "extras_upscaler_2_visibility": "float", "gfpgan_visibility": "float",
        "codeformer_visibility": "float", "codeformer_weight": "float", "show_extras_results": "bool",
        "upscale_first": "bool"},
    "/sdapi/v1/img2img": {**_PROCESSING, "init_images": "list", "resize_mode": "int", "mask": "str",
                          "include_init_images": "bool"},
    "/sdapi/v1/txt2img": {**_PROCESSING, "enable_hr": "bool", "hr_scale": "float", "hr_upscaler": "str",
                          "hr_second_pass_steps": "int", "hr_resize_x": "int", "hr_resize_y": "int"},
    "/sdapi/v1/interrogate": {"image": "str", "model": "str"},
}
_TYPE_ERRORS = {"str": "str type expected", "int": "value is not a valid integer",
                "float": "value is not a valid float", "bool": "value could not be parsed to a boolean",
                "list": "value is not a valid list", "dict": "value is not a valid dict"}


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.body = status, body


def http_exception(status: int, detail: str) -> ApiError:
    return ApiError(status, {"error": "HTTPException", "detail": detail, "body": "", "errors": f"{status}: {detail}"})


def exception(name: str, message: str) -> ApiError:
    return ApiError(500, {"error": name, "detail": "", "body": "", "errors": message})


# -- request parsing (FastAPI + pydantic 1 behaviour) -------------------------------------------
def _coerce(kind: str, value: Any) -> Any:
    if value is None:
        return None
    base = {"pos_float": "float", "mode01": "int"}.get(kind, kind)
    if base == "str" and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if base == "bool":
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
    if base in ("int", "float") and not isinstance(value, (list, dict, bool)):
        try:
            return int(float(value)) if base == "int" else float(value)
        except (TypeError, ValueError):
            pass
    if base == "list" and isinstance(value, list) or base == "dict" and isinstance(value, dict):
        return value
    raise TypeError(base)


def _check(kind: str, field: str, value: Any, errors: list[dict[str, Any]]) -> Any:
    try:
        out = _coerce(kind, value)
    except TypeError as exc:
        kind = str(exc)
        errors.append({"loc": ["body", field], "msg": _TYPE_ERRORS[kind],
                       "type": f"type_error.{'integer' if kind == 'int' else kind}"})
        return None
    if kind == "pos_float" and out is not None and out <= 0:
        errors.append({"loc": ["body", field], "msg": "ensure this value is greater than 0",
                       "type": "value_error.number.not_gt", "ctx": {"limit_value": 0}})
    if kind == "mode01" and out not in (None, 0, 1):
        errors.append({"loc": ["body", field], "msg": "unexpected value; permitted: 0, 1",
                       "type": "value_error.const", "ctx": {"given": value, "permitted": [0, 1]}})
    return out


def parse_body(path: str, raw: bytes) -> dict[str, Any]:
    """JSON body -> dict with coerced values, or ApiError(422) like FastAPI."""
    if not raw.strip():
        raise ApiError(422, {"detail": [{"loc": ["body"], "msg": "field required", "type": "value_error.missing"}]})
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ApiError(422, {"detail": [{"loc": ["body", getattr(exc, "pos", 0)], "msg": str(exc),
                                         "type": "value_error.jsondecode"}]}) from None
    if not isinstance(data, dict):
        raise ApiError(422, {"detail": [{"loc": ["body"], "msg": _TYPE_ERRORS["dict"], "type": "type_error.dict"}]})
    errors: list[dict[str, Any]] = []
    schema = SCHEMAS.get(path, {})
    out = {key: _check(schema[key], key, value, errors) if key in schema else value for key, value in data.items()}
    if errors:
        raise ApiError(422, {"detail": errors})
    return out


# -- images -------------------------------------------------------------------------------------
def decode_image(encoding: str) -> Image.Image:
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";")[1].split(",")[1]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(encoding)))
        image.load()
        return image
    except (OSError, ValueError, binascii.Error, IndexError):
        raise http_exception(500, "Invalid encoded image") from None


def encode_image(image: Image.Image, infotext: str | None = None) -> str:
    info = PngImagePlugin.PngInfo()
    if infotext:
        info.add_text("parameters", infotext)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def draw_from_seed(seed: int, width: int, height: int) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(4, max(5, min(width, height) // 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def _colour_word(image: Image.Image) -> str:
    rgb = [sum(band) / len(band) for band in zip(*image.convert("RGB").resize((8, 8)).getdata(), strict=False)]
    if max(rgb) - min(rgb) < 16:
        return "grey" if 40 < rgb[0] < 215 else ("black" if rgb[0] <= 40 else "white")
    return ("red", "green", "blue")[rgb.index(max(rgb))]


def infotext(body: dict[str, Any], seed: int, size: tuple[int, int], extra: dict[str, Any]) -> str:
    fields = {"Steps": body.get("steps") or 50, "Sampler": body.get("sampler_name") or "Euler",
              "Schedule type": body.get("scheduler") or "Automatic", "CFG scale": body.get("cfg_scale") or 7.0,
              "Seed": seed, "Size": f"{size[0]}x{size[1]}", "Model hash": MODEL_HASH, "Model": MODEL_NAME,
              **extra, "Version": VERSION}
    lines = [body.get("prompt") or ""]
    if body.get("negative_prompt"):
        lines.append(f"Negative prompt: {body['negative_prompt']}")
    lines.append(", ".join(f"{k}: {v}" for k, v in fields.items()))
    return "\n".join(lines)


class FakeApi:
    def __init__(self, *, upscalers: tuple[str, ...], samplers: tuple[str, ...],
                 interrogators: tuple[str, ...], round_to_8: bool, loras: tuple[str, ...] = ()) -> None:
        self.upscalers, self.samplers, self.interrogators = list(upscalers), list(samplers), interrogators
        self.loras = list(loras)  # names in models/Lora (GET /sdapi/v1/loras)
        self.round_to_8, self.slow, self.job_count, self.job, self.interrupts = round_to_8, 0.0, 0, "", 0
        self.steps = 0
        self.blank = False  # answer all-black images from img2img/txt2img (a NaN VAE)
        self.bodies: list[dict[str, Any]] = []
        self._queue_lock = threading.Lock()  # the WebUI's queue_lock
        self._interrupt, self._released, self._started = threading.Event(), threading.Event(), 0.0

    def route(self, method: str, path: str) -> Callable[..., Any] | None:
        table = {
            ("GET", "/sdapi/v1/options"): self.options, ("GET", "/sdapi/v1/samplers"): self.get_samplers,
            ("GET", "/sdapi/v1/upscalers"): self.get_upscalers, ("GET", "/sdapi/v1/sd-models"): self.sd_models,
            ("GET", "/sdapi/v1/progress"): self.progress, ("POST", "/sdapi/v1/interrupt"): self.interrupt,
            ("POST", "/sdapi/v1/extra-single-image"): self.extras, ("POST", "/sdapi/v1/img2img"): self.img2img,
            ("POST", "/sdapi/v1/txt2img"): self.txt2img, ("POST", "/sdapi/v1/interrogate"): self.interrogate,
            ("GET", "/sdapi/v1/loras"): self.get_loras, ("POST", "/sdapi/v1/refresh-loras"): lambda: None,
        }
        return table.get((method, path))

    @staticmethod
    def check_auth(auth: str | None, header: str | None) -> dict[str, Any] | None:
        if auth is None:
            return None
        if not header or not header.startswith("Basic "):
            return {"detail": "Not authenticated"}
        try:
            given = base64.b64decode(header[6:]).decode()
        except (ValueError, UnicodeDecodeError):
            given = ""
        if given == auth:
            return None
        return {"error": "HTTPException", "detail": "Incorrect username or password", "body": "",
                "errors": "401: Incorrect username or password"}

    def release(self) -> None:  # wake every sleeping job (server shutdown)
        self._released.set()
        self._interrupt.set()

    # -- the queue lock --------------------------------------------------------------------------
    def run_job(self, job: str, body: dict[str, Any], work: Callable[[], Any]) -> Any:
        with self._queue_lock:
            self.bodies.append(body)
            if not self._released.is_set():
                self._interrupt.clear()
            self.job_count, self.job, self._started = 1, job, time.monotonic()
            steps = body.get("steps")
            self.steps = steps if isinstance(steps, int) and steps > 0 else 20
            try:
                if self.slow > 0:
                    self._interrupt.wait(self.slow)
                return work()
            finally:
                self.job_count, self.job = 0, ""

    # -- GET -------------------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {"sd_model_checkpoint": MODEL_TITLE, "samples_format": "png", "upscaler_for_img2img": None,
                "interrogate_clip_num_beams": 1, "deepbooru_use_spaces": True, "sd_vae": "Automatic"}

    def get_samplers(self) -> list[dict[str, Any]]:
        return [{"name": n, "aliases": [n.lower().replace(" ", "_").replace("+", "p")], "options": {}}
                for n in self.samplers]

    def get_upscalers(self) -> list[dict[str, Any]]:
        return [{"name": n, "model_name": None if n in ("None", "Lanczos", "Nearest") else n,
                 "model_path": None, "model_url": None, "scale": 4.0} for n in self.upscalers]

    def get_loras(self) -> list[dict[str, Any]]:
        """extensions-builtin/Lora/scripts/api.py: name, alias, path, metadata per network."""
        return [{"name": n, "alias": n, "path": f"/models/Lora/{n}.safetensors", "metadata": {}} for n in self.loras]

    def lora_params(self, prompt: str) -> dict[str, Any]:
        """Like A1111: <lora:name:weight> tags in the prompt; known ones go into "Lora hashes"."""
        found = [m for m in re.findall(r"<lora:([^:>]+):[^>]*>", prompt) if m in self.loras]
        if not found:
            return {}
        pairs = ", ".join(f"{n}: {hashlib.sha256(n.encode()).hexdigest()[:12]}" for n in found)
        return {"Lora hashes": json.dumps(pairs)}

    def sd_models(self) -> list[dict[str, Any]]:
        return [{"title": MODEL_TITLE, "model_name": MODEL_NAME, "hash": MODEL_HASH[:8], "sha256": None,
                 "filename": f"/models/Stable-diffusion/{MODEL_NAME}.safetensors", "config": None}]

    def progress(self) -> dict[str, Any]:
        busy = self.job_count != 0
        done = min(0.99, (time.monotonic() - self._started) / self.slow) if busy and self.slow else 0.0
        state = {"skipped": False, "interrupted": self._interrupt.is_set(), "stopping_generation": False,
                 "job": self.job, "job_count": self.job_count, "job_timestamp": "20250101000000",
                 "job_no": 0, "sampling_step": round(done * self.steps) if busy else 0,
                 "sampling_steps": self.steps if busy else 0}
        return {"progress": done, "eta_relative": max(0.0, self.slow * (1 - done)) if busy else 0.0,
                "state": state, "current_image": None, "textinfo": None}

    def interrupt(self) -> dict[str, Any]:
        self.interrupts += 1
        self._interrupt.set()
        return {}

    # -- POST ------------------------------------------------------------------------------------
    def _upscale(self, image: Image.Image, scale: float) -> Image.Image:
        """modules/upscaler.py Upscaler.upscale: the size is rounded DOWN to a multiple of 8."""
        w, h = int(image.width * scale), int(image.height * scale)
        if self.round_to_8:
            w, h = w // 8 * 8, h // 8 * 8
        return image.convert("RGB").resize((max(w, 1), max(h, 1)), Image.Resampling.LANCZOS)

    def _find_upscaler(self, name: str) -> None:
        if name != "None" and name not in self.upscalers:
            raise exception("AssertionError", f"could not find upscaler named {name}")

    def extras(self, body: dict[str, Any]) -> dict[str, Any]:
        image = decode_image(body.get("image") or "")
        name, scale = body.get("upscaler_1") or "None", body.get("upscaling_resize") or 2.0
        self._find_upscaler(name)
        self._find_upscaler(body.get("upscaler_2") or "None")

        def work() -> dict[str, Any]:
            out, info = image, ""
            if name != "None":
                if body.get("resize_mode") == 1:
                    scale_to = max(body.get("upscaling_resize_w", 512) / image.width,
                                   body.get("upscaling_resize_h", 512) / image.height)
                    out = self._upscale(image, scale_to)
                else:
                    out = self._upscale(image, scale)
                info = f"Postprocess upscale by: {scale}, Postprocess upscaler: {name}"
            return {"image": encode_image(out), "html_info": f"<p>{info}</p>"}

        return self.run_job("extras", body, work)

    def _sampler(self, body: dict[str, Any]) -> str:
        name = body.get("sampler_name") or body.get("sampler_index") or "Euler"
        if name not in self.samplers:
            raise http_exception(404, "Sampler not found")
        return name

    @staticmethod
    def _seed(body: dict[str, Any]) -> int:
        seed = body.get("seed")
        return random.randrange(2**32) if seed is None or seed == -1 else seed

    def _response(self, body: dict[str, Any], image: Image.Image, seed: int, size: tuple[int, int],
                  extra: dict[str, Any]) -> dict[str, Any]:
        text = infotext(body, seed, size, extra)
        image = Image.new("RGB", image.size) if self.blank else image
        info = {"prompt": body.get("prompt") or "", "all_prompts": [body.get("prompt") or ""],
                "negative_prompt": body.get("negative_prompt") or "", "seed": seed, "all_seeds": [seed],
                "subseed": seed + 1, "all_subseeds": [seed + 1], "width": size[0], "height": size[1],
                "sampler_name": body.get("sampler_name"), "cfg_scale": body.get("cfg_scale") or 7.0,
                "steps": body.get("steps") or 50, "sd_model_name": MODEL_NAME, "sd_model_hash": MODEL_HASH,
                "denoising_strength": body.get("denoising_strength"), "infotexts": [text],
                "styles": [], "job_timestamp": "20250101000000", "version": VERSION}
        images = [encode_image(image, text)] if body.get("send_images", True) else []
        echo = {k: v for k, v in body.items() if k not in ("init_images", "mask")}
        return {"images": images, "parameters": echo, "info": json.dumps(info)}

    def _sd_upscale(self, body: dict[str, Any], image: Image.Image) -> tuple[Image.Image, dict[str, Any]]:
        if (body.get("script_name") or "").lower() != "sd upscale":
            raise ApiError(422, {"error": "HTTPException", "detail": f"Script '{body['script_name']}' not found",
                                 "body": "", "errors": f"422: Script '{body['script_name']}' not found"})
        args = body.get("script_args") or []
        if len(args) < 4:
            raise exception("IndexError", "list index out of range")
        overlap, upscaler, scale = args[1], args[2], float(args[3])
        if isinstance(upscaler, str):
            names = [n.lower() for n in self.upscalers]
            if upscaler.lower() not in names:
                raise exception("ValueError", f"'{upscaler.lower()}' is not in list")
            upscaler = names.index(upscaler.lower())
        if not isinstance(upscaler, int) or not 0 <= upscaler < len(self.upscalers):
            raise exception("IndexError", "list index out of range")
        name = self.upscalers[upscaler]
        out = image.convert("RGB") if name == "None" else self._upscale(image, scale)
        return out, {"SD upscale overlap": overlap, "SD upscale upscaler": name}

    def img2img(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("init_images"):
            raise http_exception(404, "Init image not found")
        self._sampler(body)
        seed = self._seed(body)
        size = (body.get("width") or 512, body.get("height") or 512)

        def work() -> dict[str, Any]:
            image = decode_image(body["init_images"][0])
            extra: dict[str, Any] = {"Denoising strength": body.get("denoising_strength", 0.75)}
            if body.get("script_name"):
                out, more = self._sd_upscale(body, image)
                extra.update(more)
            else:
                out = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
            return self._response(body, out, seed, size, extra)

        return self.run_job("scripts_img2img", body, work)

    def txt2img(self, body: dict[str, Any]) -> dict[str, Any]:
        self._sampler(body)
        seed = self._seed(body)
        w, h = body.get("width") or 512, body.get("height") or 512
        hr_upscaler = body.get("hr_upscaler") or "Latent"
        if body.get("enable_hr") and hr_upscaler not in LATENT_MODES and hr_upscaler not in self.upscalers:
            raise exception("Exception", f"could not find upscaler named {hr_upscaler}")

        def work() -> dict[str, Any]:
            image, extra = draw_from_seed(seed, w, h), self.lora_params(body.get("prompt") or "")
            if body.get("enable_hr"):
                scale = body.get("hr_scale") or 2.0
                tw, th = body.get("hr_resize_x") or int(w * scale), body.get("hr_resize_y") or int(h * scale)
                if self.round_to_8:
                    tw, th = tw // 8 * 8, th // 8 * 8
                image = image.resize((tw, th), Image.Resampling.LANCZOS)
                extra.update({"Denoising strength": body.get("denoising_strength", 0.7), "Hires upscale": scale,
                              "Hires upscaler": hr_upscaler})
            return self._response(body, image, seed, (w, h), extra)

        return self.run_job("scripts_txt2img", body, work)

    def interrogate(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("image") is None:
            raise http_exception(404, "Image not found")
        image = decode_image(body["image"]).convert("RGB")
        model = body.get("model") or "clip"
        if model not in ("clip", "deepdanbooru"):
            raise http_exception(404, "Model not found")
        if model not in self.interrogators:
            raise exception("AttributeError", "'NoneType' object has no attribute 'tag'")
        colour = _colour_word(image)

        def work() -> dict[str, Any]:
            if model == "clip":
                return {"caption": f"a {colour} abstract photograph with circles, highly detailed"}
            tags = ["no_humans", "abstract", "circle", f"{colour}_background"]
            if colour in ("grey", "black", "white"):
                tags += ["monochrome", "greyscale"]
            return {"caption": ", ".join(tags)}

        return self.run_job("interrogate", body, work)
