"""A result is encoded once: the cache entry holds the pixel PNG without anyone's chunks, the inbox
result is those bytes plus the job's own text chunks, and a cache hit for another job carries that
job's metadata, not the first one's."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from PIL import Image

from astrowatch.backends.pool import BackendPool
from astrowatch.core.jobs import JobKind, JobState
from astrowatch.pipeline.publish import write_outputs
from astrowatch.pipeline.steps import JobContext, _cache_paths, enhance_image
from astrowatch.runtime.settings import config_from_mapping
from astrowatch.storage.images import PNG_META_KEY, png_pixels_only, read_png_meta
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Job


def _setup(tmp_path: Path) -> tuple[JobContext, BackendPool, Path]:
    config = config_from_mapping({"data_dir": "data", "enhance": {"backend": "lanczos", "min_side": 16}},
                                 base_dir=tmp_path)
    layout = Layout(config.data_dir)
    layout.ensure()
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (10, 120, 200)).save(photo)
    pool = BackendPool(config, device="cpu")
    return JobContext(config, layout, pool.get), pool, photo


def _publish(ctx: JobContext, photo: Path, job_id: str, user: str) -> tuple[bytes, dict[str, Any]]:
    job = Job(id=job_id, kind=JobKind.ENHANCE, user=user, source=f"Utilisateurs/{user}/photo.png",
              source_sha256="0" * 64, state=JobState.RUNNING)
    out = enhance_image(photo, ctx, job_id=job_id, user=user, params={}, default_backend="lanczos",
                        fallback_seed=1)
    sidecar = write_outputs(job, ctx.layout, out, {})
    return (ctx.layout.work_dir(job_id) / sidecar["image"]).read_bytes(), out.extra


def test_a_cache_hit_carries_its_own_jobs_metadata(tmp_path: Path) -> None:
    ctx, pool, photo = _setup(tmp_path)
    first, extra_a = _publish(ctx, photo, "a" * 12, "alice")
    second, extra_b = _publish(ctx, photo, "b" * 12, "bob")
    assert (extra_a["cache"], extra_b["cache"]) == ("miss", "hit")
    assert read_png_meta(first)["job_id"] == "a" * 12  # type: ignore[index]
    meta_b = read_png_meta(second)
    assert meta_b is not None and meta_b["job_id"] == "b" * 12 and meta_b["user"] == "bob"
    assert b"alice" not in second and b"a" * 12 not in second

    cached_png, _ = _cache_paths(ctx.layout, extra_a["cache_key"])
    cached = cached_png.read_bytes()
    assert png_pixels_only(first) == cached == png_pixels_only(second)  # one encode, the same pixel bytes
    with Image.open(io.BytesIO(cached)) as img, Image.open(io.BytesIO(first)) as inbox:
        assert PNG_META_KEY not in img.info and "parameters" not in img.info
        assert img.tobytes() == inbox.tobytes()
    assert b"alice" not in cached and b"a" * 12 not in cached  # nothing personal in the cache
    st, work = os.stat(cached_png), os.stat(ctx.layout.work_dir("a" * 12) / f"photo.{'a' * 12}.png")
    assert st.st_nlink == 1 and work.st_nlink == 1 and st.st_ino != work.st_ino  # two files, not a link
    pool.close()


def test_chunks_planted_in_a_cache_entry_do_not_reach_the_inbox(tmp_path: Path) -> None:
    ctx, pool, photo = _setup(tmp_path)
    _, extra = _publish(ctx, photo, "c" * 12, "carol")
    cached_png, _ = _cache_paths(ctx.layout, extra["cache_key"])
    from astrowatch.storage.images import png_with_text

    cached_png.write_bytes(png_with_text(cached_png.read_bytes(), {PNG_META_KEY: '{"job_id": "forged"}'}))
    data, extra_d = _publish(ctx, photo, "d" * 12, "dan")
    assert extra_d["cache"] == "hit" and b"forged" not in data
    assert read_png_meta(data)["job_id"] == "d" * 12  # type: ignore[index]
    pool.close()
