"""Structured logging: JSON lines for journald / pipes, readable key=value in a terminal.

Every event, and every line of the standard library's loggers, goes through
:func:`astrowatch.core.secrets.redact` last: an API key, token or password the process has loaded
never reaches a log line, even inside an exception's text or traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from astrowatch.core.secrets import redact


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redacted(v) for v in value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = str(value)  # paths, exceptions, objects: kept as they are unless their text holds a secret
    clean = redact(text)
    return value if clean == text else clean


def redact_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: every known secret value out of every field (after the traceback is
    formatted, before rendering)."""
    return {key: _redacted(value) for key, value in event.items()}


class RedactingFormatter(logging.Formatter):
    """The standard library's lines (requests, urllib3, the backends' loggers), redacted whole."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """A logger on *today's* ``sys.stderr``: a command run in-process (tests, the review page) may
    have swapped it since logging was set up, and a stream captured then may be closed now."""
    return structlog.PrintLogger(file=sys.stderr)


def setup_logging(level: str = "info", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    numeric = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=False),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not isinstance(handler.formatter, RedactingFormatter):
            fmt_string = handler.formatter._fmt if handler.formatter is not None else None
            handler.setFormatter(RedactingFormatter(fmt_string))
