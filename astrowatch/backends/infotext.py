"""A1111 "parameters" infotext: write it like the WebUI does, parse it like PNG Info does.

Format (see shared/reference/sd-webui-api.md)::

    <prompt>
    Negative prompt: <negative>          (omitted when empty)
    Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, Size: 1024x1024, ...

A value containing ``,`` ``:`` or a newline is written as a JSON string.
"""

from __future__ import annotations

import json
import re
from typing import Any

from astrowatch import __version__

# A1111's own regex (modules/infotext_utils.py) for the last line.
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
KEY_ORDER = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
             "VAE", "Denoising strength")


def _quote(value: Any) -> str:
    text = str(value)
    if any(c in text for c in ",:\n"):
        return json.dumps(text, ensure_ascii=False)
    return text


def format_infotext(prompt: str, negative_prompt: str, params: dict[str, Any]) -> str:
    """Build the infotext; ``params`` keys are A1111 labels ("Steps", "CFG scale", ...)."""
    fields = dict(params)
    fields.setdefault("Version", f"astrowatch {__version__}")
    ordered = [k for k in KEY_ORDER if k in fields] + [k for k in fields if k not in KEY_ORDER and k != "Version"]
    ordered.append("Version")
    last = ", ".join(f"{k}: {_quote(fields[k])}" for k in ordered if fields[k] is not None)
    lines = [prompt.replace("\n", " ").strip()]
    if negative_prompt:
        lines.append("Negative prompt: " + negative_prompt.replace("\n", " ").strip())
    lines.append(last)
    return "\n".join(lines)


def parse_infotext(text: str) -> dict[str, Any]:
    """Parse an infotext back into ``{"prompt", "negative_prompt", <label>: value, ...}``.

    Mirrors A1111's ``parse_generation_parameters``: the last line holds the parameters when
    the regex finds at least 3 of them there.
    """
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    found = RE_PARAM.findall(last)
    if len(found) < 3:
        found, body = [], lines
    else:
        body = lines[:-1]
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in body:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    out: dict[str, Any] = {"prompt": "\n".join(prompt_lines), "negative_prompt": "\n".join(negative_lines)}
    for key, value in found:
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = value
    return out
