"""No loaded key, token or password reaches a log line: structlog events and stdlib loggers alike."""

from __future__ import annotations

import logging

import structlog

from astrowatch.core.secrets import remember
from astrowatch.runtime.logsetup import setup_logging

SECRET = "sk-proj-LOGREDACTION0123456789"


def test_structlog_events_fields_and_tracebacks_are_redacted(capsys):
    remember(SECRET)
    setup_logging("info", "json")
    log = structlog.get_logger("test")
    log.info(f"calling with {SECRET}", url=f"https://x/?key={SECRET}", nested={"k": [SECRET]}, n=3)
    try:
        raise RuntimeError(f"server echoed Bearer {SECRET}")
    except RuntimeError:
        log.exception("backend failed", error=RuntimeError(SECRET))
    err = capsys.readouterr().err
    assert SECRET not in err
    assert err.count("[redacted]") >= 5 and '"n": 3' in err


def test_stdlib_log_lines_are_redacted(capsys):
    remember(SECRET)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []  # as in the daemon's process: basicConfig installs the stderr handler
    try:
        setup_logging("info", "json")
        logging.getLogger("astrowatch.backends.openai_images").warning("retrying after %s", f"key={SECRET}")
        err = capsys.readouterr().err
    finally:
        for handler in root.handlers:
            root.removeHandler(handler)
        root.handlers = saved
    assert "retrying after key=[redacted]" in err and SECRET not in err
