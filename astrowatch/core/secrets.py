"""The files only the service may change, and the secret values nobody may see.

:func:`check_private_file` is the one check of a file the service trusts: its config and every
secret file it reads (``openai.api_key_file``, ``api.token_file``, ``celery.password_file``,
``sdapi.auth_file`` and their systemd credentials).  Such a file must be owned by the service user
(the effective uid) or root, and writable by nobody else: a group member who can write the config
can point ``openai.base_url`` at their own server and receive the key.  The documented install,
``/etc/astrowatch/config.yaml`` ``root:astrowatch`` ``0640``, passes.

:func:`read_secret_file` checks and reads a secret from the same descriptor, and remembers the value;
:func:`redact` takes every remembered value out of a text (log lines, error messages, status).
"""

from __future__ import annotations

import os
import pwd
import stat
import threading
from pathlib import Path

from astrowatch.core.errors import ConfigError

REDACTED = "[redacted]"
MAX_SECRET_BYTES = 64 * 1024
_MIN_REDACTED_CHARS = 4  # shorter values (a one-letter password) would blank out ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def private_problem(path: Path, st: os.stat_result, what: str, *, fix_mode: int = 0o600,
                    euid: int | None = None) -> ConfigError | None:
    """Why ``st`` (the file at ``path``) may not be trusted as ``what``, or ``None`` when it may."""
    euid = os.geteuid() if euid is None else euid
    if st.st_uid not in (euid, 0):
        return ConfigError(
            f"{path}: {what} is owned by {_user(st.st_uid)}, not by the service user ({_user(euid)}) "
            "or root: its owner could change it",
            hint=f"chown {_user(euid)} {path}   (or: chown root {path})")
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable:
        who = " and ".join(w for w, bit in (("its group", stat.S_IWGRP), ("others", stat.S_IWOTH))
                           if writable & bit)
        return ConfigError(
            f"{path}: {what} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}): "
            "only its owner may change it",
            hint=f"chmod {fix_mode:o} {path}")
    return None


def check_private_file(path: str | os.PathLike[str], what: str, *, fix_mode: int = 0o600) -> None:
    """Raise :class:`ConfigError` (exit 78), naming the file and the fix, unless ``path`` is owned
    by the effective uid or root and writable by nobody else.  A missing file is left to the reader."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{p}: cannot check {what}: {exc.strerror}") from None
    problem = private_problem(p, st, what, fix_mode=fix_mode)
    if problem is not None:
        raise problem


def read_secret_file(path: str | os.PathLike[str], what: str) -> str:
    """The stripped text of a secret file, read from one descriptor that passed
    :func:`private_problem` (not a FIFO, not huge); the value is then redacted everywhere."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {p}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SECRET_BYTES:
            raise ConfigError(f"{what}: {p} is not a small regular file")
        problem = private_problem(p, st, what)
        if problem is not None:
            raise problem
        data = fh.read(MAX_SECRET_BYTES + 1)
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {p} is not UTF-8 text") from None
    remember(text)
    return text


def remember(*values: str | None) -> None:
    """Add secret values (keys, tokens, passwords) to those :func:`redact` removes."""
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= _MIN_REDACTED_CHARS)


def redact(text: str) -> str:
    """``text`` with every remembered secret replaced by ``[redacted]`` (longest first)."""
    with _lock:
        values = sorted(_secrets, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


# -- passwords in service URLs (``celery.broker_url``: ``redis://user:pw@host/0``, ``?password=``) --
_URL_PASSWORD_KEYS = ("password",)
_URL_USER_KEYS = ("username",)


def url_credentials(url: str) -> tuple[str | None, str | None]:
    """``(username, password)`` of a URL, from its ``user:password@`` or its ``?username=``/``?password=``
    (percent-decoded), each None when absent."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    user = user or next((query[k] for k in _URL_USER_KEYS if query.get(k)), None)
    password = password or next((query[k] for k in _URL_PASSWORD_KEYS if query.get(k)), None)
    return user, password


def without_credentials(url: str) -> str:
    """``url`` without ``user:password@`` and without ``username``/``password`` query parameters."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in _URL_PASSWORD_KEYS + _URL_USER_KEYS]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))


def redact_url(url: str) -> str:
    """``url`` as logs and ``status`` show it: the user kept, the password ``***`` (query too)."""
    from urllib.parse import quote, urlsplit, urlunsplit

    user, password = url_credentials(url)
    if password is None:
        return url
    bare = urlsplit(without_credentials(url))
    netloc = f"{quote(user or '', safe='')}:***@{bare.netloc}"
    return urlunsplit((bare.scheme, netloc, bare.path, bare.query, bare.fragment))


def remember_url_password(url: str | None) -> bool:
    """Remember the password a URL holds, in every form it may be printed in (as written,
    percent-decoded, percent-encoded); True when there was one."""
    from urllib.parse import parse_qsl, quote, urlsplit

    if not url:
        return False
    _, password = url_credentials(url)
    if password is None:
        return False
    parts = urlsplit(url)
    written = [parts.password] + [v for k, v in parse_qsl(parts.query, keep_blank_values=True)
                                  if k in _URL_PASSWORD_KEYS]
    raw_query = [p.partition("=")[2] for p in parts.query.split("&") if p.partition("=")[0] in _URL_PASSWORD_KEYS]
    remember(password, quote(password, safe=""), quote(password), *written, *raw_query)
    return True
