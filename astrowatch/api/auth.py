"""The API token and the loopback rule, shared by ``astrowatch api`` and ``astrowatch ui``.

The token comes from ``$ASTROWATCH_API_TOKEN``, else the systemd credential ``api_token``
(``$CREDENTIALS_DIRECTORY/api_token``, see ``LoadCredential=``), else ``api.token_file``.  It
is compared in constant time and never logged, echoed or written anywhere.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING

from astrowatch.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config

TOKEN_ENV = "ASTROWATCH_API_TOKEN"
CREDENTIAL = "api_token"
MIN_TOKEN_CHARS = 16
MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def load_token(config: Config) -> str | None:
    """The configured token, or ``None`` when there is none anywhere."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return _checked(env, f"${TOKEN_ENV}")
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / CREDENTIAL).is_file():
        return _read(Path(creds) / CREDENTIAL, f"systemd credential {CREDENTIAL!r}")
    if config.api.token_file is not None:
        path = config.api.token_file
        if not path.is_absolute() and config.source is not None:
            path = config.source.parent / path
        return _read(path, "api.token_file")
    return None


def _read(path: Path, what: str) -> str:
    """Checked like the config (owned by the service user or root, writable by nobody else)."""
    from astrowatch.core.secrets import read_secret_file

    return _checked(read_secret_file(path, what), f"{what} ({path})")


def _checked(token: str, what: str) -> str:
    from astrowatch.core.secrets import remember

    remember(token)
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(f"{what}: the API token must be at least {MIN_TOKEN_CHARS} characters without spaces",
                          hint=f"make one with {MAKE_ONE}")
    return token


def is_loopback(host: str) -> bool:
    """True only for addresses that cannot be reached from another machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def require_token_off_loopback(host: str, token: str | None, command: str) -> None:
    """Refuse (exit 78, one line) to listen beyond this machine without a token."""
    if token is None and not is_loopback(host):
        raise ConfigError(f"refusing to listen on {host} without an API token",
                          hint=f"set ${TOKEN_ENV}, the systemd credential {CREDENTIAL!r} or api.token_file "
                               f"(make one with {MAKE_ONE}), or run '{command} --host 127.0.0.1'")


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison (no early exit on the first differing character)."""
    return hmac.compare_digest((given or "").encode("utf-8"), token.encode("utf-8"))


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
