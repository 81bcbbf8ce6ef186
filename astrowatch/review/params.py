"""The one check of job parameters that come from outside the config: a redo (the sidecar a
reviewer edited, ``astrowatch review redo --set``, the review page, ``POST /api/jobs/{id}/redo``)
and a generation asked through the API.

Only the keys of :data:`EDITABLE` may be set, each within its bounds; everything else a backend
would read from its config section (URLs, credentials, model files, devices, timeouts) stays the
operator's.  A ``backend`` must be one :func:`enabled_backends` allows for the job's kind: the
kind's configured default (``auto``: the CPU one and those ``auto`` may pick), plus those whose
section the config fills in; the test backend ``fake`` only where the config selects it.
Everything is refused with an :class:`~astrowatch.core.errors.InputError` naming the key and
what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from astrowatch.core.errors import InputError
from astrowatch.core.jobs import ASTRO_BACKENDS, ENHANCE_BACKENDS, BackendName, JobKind

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config

MAX_TEXT = 2000  # a prompt
MAX_WORD = 100  # a sampler, scheduler or upscaler name
MAX_LORAS = 16
SEED_MAX = 2**32 - 1
OPENAI_SIZE = re.compile(r"([0-9]{2,4})x([0-9]{2,4})")  # ASCII digits only (\d would take "６４")
# 64 to 4096 in two to four digits (leading zeros allowed, as int() reads them): OPENAI_SIZE's bounds
_SIDE = r"(?:0{0,2}(?:6[4-9]|[7-9][0-9])|0?[1-9][0-9]{2}|[1-3][0-9]{3}|40[0-8][0-9]|409[0-6])"
OPENAI_SIZE_PATTERN = f"^{_SIDE}x{_SIDE}$"

Check = Callable[[str, Any, "Config", str], Any]
Schema = Callable[["Config", str], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    """One editable parameter: its check, and the same bounds as a JSON Schema (for the API's
    OpenAPI document: generated from this table, so schema and check cannot drift)."""
    check: Check
    schema: Schema


def _fixed(schema: dict[str, Any]) -> Schema:
    return lambda _config, _kind: schema


def _nullable(schema: dict[str, Any], optional: bool) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]} if optional else schema


def _fail(key: str, value: Any, allowed: str) -> InputError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return InputError(f"parameter {key!r}: {shown} is not allowed; {allowed}",
                      hint="editable parameters: " + ", ".join(sorted(EDITABLE)))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _number(lo: float, hi: float, *, integer: bool = False, multiple: int = 1, optional: bool = False) -> Rule:
    what = "a whole number" if integer else "a number"
    allowed = f"expected {what} from {_num(lo)} to {_num(hi)}" + (f", a multiple of {multiple}" if multiple > 1 else "") \
        + (" (or null for the default)" if optional else "")

    def check(key: str, value: Any, _config: Config, _kind: str) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(key, value, allowed)
        if integer and (isinstance(value, float) and not value.is_integer()):
            raise _fail(key, value, allowed)
        if not math.isfinite(value) or not lo <= value <= hi or (integer and int(value) % multiple):
            raise _fail(key, value, allowed)
        return int(value) if integer else value
    return Rule(check, _fixed(_nullable(_number_schema(lo, hi, integer, multiple), optional)))


def _number_schema(lo: float, hi: float, integer: bool, multiple: int = 1) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer" if integer else "number", "minimum": lo, "maximum": hi}
    if multiple > 1:
        schema["multipleOf"] = multiple
    return schema


def _text(limit: int, *, choices: tuple[str, ...] = (), optional: bool = False) -> Rule:
    allowed = ("one of " + ", ".join(choices)) if choices else f"expected text of at most {limit} characters"

    def check(key: str, value: Any, _config: Config, _kind: str) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or len(value) > limit or "\x00" in value or (choices and value not in choices):
            raise _fail(key, value, allowed)
        return value
    schema: dict[str, Any] = {"type": "string", "enum": list(choices)} if choices else \
        {"type": "string", "maxLength": limit, "pattern": "^[^\\x00]*$"}
    return Rule(check, _fixed(_nullable(schema, optional)))


def _flag(key: str, value: Any, _config: Config, _kind: str) -> Any:
    if not isinstance(value, bool):
        raise _fail(key, value, "expected true or false")
    return value


_SIZE_PIXELS = _number(8, 4096, integer=True)


def _size(key: str, value: Any, config: Config, kind: str) -> Any:
    """``fake.size`` (pixels, a number) or ``openai.size`` ("1024x1536", "auto")."""
    if isinstance(value, str):
        m = OPENAI_SIZE.fullmatch(value)
        if value == "auto" or (m and all(64 <= int(g) <= 4096 for g in m.groups())):
            return value
        raise _fail(key, value, "expected WIDTHxHEIGHT (64 to 4096 each, e.g. 1024x1536), auto, or a number")
    return _SIZE_PIXELS.check(key, value, config, kind)


_SIZE_SCHEMA = {"anyOf": [{"type": "string", "enum": ["auto"]}, {"type": "string", "pattern": OPENAI_SIZE_PATTERN},
                          _number_schema(8, 4096, True)]}
_SEED = _number(0, SEED_MAX, integer=True, optional=True)


def _styles(config: Config) -> list[str]:
    from astrowatch.fusion.data import merged_raw_styles

    return sorted(merged_raw_styles(config.astro.styles_file))


def _style(key: str, value: Any, config: Config, _kind: str) -> Any:
    styles = _styles(config)
    if not isinstance(value, str) or value not in styles:
        raise _fail(key, value, "known styles: " + ", ".join(styles))
    return value


def _loras(key: str, value: Any, _config: Config, _kind: str) -> Any:
    """The per-job LoRA list (its entries are checked by :mod:`astrowatch.backends.loras`)."""
    allowed = f"expected null or a list of at most {MAX_LORAS} objects like {{\"name\": \"...\", \"weight\": 0.8}}"
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_LORAS:
        raise _fail(key, value, allowed)
    for item in value:
        if not isinstance(item, dict) or len(item) > 8 or not all(
                isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool))) and
                (not isinstance(v, str) or len(v) <= 500) for k, v in item.items()):
            raise _fail(key, value, allowed)
    return value


def _backend(key: str, value: Any, config: Config, kind: str) -> Any:
    enabled = enabled_backends(config, kind)
    if not isinstance(value, str) or value not in enabled:
        raise _fail(key, value, f"backends this configuration enables for {kind} jobs: {', '.join(enabled)}")
    return value


def _fraction(optional: bool = False) -> Rule:
    return _number(0.0, 1.0, optional=optional)


_LORA_VALUE = {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 500}, {"type": "number"}, {"type": "boolean"}]}
_LORAS_SCHEMA = {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": MAX_LORAS, "items": {
    "type": "object", "maxProperties": 8, "additionalProperties": _LORA_VALUE}}]}


def _backends_schema(config: Config, kind: str) -> dict[str, Any]:
    """``kind`` ``""``: any job's (the API's redo body, where the job's kind is not known yet)."""
    kinds = [kind] if kind else [JobKind.ASTRO, JobKind.ENHANCE]
    names = [b for k in kinds for b in enabled_backends(config, k)]
    return {"type": "string", "enum": list(dict.fromkeys(names))}


