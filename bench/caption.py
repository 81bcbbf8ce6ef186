"""Caption time per photo on CPU: the WD14 tagger, the BLIP captioner and the whole caption step.

    .venv/bin/python bench/caption.py [--photos 20] [--side 1600] [--threads 2]
                                      [--blip DIR] [--tagger DIR] [--device cpu|cuda]

Without ``--blip``/``--tagger`` the tiny offline models of ``tests/support/caption_tiny.py`` run (a
random BLIP with hidden size 32; the WD14 stand-in at the real v3 input size, 448), which measures
astrowatch's own cost around the model (white padding, resize, BGR, the ONNX session, the BLIP
processor, tag selection, composing line 1), not a real model's.  Pass downloaded folders
(``Salesforce/blip-image-captioning-base``, ``SmilingWolf/wd-vit-tagger-v3``) for real figures.
Per photo: ``tag``, ``caption`` and ``step`` (both + line 1, what a job adds after the upscale),
medians after one warm-up photo; ``load`` once.  Writes bench/out/caption.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
import common


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--side", type=int, default=1600, help="long side of the test photos (px)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (onnxruntime: its default)")
    ap.add_argument("--blip", type=Path, help="a BLIP save_pretrained folder (default: the tiny one)")
    ap.add_argument("--tagger", type=Path, help="a WD14 folder (default: the stand-in at 448 px)")
    ap.add_argument("--device", default="cpu")
    args = common.parse_args(ap, argv, photos=3, side=256)

    import numpy as np
    import torch
    from PIL import Image

    from astrowatch.backends.caption.local import BlipCaptioner
    from astrowatch.backends.caption.text import CaptionSettings, Line
    from astrowatch.backends.caption.wd14 import Wd14Tagger

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        from caption_tiny import build_blip, build_wd14

        blip_dir = args.blip or build_blip(Path(tmp) / "blip")
        tagger_dir = args.tagger or build_wd14(Path(tmp) / "wd14", size=448)
        t0 = time.perf_counter()
        tagger = Wd14Tagger(tagger_dir, args.device)
        load_tagger = time.perf_counter() - t0
        t0 = time.perf_counter()
        blip = BlipCaptioner(str(blip_dir), args.device, 48)
        load_blip = time.perf_counter() - t0
        settings = CaptionSettings(captioner="blip", captioner_model=str(blip_dir), captioner_prompt=None,
                                   tagger="wd14", tagger_model=str(tagger_dir), general_threshold=0.35,
                                   character_threshold=0.85, max_tags=40)
        rng = np.random.default_rng(0)
        runs = []
        for i in range(args.photos + 1):
            pixels = rng.integers(0, 255, (args.side * 3 // 4, args.side, 3), dtype=np.uint8)
            photo = Image.fromarray(pixels, "RGB")
            t0 = time.perf_counter()
            tags, _ratings = tagger.tag(photo, settings)
            t1 = time.perf_counter()
            caption = blip.caption(photo, None)
            t2 = time.perf_counter()
            Line("ohwx", caption, [t.name for t in tags]).text()
            t3 = time.perf_counter()
            if i:  # the first photo warms the sessions up
                runs.append({"tag": t1 - t0, "caption": t2 - t1, "step": t3 - t0})
    med = common.median
    figures = {k: med([r[k] for r in runs]) for k in ("tag", "caption", "step")}
    result = {"command": " ".join([sys.executable, *sys.argv]), "params": {k: str(v) for k, v in vars(args).items()},
              "models": {"blip": str(args.blip or "tiny (random, hidden 32)"),
                         "tagger": str(args.tagger or "stand-in at 448 px")},
              "load_seconds": {"tagger": load_tagger, "blip": load_blip}, "seconds_per_photo": figures, "runs": runs}
    path = common.save("caption", result)
    print(f"{args.photos} photos {args.side}x{args.side * 3 // 4} on {args.device}: tag {figures['tag'] * 1000:.1f} ms, "
          f"caption {figures['caption'] * 1000:.1f} ms, step {figures['step'] * 1000:.1f} ms per photo "
          f"(load: tagger {load_tagger:.2f} s, blip {load_blip:.2f} s) -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
