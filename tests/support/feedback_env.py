"""The simulated reviewer of ``tests/unit/pipeline/test_feedback.py`` (``Env``, ``KEY``,
``_ingest_and_run``), for the tests of the stats CLI and the review page in other folders.

Importing the test module by its bare name keeps one module object whether pytest collected it
first or not (pytest's default import mode puts each test file's folder on sys.path).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

_PIPELINE = str(Path(__file__).resolve().parents[1] / "unit" / "pipeline")
if _PIPELINE not in sys.path:
    sys.path.append(_PIPELINE)
_feedback = importlib.import_module("test_feedback")

KEY = _feedback.KEY
Env = _feedback.Env
_ingest_and_run = _feedback._ingest_and_run
