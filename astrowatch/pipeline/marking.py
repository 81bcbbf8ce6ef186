"""Which results say they are generated, and how (``provenance``, see ``docs/provenance.md``).

- a portrait from a generative backend (``sdxl``, ``sdapi``, ``openai``; ``fake``, which stands in
  for them in tests): IPTC ``trainedAlgorithmicMedia``, C2PA ``c2pa.created``;
- a photo an img2img / "SD upscale" pass changed (``denoising_strength`` or ``strength`` above 0 on
  ``sdapi``, ``sdxl``, ``fake``): ``compositeWithTrainedAlgorithmicMedia``, C2PA ``c2pa.edited``
  with the source photo as ingredient;
- the chart wheel, a Lanczos or an ESRGAN-only upscale: not marked (no generative model).

The marks are made where the result is encoded (:func:`astrowatch.pipeline.publish.write_outputs`,
the coordinator under Celery: the key stays on one host), before its sha256 is recorded.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from astrowatch.core.jobs import BackendName, JobKind
from astrowatch.storage.provenance import COMPOSITE, TRAINED, C2paSigner, Ingredient, load_signer

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.backends.base import Result
    from astrowatch.core.config import Config, ProvenanceConfig
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job

INGREDIENT_MAX_BYTES = 256 << 20

GENERATIVE_ASTRO = frozenset({BackendName.SDXL, BackendName.SDAPI, BackendName.OPENAI, BackendName.FAKE})
IMG2IMG_ENHANCE = frozenset({BackendName.SDXL, BackendName.SDAPI, BackendName.FAKE})
_STRENGTH_KEYS = ("denoising_strength", "strength")


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def source_type(kind: str, result: Result) -> str | None:
    """The IPTC digital source type of a result, or None when no generative model touched it."""
    if kind == JobKind.ASTRO:
        return TRAINED if result.backend in GENERATIVE_ASTRO else None
    if result.backend in IMG2IMG_ENHANCE and any(_positive(result.params.get(k)) for k in _STRENGTH_KEYS):
        return COMPOSITE
    return None


class Marker:
    """The marks one config asks for: the XMP source type, and the C2PA signer when configured."""

    def __init__(self, cfg: ProvenanceConfig) -> None:
        self.mark = cfg.mark
        self.signer: C2paSigner | None = load_signer(cfg.c2pa)

    def describe(self) -> str:
        if not self.mark:
            return "off (provenance.mark: false)"
        c2pa = f"C2PA signed with {self.signer.cert_file} ({self.signer.alg})" if self.signer else "no C2PA manifest"
        return f"IPTC DigitalSourceType in XMP; {c2pa}"

    def source_type(self, kind: str, result: Result) -> str | None:
        return source_type(kind, result) if self.mark else None

    def sign(self, data: bytes, fmt: str, *, source_type: str | None, title: str,
             ingredient: Ingredient | None = None) -> bytes:
        """``data`` with a C2PA manifest when a signer is configured and the image is marked."""
        if self.signer is None or source_type is None:
            return data
        return self.signer.sign(data, fmt, source_type=source_type, title=title,
                                ingredient=ingredient if source_type == COMPOSITE else None)


_cache: dict[str, Marker] = {}
_lock = threading.Lock()


def marker_for(config: Config) -> Marker:
    """One :class:`Marker` per provenance settings (a reload with new files loads them again)."""
    key = config.provenance.model_dump_json()
    with _lock:
        marker = _cache.get(key)
        if marker is None:
            marker = _cache[key] = Marker(config.provenance)
        return marker


def source_ingredient(job: Job, layout: Layout) -> Ingredient | None:
    """The photo an enhance job started from (still dropped, or archived with the job or its
    parent), read through :mod:`astrowatch.storage.safefs` and checked against the job's sha256."""
    from astrowatch.storage import safefs
    from astrowatch.storage.provenance import sniff_mime

    candidates = [layout.abs(job.source), layout.archive_dir(job.user, job.id) / job.source_name]
    if job.parent_id:
        candidates.append(layout.archive_dir(job.user, job.parent_id) / job.source_name)
    for path in candidates:
        try:
            snap = safefs.read_bytes(path, root=layout.root, max_bytes=INGREDIENT_MAX_BYTES, what="source photo")
        except safefs.Unreadable:
            continue
        mime = sniff_mime(snap.data)
        if snap.sha256 == job.source_sha256 and mime is not None:
            return Ingredient(snap.data, mime, job.source_name)
    return None
