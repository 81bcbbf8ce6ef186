"""The words of line 1 and the effective caption settings of a job (no model library here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config

# Job parameters (a redo, the review page, the API) that change only the caption, never the pixels:
# they are kept out of the backend's parameters and of the enhance cache key.
CAPTION_KEYS = frozenset({"captioner", "captioner_prompt", "tagger", "general_threshold",
                          "character_threshold", "max_tags"})
# SmilingWolf's tagger app keeps these tags as they are (their underscore is part of the face).
KAOMOJI = frozenset({"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9",
                     ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"})
DEFAULT_CHAT_MODEL = "gpt-4.1-mini"
DEFAULT_CHAT_PROMPT = ("Write one sentence, in English, that describes this photo for an image-model training "
                       "caption: the subject, what it does, the setting, the light and the style. No preamble.")
DEFAULT_FLORENCE_TASK = "<CAPTION>"


@dataclass(frozen=True)
class CaptionSettings:
    """What captions one job: ``caption:`` with the job's overrides, ``auto`` resolved."""

    captioner: str  # none | blip | florence2 | sdapi | openai
    captioner_model: str | None
    captioner_prompt: str | None
    tagger: str  # none | wd14
    tagger_model: str | None
    general_threshold: float
    character_threshold: float
    max_tags: int
    undesired_tags: tuple[str, ...] = ()
    keep_underscores: bool = False
    why: str = ""  # how ``auto`` was resolved

    def record(self) -> dict[str, Any]:
        """For the sidecar: the settings that made the caption."""
        return {"general_threshold": self.general_threshold, "character_threshold": self.character_threshold,
                "max_tags": self.max_tags, "undesired_tags": list(self.undesired_tags),
                "keep_underscores": self.keep_underscores}


def resolve_captioner(config: Config, backend: str, override: str | None = None) -> tuple[str, str]:
    """(captioner, why): ``auto`` is ``sdapi`` when the enhance backend is the WebUI, else ``none``."""
    name = override or config.caption.captioner
    if name != "auto":
        return name, ""
    if backend == "sdapi":
        return "sdapi", "auto: the enhance backend is the WebUI (its interrogate)"
    return "none", "auto: no local captioner configured (caption.captioner)"


def effective_settings(config: Config, backend: str, params: dict[str, Any]) -> CaptionSettings:
    """``caption:`` with the job's own :data:`CAPTION_KEYS` (already checked by review/params)."""
    c = config.caption
    captioner, why = resolve_captioner(config, backend, params.get("captioner"))
    model = c.captioner_model if captioner == c.captioner or c.captioner == "auto" else None
    if captioner == "sdapi":
        model = model if model in ("clip", "deepdanbooru") else config.enhance.caption_model
        if model == "none":
            captioner, why = "none", "the WebUI interrogator is set to none (enhance.caption_model)"
    elif captioner == "openai":
        model = model or DEFAULT_CHAT_MODEL
    elif captioner in ("blip", "florence2") and not model:
        model = c.captioner_model  # a redo naming a local captioner uses the configured folder
    prompt = params.get("captioner_prompt", c.captioner_prompt)
    tagger = str(params.get("tagger") or c.tagger)
    return CaptionSettings(
        captioner=captioner, captioner_model=model, captioner_prompt=prompt or None, tagger=tagger,
        tagger_model=str(c.tagger_model) if c.tagger_model else None,
        general_threshold=float(params.get("general_threshold", c.general_threshold)),
        character_threshold=float(params.get("character_threshold", c.character_threshold)),
        max_tags=int(params.get("max_tags", c.max_tags)), undesired_tags=tuple(c.undesired_tags),
        keep_underscores=c.keep_underscores, why=why)


def tag_text(name: str, keep_underscores: bool) -> str:
    """``long_hair`` -> ``long hair`` (kohya's --remove_underscore), kaomoji kept."""
    if keep_underscores or name in KAOMOJI or len(name) <= 3:
        return name
    return name.replace("_", " ")


def clean_caption(text: str) -> str:
    """One line: whitespace collapsed, no newline, no trailing full stop or comma."""
    return " ".join(str(text).split()).strip().rstrip(".,;: ").strip()


@dataclass
class Line:
    """The parts of line 1, in order."""

    trigger: str = ""
    caption: str = ""
    tags: list[str] = field(default_factory=list)

    def text(self) -> str:
        """``trigger, caption, tag, tag``: no part twice (case-insensitive), none empty."""
        parts: list[str] = []
        seen: set[str] = set()
        for part in (self.trigger, self.caption, *self.tags):
            part = part.strip().strip(",").strip()
            if part and part.lower() not in seen:
                seen.add(part.lower())
                parts.append(part)
        return ", ".join(parts)


def compose(line1: str, technical: str) -> str:
    """The description: the training line, then the reviewer's technical lines."""
    rest = [ln.rstrip() for ln in technical.splitlines() if ln.strip()]
    return "\n".join([line1, *rest]) if line1 else "\n".join(rest)