EDITABLE: dict[str, Rule] = {
    "backend": Rule(_backend, _backends_schema),
    "seed": _SEED,
    "variants": _number(1, 8, integer=True),
    "ip_adapter_scale": _number(0.0, 2.0),
    "style": Rule(_style, lambda config, _kind: {"type": "string", "enum": _styles(config)}),
    "language": _text(2, choices=("fr", "en")),
    "steps": _number(1, 150, integer=True),
    "cfg_scale": _number(0.0, 30.0),
    "width": _number(64, 4096, integer=True, multiple=8),
    "height": _number(64, 4096, integer=True, multiple=8),
    "size": Rule(_size, _fixed(_SIZE_SCHEMA)),
    "wheel_size": _number(256, 4096, integer=True),
    "quality": _text(MAX_WORD, choices=("auto", "low", "medium", "high", "standard", "hd")),
    "scheduler": _text(MAX_WORD),
    "sampler_name": _text(MAX_WORD),
    "refiner_switch": _number(0.01, 0.99),
    "upscale": _text(4, choices=("none", "2"), optional=True),
    "init_strength": _number(0.01, 1.0, optional=True),
    "upscale_strength": _fraction(optional=True),
    "enhance_strength": _fraction(),
    "strength": _fraction(),
    "denoising_strength": _fraction(),
    "scale_factor": _number(1.0, 8.0),
    "upscaler": _text(MAX_WORD),
    "prompt": _text(MAX_TEXT),
    "negative_prompt": _text(MAX_TEXT),
    "hires_fix": Rule(_flag, _fixed({"type": "boolean"})),
    "hr_scale": _number(1.0, 4.0),
    "hr_upscaler": _text(MAX_WORD),
    "hr_second_pass_steps": _number(0, 150, integer=True),
    "hr_denoising_strength": _fraction(),
    "tile_size": _number(64, 2048, integer=True),
    "tile_overlap": _number(0, 512, integer=True),
    "unsharp_percent": _number(0, 500, integer=True),
    "loras": Rule(_loras, _fixed(_LORAS_SCHEMA)),
    # the caption step (caption: section): another captioner or thresholds re-caption without upscaling
    "captioner": _text(MAX_WORD, choices=("auto", "none", "blip", "florence2", "sdapi", "openai")),
    "captioner_prompt": _text(MAX_TEXT, optional=True),
    "tagger": _text(MAX_WORD, choices=("none", "wd14")),
    "general_threshold": _fraction(),
    "character_threshold": _fraction(),
    "max_tags": _number(0, 500, integer=True),
}


