import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from harness import DaemonProcess, write_config
from sdxl_fixtures import tiny_sdxl  # noqa: F401  (session fixture: the tiny offline SDXL)

pytest_plugins = ["caption_fixtures"]  # session fixtures: the tiny offline caption models


@pytest.fixture(autouse=True)
def _restore_structlog():
    """A test that runs a command in-process (``cli.main``) configures structlog for the whole
    process (log level included); put back what was there, so the next test's ``capture_logs``
    sees every level whatever ran before it."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def daemon_factory(tmp_path: Path):
    started: list[DaemonProcess] = []

    def make(config: Path | None = None, **kwargs) -> DaemonProcess:
        d = DaemonProcess(config or write_config(tmp_path), **kwargs)
        started.append(d)
        return d

    yield make
    for d in started:
        d.close()
