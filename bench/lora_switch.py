"""Cost of switching LoRA adapters between jobs, on the tiny SDXL (CPU) or a model you pass.

    .venv/bin/python bench/lora_switch.py [--images 30] [--steps 4] [--size 64] [--threads 1]
                                          [--model DIR --device cuda --dtype bfloat16]

In this process, ``SdxlBackend`` over ``tests/support/sdxl_tiny`` pipelines (or ``--model``), with
``sdxl.loras: [{path: datasets/{user}/lora/{user}.safetensors}]`` and two users who have a LoRA
file (made with peft, saved with diffusers' ``save_lora_weights``, rank 4 on every attention
projection of the UNet and both text encoders) and one who has none.  Per job, as the daemon
does it: ``plan_loras`` (stat + cached hashes) then ``generate`` (``activate`` switches the
adapters, measured inside as ``timings.lora_seconds``, then the image).

* ``switch``: plan + activate when the user changes at every job (gaby, lou, nobody, gaby...);
* ``same``: plan + activate when the same user runs again (nothing to switch);
* ``first_load``: ``load_lora_weights`` of a user's adapter, once per worker;
* ``image``: ``timings.total_seconds`` of a job with no adapter (``sdxl.loras`` empty: the base
  model as before this feature), and with one adapter active (unfused peft layers cost a little
  per step).

Also the process RSS before and after the switching series, and the adapters still resident
(two: one per user with a file), as a leak check.

Target: switch / image < 5 %.  First job of each series excluded.  Writes bench/out/lora_switch.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

TARGET = 0.05
USERS = ("gaby", "lou", "nobody")


def make_backend(args: argparse.Namespace, data: Path, loras: list[dict[str, Any]]) -> Any:
    from astrowatch.backends.sdxl.backend import SdxlBackend
    from astrowatch.runtime.settings import config_from_mapping

    settings = {"device": args.device, "dtype": args.dtype, "steps": args.steps, "width": args.size,
                "height": args.size, "scheduler": "euler", "loras": loras}
    if args.model:
        cfg = config_from_mapping({"data_dir": str(data), "sdxl": {"model": args.model, **settings}}, base_dir=data)
        backend = SdxlBackend(cfg)
        backend.start()
        return backend
    from sdxl_tiny import build_tiny_pipelines

    cfg = config_from_mapping({"data_dir": str(data), "sdxl": settings}, base_dir=data)
    base, _refiner = build_tiny_pipelines()
    return SdxlBackend.from_pipeline(cfg, base, model_name="tiny")


def job(backend: Any, user: str, seed: int) -> dict[str, float]:
    from astrowatch.backends.base import AstroTask

    started = time.perf_counter()
    plan = backend.plan_loras(user, None)
    planned = time.perf_counter() - started
    task = AstroTask(job_id=f"b{seed}", user=user, chart=None, params={"loras": plan}, seed=seed,  # type: ignore[arg-type]
                     prompt="a lion of gold in a stained glass window, indigo night", negative_prompt="blurry")
    timings = backend.generate(task).extra["timings"]
    return {"plan": planned, "activate": timings.get("lora_seconds", 0.0), "total": timings["total_seconds"]}


def series(backend: Any, users: list[str], n: int) -> list[dict[str, float]]:
    runs = [job(backend, users[i % len(users)], i) for i in range(n + 1)]
    return runs[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30)
    common.tiny_sdxl_options(parser)
    args = common.parse_args(parser, images=2, steps=2)
    common.offline_torch(args.threads)
    from lora_tiny import make_sdxl_lora

    with common.scratch("lora_switch") as data:
        for i, user in enumerate(USERS[:2]):
            make_sdxl_lora(data / "datasets" / user / "lora" / f"{user}.safetensors", seed=11 + 10 * i)
        plain = make_backend(args, data, [])
        base_runs = series(plain, ["nobody"], args.images)
        plain.close()
        backend = make_backend(args, data, [{"path": "datasets/{user}/lora/{user}.safetensors"}])
        started = time.perf_counter()
        backend.plan_loras("gaby", None)
        first = job(backend, "gaby", 0)
        first_load = first["activate"]
        job(backend, "lou", 0)
        log_first = time.perf_counter() - started
        rss_before = common.memory_mb(os.getpid())["VmRSS"]
        switch_runs = series(backend, list(USERS), args.images)
        rss_after = common.memory_mb(os.getpid())["VmRSS"]
        resident = len(backend._adapters.resident)
        same_runs = series(backend, ["gaby"], args.images)
        backend.close()
    med = common.median
    image = med([r["total"] for r in base_runs])
    with_lora = med([r["total"] for r in same_runs])
    switch = med([r["plan"] + r["activate"] for r in switch_runs])
    same = med([r["plan"] + r["activate"] for r in same_runs])
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "params": vars(args),
        "seconds": {"image_base": image, "image_with_lora": with_lora, "switch": switch, "same_user": same,
                    "first_load": first_load, "first_two_jobs": log_first},
        "switch_over_image": switch / image,
        "leak_check": {"rss_mb_before_switch_series": rss_before, "rss_mb_after": rss_after,
                       "adapters_resident_after": resident},
        "target": TARGET, "verdict": common.verdict(switch / image < TARGET),
        "runs": {"base": base_runs, "switch": switch_runs, "same": same_runs},
    }
    path = common.save("lora_switch", result)
    print(f"image (base) {image * 1000:.1f} ms, with one LoRA {with_lora * 1000:.1f} ms; switch {switch * 1000:.2f} ms"
          f" ({100 * switch / image:.2f} % of an image, target < {100 * TARGET:.0f} %: {result['verdict']}); "
          f"same user {same * 1000:.2f} ms; first load {first_load * 1000:.0f} ms; RSS {rss_before:.0f} -> "
          f"{rss_after:.0f} MB over {args.images} switching jobs, {resident} adapters resident  -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
