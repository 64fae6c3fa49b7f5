"""Starting a server: the HTTP service under uvicorn, or the MCP server on standard input/output."""

from __future__ import annotations

import logging
import sys

from .access import Unauthorized
from .command import check_exposure
from .middleware import configure_logs
from .service import KpiService
from .settings import ServeSettings


def serve(settings: ServeSettings) -> None:
    """Run until SIGTERM or Ctrl-C; uvicorn then stops accepting, lets requests in flight finish
    (up to ``graceful_shutdown`` seconds) and runs the shutdown that closes the warehouse."""
    import uvicorn

    from .api import create_app

    service = KpiService.open(settings)
    try:
        check_exposure(settings, service.tokens.configured)
        app = create_app(service)
    except BaseException:
        service.close()
        raise
    configure_logs()
    mode = f"{len(service.tokens.accesses)} API tokens" if service.tokens.configured else "open: no API tokens"
    print(f"Serving {service.project.name} on http://{settings.host}:{settings.port}/ ({mode}); "
          f"MCP at {settings.mcp_path}. Ctrl-C stops.", file=sys.stderr, flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=settings.graceful_shutdown, server_header=False)


def serve_mcp(settings: ServeSettings, token: str | None) -> None:
    """Serve MCP on stdin/stdout with the policy of ``token`` (every KPI when no token is configured)."""
    from .agent import run_stdio

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)  # stdout carries the protocol alone
    service = KpiService.open(settings)
    try:
        try:
            access = service.authenticate(f"Bearer {token}" if token else None)
        except Unauthorized as error:
            raise Unauthorized(error.message, None, "Set KPI_ENGINE_TOKEN to the assistant's API token in the "
                                                    "MCP client's configuration for this server.") from None
        run_stdio(service, access)
    finally:
        service.close()
