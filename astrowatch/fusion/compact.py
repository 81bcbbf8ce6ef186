"""Render motifs for a backend and compact them to a token budget.

Rendering: every motif is cleaned (lower case; characters that prompt parsers or tokenizers
mishandle are removed, ``!`` above all since it is SDXL's ``tokenizer_2`` padding token), then
weighted motifs get the backend's syntax: compel ``(motif)1.2`` for ``sdxl``, A1111
``(motif:1.2)`` for ``sdapi``, plain text for ``openai``.

Compaction, run only when the whole prompt is over budget for some encoder, rebuilds it by
importance.  First the core (the central figure and the style's medium) is placed in its short
form, the figure's last words cut if even that does not fit: the figure is never dropped.  Then,
from the most important motif down, each one gets its full text if the prompt still fits, else
its short form, else it is left out (and the next, less important motifs still get their
chance).  So the most important motifs keep their full wording, and what is lost is always the
least important.

Everything is deterministic: the same motifs, counters and budget give the same text.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from astrowatch.fusion.motifs import Motif
from astrowatch.fusion.tokens import TokenCounter

_UNSAFE = re.compile(r"[^\w\s,'\-]|_")  # keeps letters, digits, spaces, commas, ' and -
_LONE_HYPHEN = re.compile(r"(?<![^\W\d_])-+|-+(?![^\W\d_])")  # a hyphen not inside a word
CORE_PRIORITY = 95  # the figure and the medium: both placed (short) before anything else
_SPACES = re.compile(r"\s+")
_COMMAS = re.compile(r"\s*,[\s,]*")


@functools.lru_cache(maxsize=4096)
def clean(text: str) -> str:
    """Prompt-safe text: no weight/markup characters, no ``!``, single spaces and commas.
    Remembered: fitting a prompt cleans the same motif texts a hundred times per job (bounded:
    they come from the fusion data, mostly)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _LONE_HYPHEN.sub(" ", _UNSAFE.sub(" ", text))
    text = _COMMAS.sub(", ", _SPACES.sub(" ", text))
    return text.strip(" ,'")


def render_motif(text: str, weight: float, backend: str) -> str:
    if backend == "openai" or abs(weight - 1.0) < 1e-9 or not text:
        return text
    w = f"{weight:g}"
    return f"({text}:{w})" if backend == "sdapi" else f"({text}){w}"


@dataclass
class Compacted:
    text: str
    counts: dict[str, int]
    budget: int
    kept: set[str] = field(default_factory=set)  # keys of motifs present in the text
    dropped: list[str] = field(default_factory=list)  # full texts of dropped motifs
    dropped_keys: list[str] = field(default_factory=list)
    shortened: list[str] = field(default_factory=list)  # full texts of shortened/cut motifs


class _Fitter:
    """Holds the chosen text of each motif and measures the rendered prompt."""

    def __init__(self, motifs: Sequence[Motif], counters: Mapping[str, TokenCounter],
                 budget: int, backend: str) -> None:
        self.motifs = [m for m in motifs if clean(m.text)]
        self.counters, self.budget, self.backend = counters, budget, backend
        self.state: dict[str, str | None] = {m.key: clean(m.text) for m in self.motifs}
        self._cache: dict[str, dict[str, int]] = {}

    def render(self) -> str:
        parts = (render_motif(self.state[m.key] or "", m.weight, self.backend) for m in self.motifs)
        return ", ".join(p for p in parts if p)

    def counts(self, text: str | None = None) -> dict[str, int]:
        text = self.render() if text is None else text
        if text not in self._cache:
            counted: dict[int, int] = {}  # one counter for both encoders (approx): counted once
            for c in self.counters.values():
                if id(c) not in counted:
                    counted[id(c)] = c.count(text)
            self._cache[text] = {name: counted[id(c)] for name, c in self.counters.items()}
        return self._cache[text]

    def fits(self) -> bool:
        return all(n <= self.budget for n in self.counts().values())

    def attempt(self, key: str, text: str | None) -> bool:
        """Set a motif's text; keep it if the prompt fits, else restore the previous one."""
        old = self.state[key]
        self.state[key] = text
        if self.fits():
            return True
        self.state[key] = old
        return False


def _truncate(fitter: _Fitter, motif: Motif) -> None:
    words = (fitter.state[motif.key] or "").split(" ")
    while words and not fitter.fits():
        words.pop()
        fitter.state[motif.key] = " ".join(words).strip(" ,") or None


def _rebuild(fitter: _Fitter) -> None:
    order = {m.key: i for i, m in enumerate(fitter.motifs)}
    descending = sorted(fitter.motifs, key=lambda m: (-m.priority, order[m.key]))
    for m in fitter.motifs:
        fitter.state[m.key] = None
    for m in (m for m in descending if m.priority >= CORE_PRIORITY):  # reserve the core first
        short = clean(m.short) if m.short else ""
        if not fitter.attempt(m.key, short or clean(m.text)) and m.essential:
            fitter.state[m.key] = short or clean(m.text)
            _truncate(fitter, m)
    for m in descending:
        full, short = clean(m.text), clean(m.short) if m.short else ""
        if m.priority >= CORE_PRIORITY:
            if fitter.state[m.key] == short:
                fitter.attempt(m.key, full)
        elif not fitter.attempt(m.key, full) and short:
            fitter.attempt(m.key, short)


def compact(motifs: Sequence[Motif], counters: Mapping[str, TokenCounter], budget: int,
            backend: str) -> Compacted:
    """Render ``motifs`` for ``backend`` within ``budget`` tokens for every counter."""
    fitter = _Fitter(motifs, counters, budget, backend)
    if not fitter.fits():
        _rebuild(fitter)
    text = fitter.render()
    result = Compacted(text=text, counts=dict(fitter.counts(text)), budget=budget)
    for m in fitter.motifs:
        chosen, full = fitter.state[m.key], clean(m.text)
        if chosen is None:
            result.dropped.append(full)
            result.dropped_keys.append(m.key)
            continue
        result.kept.add(m.key)
        if chosen != full:
            result.shortened.append(full)
    return result
