"""A hook only tests enable: hold the daemon just after it records an intent state.

``ASTROWATCH_TEST_HOLD=<state>`` (``publishing``, ``deciding`` or ``failing``) makes the thread
that has just recorded that state write the job id into ``$ASTROWATCH_TEST_HOLD_FILE`` and
sleep until the process is killed (``publishing.logged`` / ``deciding.logged``: later, once the
job's log line is written, still in that state), so a test can SIGKILL the daemon with a job exactly there
and check what recovery does.  Unset — always, outside tests — it costs one environment lookup.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_ENV = "ASTROWATCH_TEST_HOLD"
HOLD_FILE_ENV = "ASTROWATCH_TEST_HOLD_FILE"


def hold(state: str, job_id: str) -> None:
    if os.environ.get(HOLD_ENV) != state:
        return
    ready = os.environ.get(HOLD_FILE_ENV)
    if ready:
        Path(ready).write_text(job_id, encoding="utf-8")
    while True:  # until SIGKILL: nothing after the intent runs in this process
        time.sleep(3600)
