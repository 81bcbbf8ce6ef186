"""Typed, validated configuration.

``config.yaml`` is parsed into :class:`Config`.  Every section forbids unknown keys, so a typo
is an error that names the key (``watch.stabilty_seconds: extra inputs are not permitted``).
Relative paths are resolved against the folder that holds the config file.

Only this module imports pydantic; the CLI imports it lazily so ``astrowatch --help`` stays fast.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from astrowatch.core.errors import ConfigError
from astrowatch.core.jobs import ASTRO_BACKENDS, ENHANCE_BACKENDS, EventType, JobKind

CONFIG_ENV = "ASTROWATCH_CONFIG"
DEFAULT_CONFIG_NAME = "config.yaml"

# the backend names a config may choose (plain strings: the Literal types accept and report them as such)
_ASTRO_NAMES = tuple(b.value for b in ASTRO_BACKENDS)
_ENHANCE_NAMES = tuple(b.value for b in ENHANCE_BACKENDS)
LORA_NAME = re.compile(r"[\w.\- {}]+")  # no ':' ',' '<' '>': they would break <lora:name:weight>
SCHEDULERS = ("dpmpp_2m_karras", "euler_a", "euler", "dpmpp_2m_sde_karras", "ddim")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WatchConfig(Section):
    stability_seconds: float = Field(2.0, ge=0.0, le=3600)
    polling: bool = False
    polling_interval: float = Field(2.0, gt=0.0, le=3600)
    rescan_seconds: float = Field(300.0, ge=0.0)  # 0 disables the periodic rescan


class AstroConfig(Section):
    backend: Literal[_ASTRO_NAMES] = "auto"  # type: ignore[valid-type]
    language: Literal["fr", "en"] = "fr"
    style: str = "figuratif"
    styles_file: Path | None = None
    init_image: Literal["none", "wheel"] = "wheel"
    wheel_size: int = Field(1024, ge=256, le=8192)
    variants: int = Field(1, ge=1, le=8)  # images per chart, one job: the reviewer picks one


class EnhanceConfig(Section):
    backend: Literal[_ENHANCE_NAMES] = "auto"  # type: ignore[valid-type]
    scale_factor: float = Field(2.0, ge=1.0, le=8.0)
    upscaler: str = "R-ESRGAN 4x+"
    denoising_strength: float = Field(0.0, ge=0.0, le=1.0)
    prompt: str = "high quality, high resolution, detailed"
    negative_prompt: str = "blurry, lowres, low quality, artifacts, jpeg artifacts"
    steps: int = Field(20, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0.0, le=30.0)
    sampler_name: str = "Euler a"
    format: Literal["png", "webp", "jpeg"] = "png"  # results and dataset files (webp lossless, jpeg q95)
    max_output_side: int = Field(4096, ge=0)  # the scale factor is lowered to stay within it; 0 = no limit
    caption_model: Literal["clip", "deepdanbooru", "none"] = "clip"  # old key of caption.captioner_model (sdapi)
    tile_size: int = Field(512, ge=64, le=2048)
    tile_overlap: int = Field(64, ge=0, le=512)
    min_side: int = Field(256, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    background: str = "#ffffff"
    unsharp_percent: int = Field(60, ge=0, le=500)

    @model_validator(mode="before")
    @classmethod
    def _output_format_alias(cls, data: Any) -> Any:
        """``output_format: PNG`` (the old key) still works; ``jpg``/``JPEG`` mean ``jpeg``."""
        if isinstance(data, dict):
            data = dict(data)
            if "output_format" in data and "format" not in data:
                data["format"] = data.pop("output_format")
            if isinstance(data.get("format"), str):
                data["format"] = {"jpg": "jpeg"}.get(data["format"].lower(), data["format"].lower())
        return data


CAPTIONERS = ("auto", "none", "blip", "florence2", "sdapi", "openai")
FLORENCE_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")
SDAPI_INTERROGATORS = ("clip", "deepdanbooru")


def _device_name(v: str) -> str:
    if v not in ("auto", "cpu", "cuda") and not (v.startswith("cuda:") and v[5:].isdigit()):
        raise ValueError(f"{v!r} is not a device (use auto, cpu, cuda or cuda:N)")
    return v


class CaptionConfig(Section):
    """Training captions of enhance results: line 1 of ``<stem>.txt`` = trigger word, the
    captioner's sentence, then the tagger's tags (see docs/captions.md)."""

    captioner: Literal[CAPTIONERS] = "auto"  # type: ignore[valid-type]  # auto: sdapi when enhance runs on the WebUI, else none
    captioner_model: str | None = None  # blip/florence2: a save_pretrained folder; sdapi: clip|deepdanbooru; openai: a model
    captioner_prompt: str | None = Field(None, max_length=2000)  # BLIP text prefix, Florence-2 task, or the chat instruction
    max_new_tokens: int = Field(48, ge=4, le=512)  # longest caption the local models generate (tokens)
    tagger: Literal["none", "wd14"] = "none"  # wd14: a SmilingWolf WD14 tagger (ONNX) run with onnxruntime
    tagger_model: Path | None = None  # folder holding model.onnx and selected_tags.csv (relative to the config)
    general_threshold: float = Field(0.35, ge=0.0, le=1.0)  # WD14 general tags (category 0) at or above this score
    character_threshold: float = Field(0.85, ge=0.0, le=1.0)  # WD14 character tags (category 4) at or above this score
    undesired_tags: list[str] = Field(default_factory=list)  # tags never written (either spelling: long_hair or long hair)
    max_tags: int = Field(40, ge=0, le=500)  # most tags on line 1 (highest scores kept); 0 = no limit
    keep_underscores: bool = False  # false: "long hair" (kohya --remove_underscore); kaomoji such as ^_^ are kept
    device: str = "auto"  # blip/florence2/wd14: auto (a GPU when present, else the CPU), cpu, cuda or cuda:N

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return _device_name(v)

    @model_validator(mode="after")
    def _models_named(self) -> CaptionConfig:
        if self.captioner in ("blip", "florence2") and not self.captioner_model:
            raise ValueError(f"captioner_model: captioner {self.captioner} needs a local model folder "
                             "(a transformers save_pretrained folder)")
        if self.captioner == "sdapi" and self.captioner_model not in (None, *SDAPI_INTERROGATORS):
            raise ValueError(f"captioner_model: {self.captioner_model!r} is not a WebUI interrogator "
                             f"(use {' or '.join(SDAPI_INTERROGATORS)})")
        if self.captioner == "florence2" and self.captioner_prompt not in (None, *FLORENCE_TASKS):
            raise ValueError(f"captioner_prompt: {self.captioner_prompt!r} is not a Florence-2 caption task "
                             f"(use one of {', '.join(FLORENCE_TASKS)})")
        if self.tagger == "wd14" and self.tagger_model is None:
            raise ValueError("tagger_model: tagger wd14 needs a folder holding model.onnx and selected_tags.csv")
        return self


class RetriesConfig(Section):
    max_attempts: int = Field(3, ge=1, le=100)
    backoff_seconds: float = Field(5.0, ge=0.0)
    backoff_max_seconds: float = Field(300.0, ge=0.0)


class LimitsConfig(Section):
    max_json_bytes: int = Field(2_000_000, ge=1)
    max_json_depth: int = Field(64, ge=2)
    max_image_bytes: int = Field(100_000_000, ge=1)
    max_image_pixels: int = Field(50_000_000, ge=1)
    min_free_mb: int = Field(500, ge=0)  # no job starts with less free under data_dir; 0 = no guard
    # A job running longer is stopped, then retried (the attempt counts) or failed with that reason.
    # 1800 s: above the slowest single backend call (sdapi.read_timeout 600 s, openai.timeout 300 s,
    # an SDXL image with refiner and upscale on a CPU), so a healthy job is never cut; below
    # celery.visibility_timeout (3600 s), so Redis never redelivers a task its job still waits for
    # (a config with executor: celery and job_timeout_seconds >= visibility_timeout is refused).
    job_timeout_seconds: float = Field(1800.0, gt=0)
    decode_memory_mb: int = Field(2048, ge=256)  # address-space limit of the child process that decodes a photo
    decode_timeout_seconds: float = Field(120.0, gt=0)  # the decoding child is killed after this long


def input_bound(kind: str) -> int:
    """The size bound of a job's input when the caller has no config at hand: the default of
    ``limits.max_json_bytes`` (theme) or ``limits.max_image_bytes`` (photo).  Callers that have the
    config pass its limit as ``max_bytes``."""
    field = "max_json_bytes" if kind == JobKind.ASTRO else "max_image_bytes"
    bound: int = LimitsConfig.model_fields[field].default
    return bound


class FakeConfig(Section):
    """Fault injection for the ``fake`` backend (tests, benchmarks, rehearsals)."""

    delay_seconds: float = Field(0.0, ge=0.0)
    fail_times: int = Field(0, ge=0)  # fail the first N attempts of every job (retryable)
    hang_seconds: float = Field(0.0, ge=0.0)  # sleep (interruptibly) before producing
    raise_error: Literal["none", "input", "backend", "permanent", "unavailable"] = "none"
    size: int = Field(64, ge=8, le=4096)


def _lora_name(v: str | None) -> str | None:
    if v is not None and not LORA_NAME.fullmatch(v):
        raise ValueError(f"{v!r}: use letters, digits, '{{user}}', '_', '-', '.' and spaces only")
    return v


class LoraEntry(Section):
    """One LoRA adapter (``sdxl.loras``): a local ``.safetensors``; ``{user}`` in ``path`` makes
    it per user (relative paths are under ``data_dir``); applied only when the file exists."""

    path: str
    weight: float = Field(1.0, ge=-10.0, le=10.0)
    name: str | None = None  # default: the file's stem (after {user} is filled in)
    refiner: bool = False  # also on the refiner's UNet (base only by default)
    trigger: str = ""  # words put first in the prompt when applied ({user} allowed)

    @field_validator("path")
    @classmethod
    def _safetensors_only(cls, v: str) -> str:
        if not v.lower().endswith(".safetensors"):
            raise ValueError(f"{v!r} is not a .safetensors file (pickle LoRAs are never loaded; convert it)")
        return v

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        return _lora_name(v)


class SdapiLoraEntry(Section):
    """One LoRA of the WebUI (``sdapi.loras``), sent as ``<lora:name:weight>`` in the prompt."""

    name: str  # as listed by /sdapi/v1/loras; {user} makes it per user (skipped if the WebUI lacks it)
    weight: float = Field(1.0, ge=-10.0, le=10.0)
    trigger: str = ""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        _lora_name(v)
        return v


class IpAdapterConfig(Section):
    """``sdxl.ip_adapter``: the moodboard as a style reference (a folder laid out like h94/IP-Adapter)."""

    model: Path | None = None  # the folder holding sdxl_models/ (relative to the config); unset = no adapter
    subfolder: str = "sdxl_models"  # where the weights lie inside the folder
    weight_name: str = "ip-adapter_sdxl.safetensors"  # the weights file (.safetensors only)
    image_encoder: str = "image_encoder"  # inside subfolder; with a "/": from the folder's root
    scale: float = Field(0.6, ge=0.0, le=2.0)  # how strongly the reference steers; 0 = not at all
    fallback: Literal["none", "last_portrait"] = "none"  # reference when there is no moodboard

    @field_validator("weight_name")
    @classmethod
    def _safetensors(cls, v: str) -> str:
        if not v.endswith(".safetensors") or "/" in v:
            raise ValueError(f"{v!r}: a .safetensors file name (pickles are never loaded)")
        return v


class SdxlConfig(Section):
    model: str | None = None
    refiner: str | None = None
    vae: str | None = None
    config_dir: Path | None = None  # diffusers-format config folder for single-file checkpoints
    device: str = "cuda"
    devices: list[str] | None = None
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    scheduler: Literal[SCHEDULERS] = "dpmpp_2m_karras"  # type: ignore[valid-type]
    steps: int = Field(30, ge=1, le=500)
    cfg_scale: float = Field(7.0, ge=0.0, le=50.0)
    width: int = 1024
    height: int = 1024
    refiner_switch: float = Field(0.8, gt=0.0, lt=1.0)
    upscale: Literal["none", "2"] | None = "none"
    enhance_strength: float = Field(0.25, ge=0.0, le=1.0)
    init_strength: float | None = Field(None, gt=0.0, le=1.0)  # img2img from moodboard/wheel; None = txt2img
    cpu_offload: bool = False
    compile: bool = False
    loras: list[LoraEntry] = Field(default_factory=list)
    ip_adapter: IpAdapterConfig = Field(default_factory=IpAdapterConfig)  # moodboard as style reference

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v < 64 or v > 4096 or v % 8:
            raise ValueError(f"{v} is not a possible image size (a multiple of 8 in 64..4096)")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("cpu", "cuda") and not (v.startswith("cuda:") and v[5:].isdigit()):
            raise ValueError(f"{v!r} is not a device (use cpu, cuda or cuda:N)")
        return v


def _no_credentials_in_url(v: str, key_file: str) -> str:
    from urllib.parse import urlsplit

    if urlsplit(v).password is not None:
        raise ValueError(f"put the credentials in {key_file}, not in the URL: the service's group reads "
                         "the config")
    return v


class SdapiConfig(Section):
    url: str = "http://127.0.0.1:7860"
    auth_file: Path | None = None  # holds "user:pass" (the WebUI's --api-auth); relative to the config
    auth: None = Field(None, exclude=True)  # the old inline "user:pass": refused, naming auth_file
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(600.0, gt=0)
    max_retries: int = Field(4, ge=0)
    retry_backoff: float = Field(1.0, ge=0)  # first in-request retry wait (exponential, jittered)
    retry_backoff_max: float = Field(30.0, ge=0)
    poll_interval: float = Field(1.0, gt=0)  # /progress polling after a lost response
    health_interval: float = Field(10.0, gt=0)
    hires_fix: bool = False
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Karras"
    steps: int = Field(30, ge=1)
    cfg_scale: float = 7.0
    width: int = 1024
    height: int = 1024
    loras: list[SdapiLoraEntry] = Field(default_factory=list)

    @field_validator("auth", mode="before")
    @classmethod
    def _no_inline_auth(cls, v: Any) -> None:
        """The config holds no secret: the old inline ``auth: "user:pass"`` is refused."""
        if v is not None:
            raise ValueError("the WebUI's user:pass no longer lives in the config (the service's group "
                             "reads it): write it to a file only the service reads (chmod 600) and set "
                             "sdapi.auth_file to that file")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _no_credentials_in_url(v, "sdapi.auth_file")


class OpenAIConfig(Section):
    model: str = "gpt-image-1"
    size: str = "1024x1024"
    quality: str = "auto"
    base_url: str = "https://api.openai.com/v1"
    api_key_file: Path | None = None
    timeout: float = Field(300.0, gt=0)
    max_retries: int = Field(4, ge=0)
    retry_backoff: float = Field(1.0, ge=0)  # first wait before a retry (exponential, jittered)
    retry_backoff_max: float = Field(60.0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _no_credentials_in_url(v, "openai.api_key_file")


class DatasetConfig(Section):
    trigger_word: str = ""
    class_tokens: str = ""
    repeats: int = Field(10, ge=1)
    resolution: int = Field(1024, ge=64)


class FeedbackConfig(Section):
    learn: bool = False
    explore: float = Field(0.1, ge=0.0, le=1.0)
    min_decisions: int = Field(5, ge=1)
    candidates: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("candidates")
    @classmethod
    def _tunable(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        from astrowatch.core.tunables import check_candidates

        return check_candidates(v)


class RetentionConfig(Section):
    """Bounded growth, applied by the daemon when idle.  Never touches datasets/, delivered
    images, the inbox, failed/ or anything of a job that is not finished."""

    archive_days: float = Field(0.0, ge=0.0)  # archive/<user>/<job>/ of finished jobs; 0 = keep forever
    cache_max_mb: float = Field(2048.0, ge=0.0)  # state/cache/, least recently used first; 0 = no limit
    log_max_mb: float = Field(100.0, ge=0.0)  # rotate logs/*.jsonl above this size; 0 = never
    log_keep: int = Field(5, ge=1, le=1000)  # rotated files kept per log (.1 newest)
    check_seconds: float = Field(600.0, gt=0.0)  # how often the daemon applies it (when idle)


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class ApiConfig(Section):
    """``astrowatch api``: the upstream app's HTTP API (extra ``api``).  The token comes from
    ``$ASTROWATCH_API_TOKEN``, else the systemd credential ``api_token``, else ``token_file``."""

    host: str = "127.0.0.1"
    port: int = Field(8600, ge=1, le=65535)
    token_file: Path | None = None  # relative to the config file
    heartbeat_max_age: float = Field(30.0, gt=0.0)  # /healthz: the daemon's state file must be this fresh
    max_pending_per_user: int = Field(3, ge=1, le=1000)  # queued generation requests per user; more get 429
    max_pending_uploads_per_user: int = Field(100, ge=1, le=100_000)  # uploaded files per user not yet taken; more get 429
    metrics_per_user: bool = False  # /metrics: one inbox series per user (their names), for a scrape with the token


class WebhookConfig(Section):
    """One receiver of the events, signed as Standard Webhooks v1 (see "Integrating an app")."""

    url: str  # http:// or https:// URL the events are POSTed to; redirects are never followed
    secret_file: Path  # its whsec_ secret, one a line (two during a rotation: each signs); chmod 600; relative to the config
    events: list[EventType] | None = None  # the event types it gets (job.inbox, input.skipped...); default: all
    allow_link_local: bool = False  # allow a link-local or cloud-metadata target (169.254.0.0/16, fe80::/10, fd00:ec2::254)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r}: a webhook URL is http://host/... or https://host/...")
        if parts.username or parts.password:
            raise ValueError("no credentials in a webhook URL: the signature authenticates the sender")
        return v


class EventsConfig(Section):
    """The events the upstream app is told (webhooks and ``GET /api/events``), kept in the ledger."""

    retry_schedule: list[float] = Field(  # seconds before each webhook attempt; after the last, the message is failed
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0], min_length=1, max_length=50)
    timeout_seconds: float = Field(5.0, gt=0.0, le=60.0)  # one webhook request's time limit
    retention_days: float = Field(7.0, gt=0.0)  # events and delivered or failed messages are kept this long
    keepalive_seconds: float = Field(15.0, gt=0.0, le=300.0)  # GET /api/events: a comment line at least this often

    @field_validator("retry_schedule")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        if any(d < 0 for d in v):
            raise ValueError("retry delays are seconds, 0 or more")
        return v


class CeleryConfig(Section):
    """``executor: celery``: model work runs on ``astrowatch worker`` processes (GPU hosts) via Redis."""

    broker_url: str = "redis://127.0.0.1:6379/0"  # redis:// or rediss:// (TLS); a password in it is redacted
    username: str | None = None  # Redis ACL user
    password_file: Path | None = None  # else $CREDENTIALS_DIRECTORY/redis_password, else none (recommended)
    result_backend: str | None = None  # default: the broker
    queue: str = "astrowatch"
    visibility_timeout: float = Field(3600.0, gt=0)  # must exceed the slowest job
    inline_max_mb: float = Field(50.0, gt=0)  # bigger inputs need shared_data_dir
    shared_data_dir: bool = False  # workers mount the same data folder: inputs travel as paths
    max_in_flight: int = Field(16, ge=1, le=1024)  # jobs dispatched at once (>= number of GPUs)
    poll_interval: float = Field(0.2, gt=0, le=10)  # result polling by the coordinator

    @field_validator("broker_url", "result_backend")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        """``redis://`` or ``rediss://``; a password as Celery users write it (``redis://:pw@host``,
        ``redis://user:pw@host``, ``?password=pw``) is accepted and redacted from then on."""
        from urllib.parse import urlsplit

        from astrowatch.core.secrets import redact_url, remember_url_password

        if v is None:
            return v
        remember_url_password(v)  # first: no message below may show it
        try:
            parts = urlsplit(v)
            _ = parts.port  # raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError(f"{redact_url(v)!r} is not a valid URL") from None
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"{parts.scheme + '://' if parts.scheme else redact_url(v)!r}: only redis:// and "
                             "rediss:// URLs are supported")
        return v

    @model_validator(mode="after")
    def _one_password(self) -> CeleryConfig:
        from astrowatch.core.secrets import url_credentials

        in_urls = [k for k in ("broker_url", "result_backend")
                   if getattr(self, k) and url_credentials(getattr(self, k))[1] is not None]
        if in_urls and self.password_file is not None:
            raise ValueError(f"the Redis password is in celery.{in_urls[0]} and in celery.password_file: "
                             "keep one (password_file is recommended: the config is readable by the group)")
        return self

    def has_url_password(self) -> bool:
        """True when ``broker_url`` or ``result_backend`` holds a password (doctor warns)."""
        from astrowatch.core.secrets import url_credentials

        return any(url and url_credentials(url)[1] is not None for url in (self.broker_url, self.result_backend))


