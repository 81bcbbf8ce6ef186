"""Helpers for the OpenAI Images backend: the API key, retry timing, error bodies, decoding.

Kept apart from :mod:`astrowatch.backends.openai.backend` so each module stays small; nothing
here sends a request.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import io
import logging
import os
import random
import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.exceptions
from requests.auth import AuthBase

from astrowatch.core.errors import BackendError, BackendUnavailable, ConfigError, PermanentBackendError
from astrowatch.core.formats import sniff

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

log = logging.getLogger("astrowatch.backends.openai_images")

KEY_ENV = "OPENAI_API_KEY"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
CREDENTIAL_NAME = "openai_api_key"
KEY_HINT = "set OPENAI_API_KEY, or openai.api_key_file, or systemd LoadCredential=openai_api_key:<file>"
_KEYLIKE = re.compile(r"\b(sk|sess)-[A-Za-z0-9_*\-]{3,}")


# -- the key ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApiKey:
    """The key and where it came from; ``repr``/``str`` never show the value."""

    value: str = field(repr=False)
    source: str  # "env" | "file" | "credential"
    origin: str  # "$OPENAI_API_KEY" or the file's path

    def __str__(self) -> str:
        return f"<API key from {self.source}: {self.origin}>"


class BearerAuth(AuthBase):
    """Sets ``Authorization: Bearer``; passing it also stops requests from using ~/.netrc."""

    def __init__(self, key: ApiKey) -> None:
        self._key = key

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._key.value}"
        return r

    def __repr__(self) -> str:
        return "<BearerAuth redacted>"


def _checked_key(value: str, origin: str) -> str:
    value = value.strip()
    if not value:
        raise ConfigError(f"OpenAI API key from {origin} is empty", hint=KEY_HINT)
    if not all(33 <= ord(c) < 127 for c in value):
        raise ConfigError(f"OpenAI API key from {origin} contains spaces or non-ASCII characters; "
                          "the file must hold the key alone")
    return value


def _read_key_file(path: Path) -> str:
    from astrowatch.core.secrets import read_secret_file

    try:
        text = read_secret_file(path, "the OpenAI API key file")
        mode = path.stat().st_mode
    except ConfigError as exc:
        raise ConfigError(exc.message, hint=exc.hint or KEY_HINT) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the OpenAI API key file {path}: {exc.strerror}", hint=KEY_HINT) from None
    if mode & 0o004:
        log.warning("openai: the API key file %s is world-readable; chmod 600 it", path)
    return _checked_key(text, str(path))


def resolve_api_key(key_file: Path | None, environ: Mapping[str, str] | None = None) -> ApiKey:
    """``$OPENAI_API_KEY`` wins, then ``openai.api_key_file``, then the systemd credential."""
    env = os.environ if environ is None else environ
    if env.get(KEY_ENV, "").strip():
        from astrowatch.core.secrets import remember

        value = _checked_key(env[KEY_ENV], f"${KEY_ENV}")
        remember(value)
        return ApiKey(value, "env", f"${KEY_ENV}")
    if key_file is not None:
        return ApiKey(_read_key_file(key_file), "file", str(key_file))
    cred_dir = env.get(CREDENTIALS_ENV)
    if cred_dir and (Path(cred_dir) / CREDENTIAL_NAME).exists():
        path = Path(cred_dir) / CREDENTIAL_NAME
        return ApiKey(_read_key_file(path), "credential", str(path))
    raise ConfigError("astro.backend is 'openai' but no OpenAI API key was found "
                      "(OPENAI_API_KEY is unset and openai.api_key_file is not configured)", hint=KEY_HINT)


def redact(text: str, key: ApiKey | None) -> str:
    """Remove the key, and anything shaped like an OpenAI key, from server-supplied text."""
    from astrowatch.core.secrets import redact as redact_known

    if key is not None and key.value:
        text = text.replace(key.value, "[redacted]")
    text = redact_known(text)
    return _KEYLIKE.sub(lambda m: f"{m.group(1)}-[redacted]", text)


def safe_url(url: str) -> str:
    """``url`` without any ``user:password@`` (for describe() and messages)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = f"{parts.hostname or ''}:{parts.port}" if parts.port else (parts.hostname or "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -- retry helpers ----------------------------------------------------------------------------
def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (delta-seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis and millis.replace(".", "", 1).isdigit():
        return float(millis) / 1000.0
    raw = (headers.get("retry-after") or "").strip()
    if not raw or raw.replace(".", "", 1).isdigit():
        return float(raw) if raw else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Jittered exponential back-off (attempt 0, 1, ...), never shorter than ``retry_after``."""
    delay = min(cap, base * (2.0 ** attempt)) * random.uniform(0.5, 1.0)
    return delay if retry_after is None else max(delay, retry_after)


@dataclass
class Transient:
    """A failed attempt that may be retried here (nothing billed, or the service said so)."""

    message: str
    retry_after: float | None = None
    unavailable: bool = False

    def final(self, attempts: int) -> BackendError:
        text = f"{self.message} (gave up after {attempts} attempt{'s' if attempts > 1 else ''})"
        return BackendUnavailable(text) if self.unavailable else BackendError(text)


def failed_before_sending(exc: requests.ConnectionError) -> bool:
    """True when the connection was never made, so the POST cannot have reached the service."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3 MaxRetryError -> its cause
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def error_fields(resp: requests.Response) -> tuple[str, str | None, str | None]:
    """(message, type, code) from an ``{"error": {...}}`` body, tolerating other bodies."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or f"HTTP {resp.status_code}")
        etype, code = err.get("type"), err.get("code")
        return message, (str(etype) if etype else None), (str(code) if code else None)
    snippet = " ".join(resp.text[:200].split())
    message = f"HTTP {resp.status_code} {resp.reason}: {snippet}" if snippet else f"HTTP {resp.status_code}"
    return message, None, None


def decode_b64_image(b64: str, *, max_bytes: int, max_pixels: int) -> Image:
    """Decode the service's base64 image, with the same limits as dropped images."""
    from PIL import Image as PILImage

    if len(b64) // 4 * 3 > max_bytes:
        raise PermanentBackendError(f"the returned image is over limits.max_image_bytes={max_bytes}")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise BackendError("the service returned b64_json that is not valid base64") from None
    if sniff(raw[:16]) is None:
        raise BackendError("the service returned data that is not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            img = PILImage.open(io.BytesIO(raw))
            if img.width * img.height > max_pixels:
                raise PermanentBackendError(f"the returned image ({img.width}x{img.height}) is over "
                                            f"limits.max_image_pixels={max_pixels}")
            img.load()
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError,
            PILImage.DecompressionBombWarning) as exc:
        raise BackendError(f"cannot decode the returned image: {type(exc).__name__}") from None
    return img