def _section_set(config: Config, name: str) -> bool:
    """True when the config file fills in section ``name`` (not only its defaults)."""
    return bool(getattr(config, name).model_fields_set)


def enabled_backends(config: Config, kind: str) -> list[str]:
    """The backends a redo or an API call may name for ``kind`` jobs (see the module doc)."""
    known = ASTRO_BACKENDS if kind == JobKind.ASTRO else ENHANCE_BACKENDS
    default = str(getattr(config, kind).backend)
    cpu = BackendName.WHEEL if kind == JobKind.ASTRO else BackendName.LANCZOS
    enabled = {default, cpu.value}
    auto = default == BackendName.AUTO
    if config.sdxl.model:
        enabled.add(BackendName.SDXL.value)
    if auto or _section_set(config, "sdapi"):
        enabled.add(BackendName.SDAPI.value)
    if kind == JobKind.ASTRO and (config.openai.api_key_file is not None or _section_set(config, "openai")):
        enabled.add(BackendName.OPENAI.value)
    return [b.value for b in known if b != BackendName.AUTO and b.value in enabled]


def check_params(config: Config, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` checked key by key (see the module doc); the checked copy, or :class:`InputError`."""
    if not isinstance(params, dict):
        raise InputError("parameters must be a JSON object, e.g. {\"steps\": 40}")
    checked: dict[str, Any] = {}
    for key, value in params.items():
        rule = EDITABLE.get(key) if isinstance(key, str) else None
        if rule is None:
            shown = repr(key) if len(repr(key)) <= 60 else repr(key)[:57] + "..."
            raise InputError(f"parameter {shown} cannot be set by a redo or a request",
                             hint="editable parameters: " + ", ".join(sorted(EDITABLE)))
        checked[key] = rule.check(key, value, config, kind)
    return checked


def params_schema(config: Config, kind: str = "") -> dict[str, dict[str, Any]]:
    """Each editable parameter's JSON Schema under ``config`` (``kind`` ``""``: any job's)."""
    return {key: rule.schema(config, kind) for key, rule in EDITABLE.items()}
