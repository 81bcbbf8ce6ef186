"""A 12 MP phone photo end to end through the real daemon: seconds, peak RSS, output bytes.

    .venv/bin/python bench/phone_photo.py [--runs 2] [--source heic|jpeg]

The photo: 4032×3024, photo-like content (smooth low-frequency colour field + fine grain, so PNG
does not compress it away and JPEG lands near a phone's 2.5 MB), written as a JPEG q90 (or a HEIC
q80 with ``--source heic``).  Each run: a fresh data folder, the real daemon (``lanczos``,
``stability_seconds: 0.3``), READY=1, the photo is dropped; measured from the drop to the result
in ``inbox/`` (its sidecar written first, the image last), the daemon's CPU time over the same
span (utime + stime: steadier than wall time on a shared machine), its peak RSS (``VmHWM``, which
includes start-up: the idle daemon's figure is given too) and the result's size in bytes.

Variants: ``before`` = what the daemon did before issue 17 (×2 unbounded, PNG:
``max_output_side: 0``), ``after`` = the defaults (×2 capped at a 4096 long side, PNG), and the
two other ``enhance.format`` values with the same cap.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

VARIANTS: dict[str, dict[str, Any]] = {
    "before (×2 unbounded, png)": {"max_output_side": 0, "format": "png"},
    "after (defaults: max_output_side 4096, png)": {},
    "after, format webp (lossless)": {"format": "webp"},
    "after, format jpeg (q95)": {"format": "jpeg"},
}


def photo_bytes(source: str, width: int = 4032, height: int = 3024) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(12)
    field = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    grain = rng.normal(0, 6, (height, width, 3))
    img = Image.fromarray(np.clip(np.asarray(field, dtype=np.float64) + grain, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    if source == "heic":
        import pillow_heif

        pillow_heif.register_heif_opener()
        img.save(buf, format="HEIF", quality=80)
    else:
        img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def one_run(variant: dict[str, Any], photo: bytes, name: str) -> dict[str, Any]:
    with common.scratch("phone") as tmp:
        enhance = {"backend": "lanczos", **variant}
        config = common.write_bench_config(tmp, enhance=enhance, watch={"stability_seconds": 0.3})
        daemon = common.BenchDaemon(config)
        try:
            daemon.start()
            idle = common.memory_mb(daemon.pid)
            cpu0 = common.cpu_seconds(daemon.pid)
            folder = daemon.data / "Utilisateurs" / "gaby"
            folder.mkdir(parents=True)
            t0 = time.monotonic()
            (folder / name).write_bytes(photo)
            inbox = daemon.data / "inbox" / "gaby"

            def result() -> Path | None:
                if not inbox.is_dir():
                    return None
                found = [p for p in inbox.glob("*") if p.suffix in (".png", ".webp", ".jpg")]
                return found[0] if found else None

            image = common.harness.wait_until(result, timeout=300, interval=0.02, what="the result")
            seconds = time.monotonic() - t0
            peak = common.memory_mb(daemon.pid)
            cpu = common.cpu_seconds(daemon.pid) - cpu0
            from PIL import Image

            with Image.open(image) as img:
                size = img.size
            return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "peak_rss_mb": round(peak["VmHWM"], 1),
                    "idle_rss_mb": round(idle["VmRSS"], 1), "output_bytes": image.stat().st_size,
                    "output_size": list(size), "output_name": image.suffix}
        finally:
            daemon.stop()
            daemon.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--source", choices=("jpeg", "heic"), default="jpeg")
    parser.add_argument("--width", type=int, default=4032)
    parser.add_argument("--height", type=int, default=3024)
    args = common.parse_args(parser, runs=1, width=800, height=600)
    photo = photo_bytes(args.source, args.width, args.height)
    load0 = common.loadavg()
    name = "phone.heic" if args.source == "heic" else "phone.jpg"
    common.log(f"source {name}: {args.width}x{args.height}, {len(photo)} bytes")
    rows = []
    for label, variant in VARIANTS.items():
        runs = [one_run(variant, photo, name) for _ in range(args.runs)]
        best = min(runs, key=lambda r: r["seconds"])
        row = {"variant": label, "config": variant, "runs": runs,
               "median_seconds": round(common.median([r["seconds"] for r in runs]), 2),
               "median_cpu_seconds": round(common.median([r["cpu_seconds"] for r in runs]), 2),
               "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "output_bytes": best["output_bytes"],
               "output_size": best["output_size"]}
        rows.append(row)
        common.log(f"{label}: {row['median_seconds']} s ({row['median_cpu_seconds']} s CPU), "
                   f"peak RSS {row['peak_rss_mb']} MB, {row['output_size'][0]}x{row['output_size'][1]} "
                   f"{row['output_bytes'] / 1e6:.1f} MB")
    common.save("phone_photo", {"source": name, "loadavg_at_start": load0, "source_bytes": len(photo),
                                "runs_each": args.runs, "rows": rows,
                                "command": " ".join(["bench/phone_photo.py", *sys.argv[1:]])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
