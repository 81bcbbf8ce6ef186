"""What ``feedback.candidates`` may name, and how candidate values compare.

Below both :mod:`astrowatch.core.config` (which validates the keys) and :mod:`astrowatch.pipeline.feedback`
(which learns from them), so neither imports the other at run time.
"""

from __future__ import annotations

import math
import re
from typing import Any

KEY_RE = re.compile(r"^(astro|enhance)\.([A-Za-z][A-Za-z0-9_]*)$")
NOT_TUNABLE = frozenset({"seed"})


def norm(value: Any) -> Any:
    """Comparable form: numbers by value (0 == 0.0 == "0"), text as is."""
    if isinstance(value, bool):
        return ("bool", value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ("text", str(value))
    return ("num", round(number, 9)) if math.isfinite(number) else ("text", str(value))


# -- config validation (called by FeedbackConfig) -----------------------------------------------
def check_candidates(candidates: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Refuse keys that do not name ``<kind>.<param>`` and candidate lists that cannot be learned."""
    for key, values in candidates.items():
        m = KEY_RE.match(key)
        if not m or m.group(2) in NOT_TUNABLE:
            raise ValueError(f"{key!r} is not a tunable parameter (expected astro.<param> or enhance.<param>, "
                             "e.g. enhance.denoising_strength; seed cannot be learned)")
        if not values:
            raise ValueError(f"{key}: give at least one candidate value")
        for value in values:
            if not isinstance(value, (str, int, float, bool)):
                raise ValueError(f"{key}: candidate {value!r} is not a plain value (text, number or bool)")
        if len({norm(v) for v in values}) != len(values):
            raise ValueError(f"{key}: candidate values repeat")
    return candidates
