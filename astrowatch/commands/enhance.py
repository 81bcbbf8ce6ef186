"""``astrowatch enhance IMAGE -o out.png``: one enhancement, no daemon, same code path."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from astrowatch.commands.generate import one_shot_context, write_result


def main(args: argparse.Namespace) -> int:
    from astrowatch.core.config import Config
    from astrowatch.pipeline.steps import enhance_image
    from astrowatch.runtime.daemon import resolve_backends
    from astrowatch.runtime.logsetup import setup_logging
    from astrowatch.runtime.settings import apply_overrides, load_config
    from astrowatch.storage.files import sha256_file

    config = load_config(args.config) if args.config or Path("config.yaml").exists() else Config()
    config = apply_overrides(config, args.set)
    setup_logging("warning", "console")
    source = Path(args.image)
    if not source.is_file():
        from astrowatch.core.errors import NotFound

        raise NotFound(f"{source}: no such file")
    default = args.backend or resolve_backends(config)["enhance"]
    ctx, pool = one_shot_context(config)
    seed = int(sha256_file(source)[:8], 16)  # as the daemon seeds a photo: from its content
    t0 = time.monotonic()
    try:
        outcome = enhance_image(source, ctx, job_id="cli", user="cli", params={}, default_backend=default,
                                fallback_seed=seed)
        write_result(outcome, Path(args.output), "cli", "enhance")
    finally:
        pool.close()
    r = outcome.result
    print(f"wrote {args.output} ({r.image.width}x{r.image.height}) with backend {outcome.params['backend']}"
          f" (cache {outcome.extra['cache']}) in {time.monotonic() - t0:.2f} s")
    print(r.description.splitlines()[0] if r.description else "")
    return 0
