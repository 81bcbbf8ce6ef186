"""The child process that decodes an untrusted photo: ``python -m astrowatch.pipeline.decoder``.

Started by :func:`astrowatch.pipeline.preprocess.preprocess` through
:func:`astrowatch.storage.sandbox.run_child`, which sets its memory limit, reads and hashes the
descriptor it was handed; this module only decodes and converts those bytes
(:func:`~astrowatch.pipeline.preprocess.preprocess_bytes`) and returns the RGB pixels and the facts.
The heavy imports (Pillow, numpy) happen after the memory limit is set.
"""

from __future__ import annotations

import sys
from typing import Any

from astrowatch.storage.sandbox import child_main


def decode(request: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    from astrowatch.pipeline.preprocess import preprocess_bytes

    r, g, b = (int(c) for c in request["background"])
    rgb, facts = preprocess_bytes(data, str(request["name"]), max_pixels=int(request["max_pixels"]),
                                  min_side=int(request["min_side"]), bg=(r, g, b))
    return {"size": list(rgb.size), "facts": facts}, rgb.tobytes()


if __name__ == "__main__":
    sys.exit(child_main(decode))
