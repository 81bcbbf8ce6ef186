"""Every ledger table that keys rows by job is covered by forget and export (one list for both)."""

from __future__ import annotations

import sqlite3

from astrowatch.storage import erase
from astrowatch.storage.ledger import Ledger


def test_retentions_archive_marks_are_exported_and_erased_with_the_person(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    gaby = ledger.create_job(kind="enhance", user="gaby", source="Utilisateurs/gaby/a.png", source_sha256="0" * 64)
    kim = ledger.create_job(kind="enhance", user="kim", source="Utilisateurs/kim/a.png", source_sha256="1" * 64)
    ledger.mark_archive_pruned([gaby.id, kim.id])
    ledger.close()
    assert erase.ledger_other_rows(path, "gaby")["archive_pruned"] == [{"job_id": gaby.id}]
    erase.erase_ledger(path, "gaby", reader_wait=1.0)
    conn = sqlite3.connect(path)
    try:
        assert [r[0] for r in conn.execute("SELECT job_id FROM archive_pruned")] == [kim.id]
    finally:
        conn.close()
