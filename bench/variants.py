"""Time for N = 1 and N = 4 variants of one chart on the tiny SDXL (CPU) or a model you pass.

    .venv/bin/python bench/variants.py [--repeats 3] [--steps 4] [--size 64] [--threads 1]
                                       [--model DIR --device cuda --dtype bfloat16]

``SdxlBackend.generate_variants`` (one batched call, ``num_images_per_prompt`` with one generator
per image) against N separate ``generate`` calls.  Median of ``--repeats`` after one warm-up.
Writes bench/out/variants.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from astrowatch.backends.base import AstroTask


def make_backend(args: argparse.Namespace) -> Any:
    from astrowatch.backends.sdxl.backend import SdxlBackend
    from astrowatch.runtime.settings import config_from_mapping

    settings = {"device": args.device, "dtype": args.dtype, "steps": args.steps, "width": args.size,
                "height": args.size, "scheduler": "euler"}
    if args.model:
        backend = SdxlBackend(config_from_mapping({"sdxl": {"model": args.model, **settings}}, base_dir=Path(".")))
        backend.start()
        return backend
    from sdxl_tiny import build_tiny_pipelines

    base, _refiner = build_tiny_pipelines()
    return SdxlBackend.from_pipeline(config_from_mapping({"sdxl": settings}, base_dir=Path(".")), base,
                                     model_name="tiny")


def timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    common.tiny_sdxl_options(parser)
    args = common.parse_args(parser, repeats=1, steps=2)
    common.offline_torch(args.threads)
    backend = make_backend(args)
    task = AstroTask(job_id="bench", user="bench", chart=None, params={}, seed=1,  # type: ignore[arg-type]
                     prompt="a natal chart as a stained glass window, gold, indigo", negative_prompt="blurry")
    seeds = [1, 2, 3, 4]
    backend.generate(task)  # warm-up
    one = [timed(lambda: backend.generate(task)) for _ in range(args.repeats)]
    batched = [timed(lambda: backend.generate_variants(task, seeds)) for _ in range(args.repeats)]
    serial = [timed(lambda: [backend.generate(AstroTask(**{**task.__dict__, "seed": s})) for s in seeds])
              for _ in range(args.repeats)]
    med = common.median
    result = {"machine": common.machine(), "device": args.device, "model": args.model or "tiny",
              "steps": args.steps, "size": args.size, "threads": args.threads,
              "n1_seconds": round(med(one), 4), "n4_batched_seconds": round(med(batched), 4),
              "n4_one_by_one_seconds": round(med(serial), 4),
              "n4_batched_per_image_seconds": round(med(batched) / 4, 4)}
    print(result)
    common.save("variants", result)
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
