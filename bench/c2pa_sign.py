"""What marking a result costs, on its own: encoding a result with and without the IPTC XMP, and
signing a C2PA manifest (``provenance.c2pa``) on top, per image, for PNG, JPEG and WebP.

    .venv/bin/python bench/c2pa_sign.py [--size 1024] [--n 20] [--smoke]

The signing certificate is a throwaway ES256 chain made here (tests/support/c2pa_certs.py).  The
figure is the median seconds per image of ``result_bytes`` (+XMP) and of ``C2paSigner.sign``, and
the bytes a manifest adds.  Writes ``c2pa_sign.json`` under ``$ASTROWATCH_BENCH_OUT`` (default
bench/out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))


def _median(fn, n: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="side of the square image")
    ap.add_argument("--n", type=int, default=20, help="repetitions (median)")
    ap.add_argument("--smoke", action="store_true", help="seconds-long: 128 px, 3 repetitions")
    args = ap.parse_args(argv)
    if args.smoke:
        args.size, args.n = 128, 3
    import numpy as np
    from c2pa_certs import make_chain
    from PIL import Image

    from astrowatch.core.config import C2paConfig
    from astrowatch.storage.images import result_bytes
    from astrowatch.storage.provenance import TRAINED, load_signer

    rng = np.random.default_rng(0)
    # a smooth picture with mild noise, like a portrait (pure noise trips Pillow's optimized JPEG buffer)
    ramp = np.linspace(0, 200, args.size, dtype=np.float32)
    pixels = np.stack([ramp[None, :].repeat(args.size, 0), ramp[:, None].repeat(args.size, 1),
                       np.full((args.size, args.size), 90, np.float32)], axis=-1)
    pixels += rng.normal(0, 6, pixels.shape).astype(np.float32)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_chain(Path(tmp))
        t = time.perf_counter()
        signer = load_signer(C2paConfig(cert_file=cert, key_file=key))
        load_s = time.perf_counter() - t
        assert signer is not None
        rows = {}
        for fmt in ("png", "jpeg", "webp"):
            # a fresh image each time: a PNG's pixels are encoded once per image and remembered on it
            fresh = iter([image.copy() for _ in range(2 * args.n)])
            plain_s, plain = _median(lambda f=fmt, it=fresh: result_bytes(next(it), f, infotext="bench"), args.n)
            xmp_s, marked = _median(lambda f=fmt, it=fresh: result_bytes(next(it), f, infotext="bench", source_type=TRAINED),
                                    args.n)
            sign_s, signed = _median(lambda f=fmt, m=marked: signer.sign(m, f, source_type=TRAINED, title="bench"),
                                     args.n)
            rows[fmt] = {"encode_s": round(plain_s, 4), "encode_with_xmp_s": round(xmp_s, 4),
                         "c2pa_sign_s": round(sign_s, 4), "bytes": len(plain), "xmp_bytes": len(marked) - len(plain),
                         "manifest_bytes": len(signed) - len(marked)}
            print(f"{fmt:5s} {args.size}px: encode {plain_s * 1000:7.1f} ms, +XMP {(xmp_s - plain_s) * 1000:+6.1f} ms, "
                  f"C2PA sign {sign_s * 1000:7.1f} ms (+{len(signed) - len(marked)} bytes)", flush=True)
    result = {"size": args.size, "n": args.n, "signer_load_s": round(load_s, 4), "formats": rows,
              "cpu": os.cpu_count()}
    out = Path(os.environ.get("ASTROWATCH_BENCH_OUT") or ROOT / "bench" / "out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "c2pa_sign.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"signer load (checked with one signature) {load_s * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
