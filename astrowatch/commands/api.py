"""``astrowatch api [--host H] [--port P]``: the HTTP API (extra ``api``: FastAPI + uvicorn).

Checks the config and the token rule first (a non-loopback host without a token exits 78 with
one line), then imports FastAPI and serves with uvicorn.  ``READY=1`` goes to systemd once the
socket listens.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import socket

    from astrowatch.core.config import Config


def main(args: argparse.Namespace) -> int:
    from astrowatch.api.auth import load_token, require_token_off_loopback
    from astrowatch.core.errors import NotFound
    from astrowatch.runtime.logsetup import setup_logging
    from astrowatch.runtime.settings import load_service_config

    config = load_service_config(args.config)
    host = args.host or config.api.host
    port = args.port or config.api.port
    token = load_token(config)
    require_token_off_loopback(host, token, "astrowatch api")
    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        raise NotFound(f"the API needs {', '.join(missing)}: install the 'api' extra (pip install 'astrowatch[api]')")
    setup_logging(config.log.level, args.log_format or config.log.format)
    return serve(config, host, port, token)


def serve(config: Config, host: str, port: int, token: str | None) -> int:
    import structlog
    import uvicorn

    from astrowatch.api.app import create_app
    from astrowatch.runtime.notify import Notifier

    log = structlog.get_logger("astrowatch.api")

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                log.info("listening", url=f"http://{host}:{port}", data_dir=str(config.data_dir),
                         token="required" if token else "none (loopback only)")
                Notifier().ready(f"listening on {host}:{port}")

    app = create_app(config, token)
    server = Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                   server_header=False, proxy_headers=False, timeout_graceful_shutdown=5))
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind; it has logged why
        pass
    if not server.started:
        print(f"astrowatch api: error: could not listen on {host}:{port} (see the log above)", file=sys.stderr)
        return 69
    return 0
