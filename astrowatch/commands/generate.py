"""``astrowatch generate THEME.json -o out.png [--moodboard PATH]``: one astro image, no daemon,
same code path.  ``--moodboard`` stands for the user folder's ``moodboard.*``: the style reference
with ``sdxl.ip_adapter``, else the img2img start when ``sdxl.init_strength`` is set."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.backends.base import CancelToken
    from astrowatch.backends.pool import BackendPool
    from astrowatch.core.config import Config
    from astrowatch.pipeline.steps import JobContext, Outcome


def one_shot_context(config: Config, cancel: CancelToken | None = None) -> tuple[JobContext, BackendPool]:
    """A JobContext with its own backend pool (the worker's pool class), for CLI one-offs."""
    from astrowatch.backends.base import CancelToken
    from astrowatch.backends.pool import BackendPool
    from astrowatch.pipeline.steps import JobContext
    from astrowatch.storage.layout import Layout

    pool = BackendPool(config)
    return JobContext(config, Layout(config.data_dir), pool.get, cancel or CancelToken()), pool


def write_result(outcome: Outcome, output: Path, job_id: str, kind: str) -> None:
    from astrowatch.storage.images import atomic_write_bytes, result_bytes

    r = outcome.result
    fmt = {".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg"}.get(output.suffix.lower(), "png")  # by -o's name
    atomic_write_bytes(output, result_bytes(r.image, fmt, infotext=r.infotext, meta={"job_id": job_id, "kind": kind}))


def main(args: argparse.Namespace) -> int:
    from astrowatch.chart.parse import parse_chart_file
    from astrowatch.core.config import Config
    from astrowatch.runtime.daemon import resolve_backends
    from astrowatch.runtime.logsetup import setup_logging
    from astrowatch.runtime.settings import apply_overrides, load_config

    config = load_config(args.config) if args.config or Path("config.yaml").exists() else Config()
    config = apply_overrides(config, args.set)
    setup_logging("warning", "console")
    chart = parse_chart_file(Path(args.theme), max_bytes=config.limits.max_json_bytes,
                             max_depth=config.limits.max_json_depth)
    params = {"backend": args.backend} if args.backend else {}
    if args.seed is not None:
        params["seed"] = args.seed
    default = resolve_backends(config)["astro"] if not args.backend else args.backend
    ctx, pool = one_shot_context(config)
    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as work:
            from astrowatch.pipeline.steps import generate_astro

            moodboard = Path(args.moodboard) if getattr(args, "moodboard", None) else None
            outcome = generate_astro(chart, ctx, job_id="cli", params=params, default_backend=default,
                                     work_dir=Path(work), moodboard=moodboard)
        output = Path(args.output)
        write_result(outcome, output, "cli", "astro")
    finally:
        pool.close()
    total = time.monotonic() - t0
    print(f"wrote {output} ({outcome.result.image.width}x{outcome.result.image.height}) "
          f"with backend {outcome.params['backend']}, seed {outcome.params.get('seed')}")
    steps = (outcome.result.extra or {}).get("timings") or {}
    detail = ", ".join(f"{k} {v:.2f} s" for k, v in steps.items() if isinstance(v, (int, float)))
    print(f"timings: load {json.dumps(pool.load_seconds)} s, total {total:.2f} s" + (f" ({detail})" if detail else ""))
    print(f"prompt: {outcome.result.prompt}")
    if getattr(args, "moodboard", None):
        print(moodboard_line(outcome))
    return 0


def moodboard_line(outcome: Outcome) -> str:
    """What ``--moodboard`` did: style reference (adapter, scale, sha256), img2img start, or nothing."""
    style = outcome.extra.get("style_reference")
    if isinstance(style, dict):
        adapter = outcome.params.get("ip_adapter") or {}
        return (f"moodboard: style reference (IP-Adapter {adapter.get('model')}, scale {adapter.get('scale')}, "
                f"sha256 {style.get('sha256')})")
    if outcome.extra.get("init_image"):
        return f"moodboard: img2img start (init_strength {outcome.params.get('init_strength')})"
    return (f"moodboard: not used by backend {outcome.params.get('backend')} (configure sdxl.ip_adapter for a "
            "style reference, or sdxl.init_strength for an img2img start)")
