"""The enhance description: a Fluxgym-style training caption on line 1, technical facts after.

The technical part comes from :func:`astrowatch.backends.describe.technical_description`, whose
first line is itself a short English caption ("photo, color, 2048x1536, dominant dark blue").
"""

from __future__ import annotations


def compose_description(trigger: str, caption: str | None, technical: str, note: str | None) -> str:
    """Line 1 = ``trigger, caption`` (or the technical caption line when the WebUI gave none).

    The following lines are the technical description, then ``note`` (why there is no caption).
    Only line 1 is read by kohya/Fluxgym; the rest is for the reviewer.
    """
    tech = [line.strip() for line in technical.splitlines() if line.strip()]
    first = caption or (tech[0] if tech else "")
    rest = tech if caption else tech[1:]
    trigger = trigger.strip()
    if trigger and not first.lower().startswith(trigger.lower()):
        first = f"{trigger}, {first}" if first else trigger
    lines = [first, *rest]
    if note:
        lines.append(note)
    return "\n".join(lines)
