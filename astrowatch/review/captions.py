"""Editing the training caption of an enhance result: line 1 of ``<stem>.txt`` is
``trigger, caption, tag, tag, ...`` (:mod:`astrowatch.pipeline.captions`); a reviewer rewrites the
caption, removes, adds and reorders tags, and what is left is filed on approval.

Plain functions: the CLI (``astrowatch review caption|tags``), the HTTP API
(``PATCH /api/jobs/{id}/caption``) and the review page all go through :func:`edit_caption`,
which rewrites line 1 of the ``.txt`` (the technical lines after it are kept) and records the
reviewer's sentence in the sidecar (``reviewed_caption``, so that a sentence with commas is
split back the same way later).  Files are read and written through
:mod:`astrowatch.storage.safefs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from astrowatch.backends.caption.text import Line, clean_caption
from astrowatch.core.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.review.inbox import InboxItem

REVIEWED_KEY = "reviewed_caption"  # sidecar key: the sentence the reviewer wrote
MAX_CAPTION = 1000  # characters of the sentence
MAX_TAG = 100  # characters of one tag
MAX_TAGS = 200


class CaptionParts(Line):
    """Line 1 split into its parts (the trigger word is the config's, not edited here): the
    captioner's :class:`~astrowatch.backends.caption.text.Line`, with what the editors need."""

    def record(self) -> dict[str, Any]:
        return {"line": self.text(), "trigger": self.trigger, "caption": self.caption, "tags": list(self.tags)}


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def proposed(sidecar: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's ``captions`` record (what the models proposed), or ``{}``."""
    captions = sidecar.get("captions")
    return captions if isinstance(captions, dict) else {}


def parse_line(line: str, trigger: str, known: list[str], has_caption: bool) -> CaptionParts:
    """Split line 1: the trigger word when it comes first; then a ``known`` sentence (the
    reviewer's, the model's) when the rest starts with it; else the first part is the caption
    when the result has one (``has_caption``), and every other part is a tag."""
    rest = " ".join(line.split())
    parts = CaptionParts(trigger=trigger.strip())
    low = rest.lower()
    if parts.trigger and (low == parts.trigger.lower() or low.startswith(parts.trigger.lower() + ",")):
        rest = rest[len(parts.trigger):].lstrip(", ").strip()
    for sentence in known:
        sentence = clean_caption(sentence)
        if sentence and (rest.lower() == sentence.lower() or rest.lower().startswith(sentence.lower() + ",")):
            parts.caption, parts.tags = rest[:len(sentence)], _split(rest[len(sentence):])
            return parts
    pieces = _split(rest)
    if has_caption and pieces:
        parts.caption, pieces = pieces[0], pieces[1:]
    parts.tags = pieces
    return parts


def current_parts(text: str, sidecar: dict[str, Any], trigger: str) -> CaptionParts:
    """The parts of the first non-empty line of ``text`` (a result's ``.txt``), read with the
    help of its sidecar."""
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    record = proposed(sidecar)
    known = [s for s in (sidecar.get(REVIEWED_KEY), record.get("caption")) if isinstance(s, str) and s.strip()]
    return parse_line(first, trigger, known, has_caption=bool(known))


def check_caption(text: Any) -> str:
    """A caption sentence: one line of at most :data:`MAX_CAPTION` characters (whitespace folded)."""
    if not isinstance(text, str) or "\x00" in text or len(text) > MAX_CAPTION:
        raise InputError(f"caption: expected text of at most {MAX_CAPTION} characters",
                         hint="one sentence; it becomes the part after the trigger word on line 1")
    return clean_caption(text)


def check_tag(tag: Any) -> str:
    """One tag: no comma (the separator), no line break, at most :data:`MAX_TAG` characters."""
    if not isinstance(tag, str) or "\x00" in tag or len(tag) > MAX_TAG or "," in tag:
        shown = repr(tag) if len(repr(tag)) <= 60 else repr(tag)[:57] + "..."
        raise InputError(f"tag {shown} is not allowed: expected text of at most {MAX_TAG} characters without a comma",
                         hint="tags are separated by commas on line 1, e.g. 'long hair, outdoors'")
    folded = " ".join(str(tag).split())
    if not folded:
        raise InputError("an empty tag is not allowed", hint="e.g. 'long hair'")
    return folded


def check_tags(tags: Any) -> list[str]:
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise InputError(f"tags: expected a list of at most {MAX_TAGS} tags", hint='e.g. ["long hair", "outdoors"]')
    return dedupe([check_tag(t) for t in tags])


def dedupe(tags: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for tag in tags:
        if tag.lower() not in seen:
            seen.add(tag.lower())
            out.append(tag)
    return out


def parse_tag_list(text: str) -> list[str]:
    """``"a, b"`` (or one per line) -> ``["a", "b"]``, each checked."""
    return check_tags([p for line in text.splitlines() for p in _split(line)])


def _index(tags: list[str], tag: str) -> int:
    low = [t.lower() for t in tags]
    if tag.lower() not in low:
        raise InputError(f"tag {tag!r} is not on line 1", hint="tags now: " + (", ".join(tags) or "none"))
    return low.index(tag.lower())


def edit_tags(tags: list[str], *, set_to: list[str] | None = None, add: Sequence[str] = (),
              remove: Sequence[str] = (), move: Sequence[tuple[str, int]] = ()) -> list[str]:
    """``set_to`` replaces the list; then ``remove``, ``add`` (at the end, unless already there),
    ``move`` (tag to a 0-based position; negative counts from the end) in that order."""
    out = list(tags) if set_to is None else check_tags(set_to)
    for tag in remove:
        out.pop(_index(out, check_tag(tag)))
    for tag in add:
        tag = check_tag(tag)
        if tag.lower() not in (t.lower() for t in out):
            out.append(tag)
    for tag, position in move:
        moved = out.pop(_index(out, check_tag(tag)))
        n = len(out) + 1
        if not -n <= position < n:
            raise InputError(f"position {position} is outside 0..{n - 1}", hint="0 is the first tag, -1 the last")
        out.insert(position if position >= 0 else n + position, moved)
    if len(out) > MAX_TAGS:
        raise InputError(f"at most {MAX_TAGS} tags")
    return out


def parse_move(spec: str) -> tuple[str, int]:
    """``"long hair:0"`` -> ``("long hair", 0)``."""
    tag, sep, position = spec.rpartition(":")
    try:
        if not sep:
            raise ValueError
        return tag.strip(), int(position)
    except ValueError:
        raise InputError(f"--move {spec!r}: expected TAG:POSITION, e.g. 'long hair:0'") from None


def with_line(text: str, line: str) -> str:
    """``text`` with its first non-empty line replaced by ``line`` (the technical lines kept)."""
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        if ln.strip():
            return "\n".join([*lines[:i], line, *lines[i + 1:]])
    return "\n".join([line, *lines])


def edit_caption(item: InboxItem, trigger: str, *, caption: str | None = None, tags: list[str] | None = None,
                 add: Sequence[str] = (), remove: Sequence[str] = (),
                 move: Sequence[tuple[str, int]] = ()) -> CaptionParts:
    """Rewrite line 1 of the result's ``.txt`` with the edited caption and tags; the sidecar
    records the reviewer's sentence (its only change).  Returns the parts as written."""
    from astrowatch.review.inbox import edit_sidecar, save_caption

    text = item.caption()
    sidecar = item.sidecar()
    parts = current_parts(text, sidecar, trigger)
    if caption is not None:
        parts.caption = check_caption(caption)
    parts.tags = edit_tags(parts.tags, set_to=tags, add=add, remove=remove, move=move)
    save_caption(item, with_line(text, parts.text()))
    if caption is not None and sidecar and sidecar.get(REVIEWED_KEY) != parts.caption:
        edit_sidecar(item.sidecar_path, "a caption edit", lambda d: d.update({REVIEWED_KEY: parts.caption}),
                     root=item.root)
    return parts


def describe(item: InboxItem, trigger: str) -> dict[str, Any]:
    """What the CLI, the API and the page show: the parts now, and what the models proposed
    (each tag with its score)."""
    sidecar = item.sidecar()
    parts = current_parts(item.caption(), sidecar, trigger)
    record = proposed(sidecar)
    tags = [{"tag": t.get("tag"), "score": t.get("score"), "category": t.get("category")}
            for t in record.get("tags") or [] if isinstance(t, dict)]
    return {**parts.record(), "proposed": {"line": record.get("line"), "caption": record.get("caption"),
                                           "tags": tags}}
