"""``astrowatch api``: the HTTP API the upstream app and operators talk to (extra ``api``).

A separate process from the daemon; the ledger (SQLite WAL, read concurrently) and the data
folders are the interface between them.  Only :mod:`astrowatch.api.app` and the command import
FastAPI: :mod:`auth`, :mod:`service` and :mod:`metrics` are plain Python, tested without HTTP
and importable by the review page.
"""