class C2paConfig(Section):
    """A C2PA manifest signed with the operator's certificate on every marked image (extra ``provenance``);
    off while ``cert_file`` is unset."""

    cert_file: Path | None = None  # PEM chain, leaf (signing) certificate first; relative to the config file
    key_file: Path | None = None  # PEM private key of the leaf certificate (0600, the service user's)
    alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"  # signing algorithm of the key
    tsa_url: str | None = None  # RFC 3161 timestamp authority URL (optional; reached at every signature)

    @field_validator("tsa_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"https?://[^\s]+$", v):
            raise ValueError("tsa_url must be an http:// or https:// URL")
        return v


class ProvenanceConfig(Section):
    """How generated images say they are generated: IPTC digital source type in XMP, and C2PA."""

    mark: bool = True  # write Iptc4xmpExt:DigitalSourceType into every image a generative model made or changed
    c2pa: C2paConfig = Field(default_factory=C2paConfig)  # the signed C2PA manifest: see provenance.c2pa below


class ForgetConfig(Section):
    """``astrowatch forget``: erasing a person's data."""

    reader_wait_seconds: float = Field(30.0, ge=0.0, le=3600)  # wait for the ledger's readers before truncating the WAL
    running_wait_seconds: float = Field(120.0, ge=0.0, le=86400)  # wait for a cancelled running job to stop


class Config(Section):
    data_dir: Path = Path("data")
    watch: WatchConfig = Field(default_factory=WatchConfig)
    astro: AstroConfig = Field(default_factory=AstroConfig)
    enhance: EnhanceConfig = Field(default_factory=EnhanceConfig)
    retries: RetriesConfig = Field(default_factory=RetriesConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    fake: FakeConfig = Field(default_factory=FakeConfig)
    sdxl: SdxlConfig = Field(default_factory=SdxlConfig)
    sdapi: SdapiConfig = Field(default_factory=SdapiConfig)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    caption: CaptionConfig = Field(default_factory=CaptionConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    executor: Literal["local", "celery"] = "local"
    celery: CeleryConfig = Field(default_factory=CeleryConfig)
    provenance: ProvenanceConfig = Field(default_factory=ProvenanceConfig)
    forget: ForgetConfig = Field(default_factory=ForgetConfig)
    webhooks: list[WebhookConfig] = Field(default_factory=list)  # receivers of the events (Standard Webhooks)
    events: EventsConfig = Field(default_factory=EventsConfig)

    # Not a config key: where the file was read from (set by load_config).
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _overlap_smaller_than_tile(self) -> Config:
        if self.enhance.tile_overlap >= self.enhance.tile_size:
            raise ValueError("enhance.tile_overlap must be smaller than enhance.tile_size")
        urls = [w.url for w in self.webhooks]
        if len(set(urls)) != len(urls):
            raise ValueError("webhooks: the same url twice (one entry per receiver)")
        return self

    @model_validator(mode="after")
    def _job_timeout_below_visibility(self) -> Config:
        if self.executor == "celery" and self.limits.job_timeout_seconds >= self.celery.visibility_timeout:
            raise ValueError(
                f"limits.job_timeout_seconds ({self.limits.job_timeout_seconds:g}) must be smaller than "
                f"celery.visibility_timeout ({self.celery.visibility_timeout:g}): a job still running "
                "when the broker's visibility timeout expires is delivered a second time")
        return self


Check = Callable[[Config, str], None]  # a cross-check run after validation: (config, origin)


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see config.yaml in the repository)"
        lines.append(f"{loc}: {msg}")
    return f"{origin}: " + "; ".join(lines)


def config_from_mapping(data: Any, *, base_dir: Path, origin: str = "config", check: Check | None = None) -> Config:
    """Validate a mapping (from YAML or tests); resolve relative paths against ``base_dir``; then
    ``check(cfg, origin)``, the cross-checks of the layers above (the style names, see
    :mod:`astrowatch.runtime.settings`)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of keys, not {type(data).__name__}")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin)) from None
    base_dir = base_dir.resolve()
    cfg.data_dir = (base_dir / cfg.data_dir).resolve()
    if cfg.astro.styles_file is not None:
        cfg.astro.styles_file = (base_dir / cfg.astro.styles_file).resolve()
    if cfg.openai.api_key_file is not None:
        cfg.openai.api_key_file = (base_dir / cfg.openai.api_key_file).resolve()
    if cfg.celery.password_file is not None:
        cfg.celery.password_file = (base_dir / cfg.celery.password_file).resolve()
    if cfg.sdapi.auth_file is not None:
        cfg.sdapi.auth_file = (base_dir / cfg.sdapi.auth_file).resolve()
    for key in ("cert_file", "key_file"):
        value = getattr(cfg.provenance.c2pa, key)
        if value is not None:
            setattr(cfg.provenance.c2pa, key, (base_dir / value).resolve())
    for hook in cfg.webhooks:
        hook.secret_file = (base_dir / hook.secret_file).resolve()
    if cfg.caption.tagger_model is not None:
        cfg.caption.tagger_model = (base_dir / cfg.caption.tagger_model).resolve()
    if cfg.caption.captioner in ("blip", "florence2") and cfg.caption.captioner_model:
        cfg.caption.captioner_model = str((base_dir / cfg.caption.captioner_model).resolve())
    if cfg.sdxl.config_dir is not None:
        cfg.sdxl.config_dir = (base_dir / cfg.sdxl.config_dir).resolve()
    if cfg.sdxl.ip_adapter.model is not None:
        cfg.sdxl.ip_adapter.model = (base_dir / cfg.sdxl.ip_adapter.model).resolve()
    for key in ("model", "refiner", "vae"):
        value = getattr(cfg.sdxl, key)
        if value and (value.startswith(".") or value.startswith("/")):
            setattr(cfg.sdxl, key, str((base_dir / value).resolve()))
    if check is not None:
        check(cfg, origin)
    return cfg


def find_config(explicit: str | os.PathLike[str] | None) -> Path:
    """``--config`` wins, then ``$ASTROWATCH_CONFIG``, then ``./config.yaml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return Path(DEFAULT_CONFIG_NAME)


def load_config(path: str | os.PathLike[str] | None = None, *, check: Check | None = None) -> Config:
    """Read, parse and validate the config file. Raises :class:`ConfigError` with the file name."""
    p = find_config(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: config file not found",
            hint=f"pass --config or set {CONFIG_ENV} (system-wide: /etc/profile.d/astrowatch.sh), "
                 "or run 'astrowatch init'") from None
    except PermissionError:
        raise ConfigError(f"{p}: cannot read config: permission denied",
                          hint="the config is readable by the service's group: check 'id' lists it "
                               "(log in again after 'usermod -aG')") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    cfg = config_from_mapping(data, base_dir=p.resolve().parent, origin=str(p), check=check)
    cfg.source = p.resolve()
    return cfg


SET_EXAMPLE = "e.g. --set sdxl.steps=20 or --set astro.style=cosmique"


def parse_set(pair: str) -> tuple[list[str], Any]:
    """``"sdxl.steps=20"`` -> ``(["sdxl", "steps"], 20)``: the one ``--set`` spelling of every
    command (a config key path; the value parsed as a YAML scalar)."""
    key, sep, raw = pair.partition("=")
    parts = [p.strip() for p in key.split(".")]
    if not sep or not all(parts):
        raise ConfigError(f"--set {pair!r}: expected SECTION.KEY=VALUE, {SET_EXAMPLE}")
    try:
        return parts, yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {pair!r}: the value is not valid YAML: {exc}") from None


def unknown_set_key(key: str, valid: list[str]) -> ConfigError:
    return ConfigError(f"--set {key}: unknown key; valid keys: {', '.join(valid)}")


def settable_keys(data: dict[str, Any], sections: tuple[str, ...] | None = None) -> list[str]:
    """The ``section.key`` paths (and top-level keys) of a config mapping, optionally of some sections."""
    return [f"{name}.{key}" if isinstance(value, dict) else name
            for name, value in data.items() if sections is None or name in sections
            for key in (value if isinstance(value, dict) else [None])]


def apply_overrides(cfg: Config, pairs: list[str], *, check: Check | None = None) -> Config:
    """Apply ``--set section.key=value`` overrides; an unknown key is refused with the valid ones."""
    data = cfg.model_dump(mode="json", exclude={"source"})
    for pair in pairs:
        parts, value = parse_set(pair)
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise unknown_set_key(".".join(parts), settable_keys(data))
            node = node[part]
        if parts[-1] not in node:
            raise unknown_set_key(".".join(parts), settable_keys(data))
        node[parts[-1]] = value
    base = cfg.source.parent if cfg.source else Path.cwd()
    new = config_from_mapping(data, base_dir=base, origin="--set", check=check)
    new.source = cfg.source
    return new
