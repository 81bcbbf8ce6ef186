"""The caption step on the CPU backend: line 1 = trigger, the tiny BLIP's caption, the WD14
stand-in's tags over their thresholds; the sidecar record; a redo with other thresholds or another
captioner re-captions from the cache; what is filed is line 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caption_tiny import BLIP_WORDS
from PIL import Image

from astrowatch.backends.pool import BackendPool
from astrowatch.pipeline.delivery import caption_line
from astrowatch.pipeline.steps import JobContext, enhance_image
from astrowatch.runtime.settings import config_from_mapping
from astrowatch.storage.layout import Layout

TAGS = ["hatsune miku", "red dominant", "long hair", "^_^", "simple background"]


def setup(tmp_path: Path, **caption: Any) -> tuple[JobContext, BackendPool, Path]:
    config = config_from_mapping({"data_dir": "data", "enhance": {"backend": "lanczos", "min_side": 16},
                                  "dataset": {"trigger_word": "ohwx"}, "caption": caption}, base_dir=tmp_path)
    layout = Layout(config.data_dir)
    layout.ensure()
    pool = BackendPool(config, device="cpu")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(photo)  # plain red: the stand-in's red_dominant scores 0.98
    return JobContext(config, layout, pool.get), pool, photo


def run(ctx: JobContext, photo: Path, params: dict[str, Any] | None = None) -> Any:
    return enhance_image(photo, ctx, job_id="a" * 12, user="gaby", params=params or {},
                         default_backend="lanczos", fallback_seed=1)


def test_blip_and_wd14_make_line_one(tmp_path: Path, tiny_blip: Path, tiny_wd14: Path) -> None:
    ctx, pool, photo = setup(tmp_path, captioner="blip", captioner_model=str(tiny_blip), tagger="wd14",
                             tagger_model=str(tiny_wd14), undesired_tags=["simple_background"])
    out = run(ctx, photo)
    lines = out.result.description.splitlines()
    words = [w.strip() for w in lines[0].split(",")]
    assert words[0] == "ohwx"
    caption = out.extra["captions"]["caption"]
    assert caption and set(caption.split()) <= set(BLIP_WORDS) and words[1] == caption
    assert words[2:] == TAGS[:-1]  # the undesired tag is gone, the rating never written
    assert lines[1].startswith("photo, color, 80x80")  # the technical description follows, off line 1
    rec = out.extra["captions"]
    assert rec["captioner"]["name"] == "blip" and rec["captioner"]["folder"] == str(tiny_blip)
    assert len(rec["captioner"]["sha256"]) == 64 and rec["tagger"]["sha256"]
    assert rec["tagger"]["folder"] == str(tiny_wd14) and rec["general_threshold"] == 0.35
    assert [t["tag"] for t in rec["tags"]] == TAGS[:-1] and rec["ratings"] == {"general": 0.95}
    assert caption_line(out.result.description, "ohwx") == lines[0]
    service = pool._backends["caption"]
    assert out.extra["cache"] == "miss"

    # a redo with another threshold: the cached upscale, the same loaded models, other tags
    again = run(ctx, photo, {"general_threshold": 0.8, "captioner": "none"})
    assert again.extra["cache"] == "hit" and pool._backends["caption"] is service
    assert again.result.description.splitlines()[0] == "ohwx, hatsune miku, red dominant, long hair"
    assert again.params["general_threshold"] == 0.8 and again.params["captioner"] == "none"
    pool.close()


def test_no_captioner_no_tagger_keeps_the_trigger_only(tmp_path: Path) -> None:
    ctx, pool, photo = setup(tmp_path)
    out = run(ctx, photo)
    lines = out.result.description.splitlines()
    assert lines[0] == "ohwx" and lines[1].startswith("photo, color")
    assert out.extra["captions"]["captioner"] == {"name": "none"}
    assert out.extra["captions"]["why"].startswith("auto:")
    assert "caption" not in pool._backends  # nothing to load


def test_the_webui_interrogates_only_when_it_is_the_captioner(tmp_path: Path) -> None:
    """On the WebUI backend, its own interrogate runs once for the ``sdapi`` captioner (line 1 takes
    it), and not at all when another captioner (here ``none``) writes line 1."""
    from sdapi_support import FakeWebUI, make_config

    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(photo)
    for captioner, calls in (("auto", 1), ("none", 0)):
        with FakeWebUI() as server:
            config = make_config(server.url, tmp_path,  # data_dir: the default data/ under tmp_path
                                 enhance={"backend": "sdapi", "min_side": 16, "caption_model": "clip"},
                                 dataset={"trigger_word": "ohwx"}, caption={"captioner": captioner})
            layout = Layout(config.data_dir)
            layout.ensure()
            pool = BackendPool(config, device="cpu")
            out = enhance_image(photo, JobContext(config, layout, pool.get), job_id="b" * 12, user="gaby",
                                params={}, default_backend="sdapi", fallback_seed=1)
            pool.close()
            assert server.posts["/sdapi/v1/interrogate"] == calls, captioner
        first = out.result.description.splitlines()[0]
        assert (first != "ohwx") == bool(calls) and out.extra["captions"]["captioner"]["name"] == (
            "sdapi" if calls else "none")
