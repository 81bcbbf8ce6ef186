"""Optional extras in tests: installed means required.

``require("diffusers", "sdxl")`` imports the module.  When its distribution is installed (as
``make test`` installs ``.[all]``), an ImportError is a test *error*, never a silent skip: a
broken install must not turn CI green.  Only when the distribution is absent does the test skip,
with a reason that ``tests/support/check_skips.py`` refuses in CI (it is not in tests/support/skip_allowlist.txt).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, distribution
from types import ModuleType

import pytest


def require(module: str, extra: str, *, dist: str | None = None) -> ModuleType:
    try:
        distribution(dist or module)
    except PackageNotFoundError:
        pytest.skip(f"the '{extra}' extra is not installed ({dist or module}); pip install -e '.[{extra}]'")
    return importlib.import_module(module)  # installed: an ImportError fails the test
