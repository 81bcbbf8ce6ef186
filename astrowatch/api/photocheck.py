"""The child process that checks an uploaded photo: ``python -m astrowatch.api.photocheck``.

Started by :mod:`astrowatch.api.uploads` through :func:`astrowatch.storage.sandbox.run_child` on the
upload's temporary file, under ``limits.decode_memory_mb`` and ``limits.decode_timeout_seconds``:
the photo is decoded exactly as the daemon will (:func:`astrowatch.storage.images.decode_image_bytes`:
an accepted format whose extension agrees with its content, within ``limits.max_image_pixels``).
"""

from __future__ import annotations

import sys
from typing import Any

from astrowatch.storage.sandbox import child_main


def check(request: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    from astrowatch.storage.images import decode_image_bytes

    img = decode_image_bytes(data, str(request["name"]), max_pixels=int(request["max_pixels"]))
    return {"size": list(img.size), "format": img.format}, b""


if __name__ == "__main__":
    sys.exit(child_main(check))
