"""Machine-readable marks on what a generative model made: IPTC ``DigitalSourceType`` in XMP, and an
optional C2PA manifest signed with the operator's certificate (``provenance.c2pa``).

XMP is written by :mod:`astrowatch.storage.images` while the result is encoded (PNG: an ``iTXt``
chunk ``XML:com.adobe.xmp``; JPEG and WebP: Pillow's ``xmp=``), next to the A1111 infotext.  The
C2PA manifest is added last (:meth:`C2paSigner.sign`): any later change to the bytes would break its
hard binding, so it is signed before the result's sha256 is recorded at publish.

``c2pa-python`` (extra ``provenance``) is imported only here, inside the functions that sign, so
the CLI and the daemon core stay light.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from astrowatch.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import C2paConfig

IPTC_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED = SOURCE_TYPES + "trainedAlgorithmicMedia"  # made by a trained model from a prompt
COMPOSITE = SOURCE_TYPES + "compositeWithTrainedAlgorithmicMedia"  # a capture changed by generative AI
XMP_KEY = "XML:com.adobe.xmp"  # the PNG iTXt keyword of an XMP packet
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
CLAIM_GENERATOR = {"name": "astrowatch", "version": "0.1.0"}
_SOURCE_RE = re.compile(rb'Iptc4xmpExt:DigitalSourceType="([^"]{1,200})"')
MAX_PEM_BYTES = 1 << 20
INGREDIENT_LABEL = "source-photo"


def xmp_packet(*, source_type: str | None = None, meta_text: str | None = None) -> bytes:
    """One XMP packet: the IPTC digital source type and/or our JSON (``astrowatch:meta``, which
    :func:`astrowatch.storage.images.read_png_meta` finds in a WebP)."""
    attrs = []
    if source_type:
        attrs.append(f' xmlns:Iptc4xmpExt="{IPTC_NS}" Iptc4xmpExt:DigitalSourceType="{escape(source_type)}"')
    if meta_text is not None:
        quoted = escape(meta_text, {'"': "&quot;"})
        attrs.append(f' xmlns:astrowatch="https://astrowatch.invalid/ns/1.0/" astrowatch:meta="{quoted}"')
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about=""{"".join(attrs)}/>'
            '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


def png_with_xmp(png: bytes, xmp: bytes) -> bytes:
    """``png`` with an uncompressed ``iTXt`` ``XML:com.adobe.xmp`` chunk after IHDR (the XMP spec's
    place for it), for bytes that arrived encoded (a remote worker's PNG)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    data = XMP_KEY.encode("latin-1") + b"\0\0\0\0\0" + xmp
    chunk = struct.pack(">I", len(data)) + b"iTXt" + data + struct.pack(">I", zlib.crc32(b"iTXt" + data))
    end_ihdr = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    return png[:end_ihdr] + chunk + png[end_ihdr:]


def xmp_of(data: bytes) -> bytes | None:
    """The XMP packet of a PNG, JPEG or WebP (as Pillow finds it), or None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            raw = img.info.get("xmp") or img.info.get(XMP_KEY)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    if isinstance(raw, str):
        return raw.encode("utf-8")
    return raw if isinstance(raw, bytes) else None


def source_type_of(data: bytes) -> str | None:
    """The IPTC digital source type URI an image declares in its XMP, or None."""
    xmp = xmp_of(data)
    m = _SOURCE_RE.search(xmp) if xmp else None
    return m.group(1).decode("utf-8", "replace") if m else None


# -- C2PA --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ingredient:
    """What an edit started from (the source photo of an enhanced result)."""

    data: bytes
    mime: str
    title: str


def _read_pem(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the C2PA {what}: {exc.strerror}",
                          hint="provenance.c2pa.cert_file / key_file name PEM files the service user reads") from None
    if len(data) > MAX_PEM_BYTES or b"-----BEGIN " not in data:
        raise ConfigError(f"{path}: the C2PA {what} is not a PEM file",
                          hint="see docs/provenance.md: a PEM chain, leaf certificate first, and its private key")
    return data


class C2paSigner:
    """The operator's C2PA signer, loaded once (:func:`load_signer`) and used for every result."""

    def __init__(self, cfg: C2paConfig) -> None:
        assert cfg.cert_file is not None and cfg.key_file is not None
        self.cert_file, self.key_file = Path(cfg.cert_file), Path(cfg.key_file)
        self.alg = cfg.alg
        self.tsa_url = cfg.tsa_url
        self._cert = _read_pem(self.cert_file, "certificate chain")
        self._key = _read_pem(self.key_file, "private key")
        self._check_pair()

    def _signer(self) -> Any:
        import c2pa

        info = c2pa.C2paSignerInfo(alg=self.alg.encode(), sign_cert=self._cert, private_key=self._key,
                                   ta_url=self.tsa_url.encode() if self.tsa_url else None)
        return c2pa.Signer.from_info(info)

    def _check_pair(self) -> None:
        """Sign a 1-pixel PNG now, so a bad key, a certificate c2pa refuses or a key that is not the
        certificate's stops the daemon at start, naming the files, not at the first result."""
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (1, 1)).save(buf, format="PNG")
        try:
            self.sign(buf.getvalue(), "png", source_type=TRAINED, title="check")
        except ConfigError:
            raise
        except Exception as exc:  # c2pa raises its own error classes (and ValueError for a bad PEM)
            raise ConfigError(f"{self.cert_file} / {self.key_file}: c2pa refuses this certificate or key: {exc}",
                              hint="an end-entity certificate (not self-signed) with digitalSignature and an "
                                   "EKU c2pa accepts (emailProtection, documentSigning), its chain after it, "
                                   "and the matching private key; see docs/provenance.md") from None

    def manifest(self, *, source_type: str, title: str, edited: bool) -> dict[str, Any]:
        action: dict[str, Any] = {"action": "c2pa.edited" if edited else "c2pa.created",
                                  "digitalSourceType": source_type,
                                  "softwareAgent": dict(CLAIM_GENERATOR)}
        actions = [action]
        if edited:  # an edit starts by opening its source (the parentOf ingredient)
            actions.insert(0, {"action": "c2pa.opened", "parameters": {"ingredientIds": [INGREDIENT_LABEL]}})
        return {"claim_generator_info": [dict(CLAIM_GENERATOR)], "title": title,
                "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}]}

    def sign(self, data: bytes, fmt: str, *, source_type: str, title: str,
             ingredient: Ingredient | None = None) -> bytes:
        """``data`` (a PNG, JPEG or WebP) with a manifest: ``c2pa.created`` (a portrait) or, with an
        ``ingredient``, ``c2pa.edited`` from that source photo."""
        import c2pa

        try:
            mime = MIME[fmt]
        except KeyError:
            raise ValueError(f"C2PA: unsupported format {fmt!r}") from None
        edited = source_type == COMPOSITE and ingredient is not None
        # no thumbnail in the manifest: it would be a second copy of the picture (+100 KB to 2 MB)
        context = c2pa.Context(c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))
        builder = c2pa.Builder(json.dumps(self.manifest(source_type=source_type, title=title, edited=edited)), context)
        try:
            if ingredient is not None:
                builder.add_ingredient(json.dumps({"title": ingredient.title, "relationship": "parentOf",
                                                   "label": INGREDIENT_LABEL}),
                                       ingredient.mime, io.BytesIO(ingredient.data))
            signer = self._signer()
            try:
                dest = io.BytesIO()
                builder.sign(signer, mime, io.BytesIO(data), dest)
            finally:
                signer.close()
        finally:
            builder.close()
        return dest.getvalue()


def load_signer(cfg: C2paConfig) -> C2paSigner | None:
    """The configured signer, checked now (:class:`ConfigError` naming the file), or None when
    ``provenance.c2pa`` names no certificate."""
    if cfg.cert_file is None and cfg.key_file is None:
        return None
    if cfg.cert_file is None or cfg.key_file is None:
        raise ConfigError("provenance.c2pa: cert_file and key_file go together (a PEM chain and its private key)")
    if importlib.util.find_spec("c2pa") is None:
        raise ConfigError("provenance.c2pa.cert_file is set but c2pa-python is not installed",
                          hint="pip install 'astrowatch[provenance]'")
    return C2paSigner(cfg)


def sniff_mime(data: bytes) -> str | None:
    """The MIME type of a PNG, JPEG or WebP by its first bytes (an ingredient's)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
