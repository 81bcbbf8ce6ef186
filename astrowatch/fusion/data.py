"""The YAML data behind prompt fusion: correspondences and style presets.

Both files ship in the package (``astrowatch/data/correspondences.yaml`` and ``styles.yaml``).
``astro.styles_file`` names an operator's YAML file whose styles are merged over the shipped
ones: a style with a known name overrides only the keys it gives; a new name starts from the
style named by its ``extends`` key (default ``figuratif``).  The file may hold the styles at the
top level or under a ``styles:`` key.  Unknown keys and wrong types are :class:`ConfigError`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

import yaml

from astrowatch.core.errors import ConfigError

DEFAULT_STYLE = "figuratif"
DEFAULT_BUDGET = 75  # content tokens per CLIP encoder: 77 minus the start and end tokens
DEFAULT_MAX_ASPECTS = 3
CENTRAL_KINDS = ("figure", "emblem", "constellation")
WEIGHT_SLOTS = ("figure", "mood", "setting", "palette", "materials", "composition", "aspects",
                "colours", "detail", "retrograde")
STYLE_KEYS = ("extends", "label", "about", "central", "prefix", "suffix", "quality", "negative",
              "weights", "budget", "max_aspects")


@dataclass(frozen=True)
class Fragment:
    """One image idea: English prompt text (and a shorter form), French and English wording."""

    prompt: str
    fr: str
    en: str
    short: str | None = None

    def text(self, language: str) -> str:
        return self.fr if language == "fr" else self.en


@dataclass(frozen=True)
class Style:
    name: str
    label: Mapping[str, str]
    about: Mapping[str, str]
    central: str
    prefix: str
    suffix: str
    quality: tuple[str, ...]
    negative: tuple[str, ...]
    weights: Mapping[str, float] = field(default_factory=dict)
    budget: int = DEFAULT_BUDGET
    max_aspects: int = DEFAULT_MAX_ASPECTS


def fragment(raw: Any, *, fill: Mapping[str, Fragment] | None = None) -> Fragment:
    """A :class:`Fragment` from its YAML mapping; ``fill`` formats ``{a}``/``{b}`` templates."""
    fill = fill or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"correspondences: expected a mapping with prompt/fr/en, got {raw!r}")
    try:
        prompt, fr, en = (str(raw[k]).format_map(_Fill(fill, k)) for k in ("prompt", "fr", "en"))
    except KeyError as exc:
        raise ConfigError(f"correspondences: fragment {raw!r} lacks {exc}") from None
    short = raw.get("short")
    return Fragment(prompt=prompt, fr=fr, en=en, short=str(short) if short else None)


class _Fill(dict[str, Any]):
    """format_map helper: ``{a}`` takes the value for the fragment's language (prompt/fr/en)."""

    def __init__(self, fragments: Mapping[str, Fragment], lang: str) -> None:
        super().__init__()
        self.fragments, self.lang = fragments, lang

    def __missing__(self, key: str) -> str:
        value = self.fragments[key]
        return value.prompt if self.lang == "prompt" else getattr(value, self.lang, str(value))


def _read_package_yaml(name: str) -> Mapping[str, Any]:
    """One of the YAML mappings shipped in ``astrowatch/data/``."""
    text = resources.files("astrowatch").joinpath("data", name).read_text(encoding="utf-8")
    return cast(Mapping[str, Any], yaml.safe_load(text))


@functools.lru_cache(maxsize=1)
def correspondences() -> Mapping[str, Any]:
    """The shipped correspondences (parsed once; treat as read-only)."""
    data = _read_package_yaml("correspondences.yaml")
    for key in ("signs", "elements", "modalities", "points", "aspects", "houses", "retrograde"):
        if key not in data:
            raise ConfigError(f"correspondences.yaml: missing section {key!r}")
    return data


@functools.lru_cache(maxsize=1)
def _builtin_raw_styles() -> Mapping[str, Any]:
    return _read_package_yaml("styles.yaml")


@functools.lru_cache(maxsize=8)
def _override_raw_styles(path: str, _mtime_ns: int, _size: int) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"astro.styles_file: {path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"astro.styles_file: {path}: not valid YAML{line}: {problem}") from None
    if isinstance(data, Mapping) and isinstance(data.get("styles"), Mapping):
        data = data["styles"]
    if not isinstance(data, Mapping) or not all(isinstance(v, Mapping) for v in data.values()):
        raise ConfigError(f"astro.styles_file: {path}: expected a mapping of style name -> keys")
    return data


