"""executor: celery — model work on remote ``astrowatch worker`` processes (Celery + Redis).

Imported only when ``executor: celery`` is configured or ``astrowatch worker`` runs.
"""