def _overrides(styles_file: Path | None) -> Mapping[str, Any]:
    if styles_file is None:
        return {}
    try:
        st = Path(styles_file).stat()
    except OSError:
        raise ConfigError(f"astro.styles_file: {styles_file}: file not found") from None
    return _override_raw_styles(str(styles_file), st.st_mtime_ns, st.st_size)


def merged_raw_styles(styles_file: Path | None) -> dict[str, dict[str, Any]]:
    """Shipped styles with the override file's styles merged in (raw mappings)."""
    merged = {name: dict(raw) for name, raw in _builtin_raw_styles().items()}
    for name, raw in _overrides(styles_file).items():
        origin = f"astro.styles_file: style {name!r}"
        unknown = sorted(set(raw) - set(STYLE_KEYS))
        if unknown:
            raise ConfigError(f"{origin}: unknown key {unknown[0]!r} (known: {', '.join(STYLE_KEYS)})")
        if name in merged and "extends" not in raw:
            base = merged[name]
        else:
            parent = str(raw.get("extends", DEFAULT_STYLE))
            if parent not in merged:
                raise ConfigError(f"{origin}: extends unknown style {parent!r}")
            base = merged[parent]
        merged[str(name)] = {**base, **{k: v for k, v in raw.items() if k != "extends"}}
    return merged


def _str_map(value: Any, origin: str, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"{origin}: {key} must be a mapping like {{fr: ..., en: ...}}")
    return {str(k): v for k, v in value.items()}


def _str_list(value: Any, origin: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{origin}: {key} must be a list of strings")
    return tuple(v for v in value if v.strip())


def _int_in(value: Any, origin: str, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{origin}: {key} must be an integer in {lo}..{hi}")
    return value


def _weights(value: Any, origin: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{origin}: weights must be a mapping of slot -> number")
    out: dict[str, float] = {}
    for slot, w in value.items():
        if slot not in WEIGHT_SLOTS:
            raise ConfigError(f"{origin}: weights: unknown slot {slot!r} (known: {', '.join(WEIGHT_SLOTS)})")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.1 <= w <= 2.0:
            raise ConfigError(f"{origin}: weights.{slot} must be a number in 0.1..2.0")
        out[str(slot)] = round(float(w), 2)
    return out


def build_style(name: str, raw: Mapping[str, Any]) -> Style:
    """Validate one merged raw style."""
    origin = f"style {name!r}"
    central = raw.get("central", "figure")
    if central not in CENTRAL_KINDS:
        raise ConfigError(f"{origin}: central must be one of {', '.join(CENTRAL_KINDS)}")
    for key in ("prefix", "suffix"):
        if not isinstance(raw.get(key, ""), str):
            raise ConfigError(f"{origin}: {key} must be a string")
    return Style(
        name=name,
        label=_str_map(raw.get("label", {"fr": name, "en": name}), origin, "label"),
        about=_str_map(raw.get("about", {}), origin, "about"),
        central=central,
        prefix=raw.get("prefix", ""),
        suffix=raw.get("suffix", ""),
        quality=_str_list(raw.get("quality", []), origin, "quality"),
        negative=_str_list(raw.get("negative", []), origin, "negative"),
        weights=_weights(raw.get("weights"), origin),
        budget=_int_in(raw.get("budget", DEFAULT_BUDGET), origin, "budget", 8, 10_000),
        max_aspects=_int_in(raw.get("max_aspects", DEFAULT_MAX_ASPECTS), origin, "max_aspects", 0, 5),
    )


def style_names(styles_file: Path | None = None) -> list[str]:
    return sorted(merged_raw_styles(styles_file))


def load_style(name: str | None, styles_file: Path | None = None) -> Style:
    """The style called ``name`` (default ``figuratif``); unknown name: ConfigError listing styles."""
    name = name or DEFAULT_STYLE
    styles = merged_raw_styles(styles_file)
    if name not in styles:
        raise ConfigError(f"unknown style {name!r}; known styles: {', '.join(sorted(styles))}")
    return build_style(name, styles[name])


def validate_styles(styles_file: Path | None, chosen: list[tuple[str, Any]]) -> None:
    """Config-load check: every style (shipped and ``styles_file``) builds, and every style the
    config names (``(key, value)`` pairs) exists.  ConfigError naming the value and the valid ones."""
    styles = merged_raw_styles(styles_file)
    for name, raw in styles.items():
        build_style(name, raw)
    for key, value in chosen:
        if value not in styles:
            raise ConfigError(f"{key}: unknown style {value!r}; valid styles: {', '.join(sorted(styles))}")
