"""The ``kpi-engine serve`` and ``kpi-engine mcp`` commands. Every flag can also be set in the
environment (KPI_ENGINE_<FLAG>, e.g. KPI_ENGINE_PORT=9000); the web libraries are imported
only when a command runs, so the rest of the command line does not need the ``serve`` extra."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from ..errors import UsageError
from .settings import CacheSettings, Limits, ServeSettings, is_loopback

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
TOKENS_ENV = "KPI_ENGINE_TOKENS"  # the tokens themselves (YAML or JSON), never a flag: flags show in `ps`
TOKEN_ENV = "KPI_ENGINE_TOKEN"  # the caller's own token, for `kpi-engine mcp`


def _guarded(fn):
    """The command line's error handling (one paragraph, an exit code), imported when run."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..cli import handle_errors

        return handle_errors(fn)(*args, **kwargs)

    return wrapper


def _need_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import mcp  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise UsageError(f"serving needs the 'serve' extra ({error.name} is not installed).", None,
                         "pip install 'kpi-engine[serve]'") from None


def common_options(fn):
    """The project, its tokens and the limits on every request: the same for both commands."""
    defaults, cache = Limits(), CacheSettings()
    options = [
        click.argument("project", type=click.Path(exists=True, path_type=Path)),
        click.option("--warehouse", metavar="URL", envvar="KPI_ENGINE_WAREHOUSE",
                     help="Override the project's warehouse."),
        click.option("--tokens-file", type=click.Path(dir_okay=False, path_type=Path), envvar="KPI_ENGINE_TOKENS_FILE",
                     help=f"API tokens (YAML or JSON, docs/serve.md); or put them in ${TOKENS_ENV}. "
                          "Without tokens every caller reads everything."),
        click.option("--max-rows", type=click.IntRange(1), default=defaults.max_rows, show_default=True,
                     envvar="KPI_ENGINE_MAX_ROWS", help="Rows in one answer at most; larger answers are refused."),
        click.option("--max-kpis", type=click.IntRange(1), default=defaults.max_kpis, show_default=True,
                     envvar="KPI_ENGINE_MAX_KPIS", help="KPIs and formulas in one request at most."),
        click.option("--query-timeout", type=click.FloatRange(0, min_open=True), default=defaults.query_timeout,
                     show_default=True, envvar="KPI_ENGINE_QUERY_TIMEOUT", metavar="SECONDS",
                     help="Cancel warehouse queries that run longer (answered 504)."),
        click.option("--concurrent-queries", type=click.IntRange(1), default=defaults.concurrent_queries,
                     show_default=True, envvar="KPI_ENGINE_CONCURRENT_QUERIES",
                     help="Warehouse queries at once; more wait their turn (cached answers do not)."),
        click.option("--cache-entries", type=click.IntRange(0), default=cache.entries, show_default=True,
                     envvar="KPI_ENGINE_CACHE_ENTRIES", help="Answers kept in memory at most (0: no cache)."),
        click.option("--cache-ttl", type=click.FloatRange(0), default=cache.ttl, show_default=True,
                     envvar="KPI_ENGINE_CACHE_TTL", metavar="SECONDS", help="How long an answer is reused at most."),
        click.option("--freshness-interval", type=click.FloatRange(0), default=cache.freshness_interval,
                     show_default=True, envvar="KPI_ENGINE_FRESHNESS_INTERVAL", metavar="SECONDS",
                     help="How often the sources' last day is read again to notice new data."),
        click.option("--refresh-signal", type=click.Path(dir_okay=False, path_type=Path),
                     envvar="KPI_ENGINE_REFRESH_SIGNAL",
                     help="A file the loading pipeline touches after each load: cached answers are renewed at once."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _settings(project: Path, warehouse, tokens_file, max_rows, max_kpis, query_timeout, concurrent_queries,
              cache_entries, cache_ttl, freshness_interval, refresh_signal, **more) -> ServeSettings:
    limits = Limits(max_rows=max_rows, max_kpis=max_kpis, query_timeout=query_timeout,
                    concurrent_queries=concurrent_queries,
                    **({"max_body_bytes": more.pop("max_body_bytes")} if "max_body_bytes" in more else {}))
    cache = CacheSettings(entries=cache_entries, ttl=cache_ttl, freshness_interval=freshness_interval,
                          refresh_signal=refresh_signal)
    return ServeSettings(project=project, warehouse=warehouse, tokens=os.environ.get(TOKENS_ENV) or None,
                         tokens_file=tokens_file, limits=limits, cache=cache, **more)


@click.command("serve", context_settings=CONTEXT)
@common_options
@click.option("--host", default="127.0.0.1", show_default=True, envvar="KPI_ENGINE_HOST",
              help="Address to listen on; 0.0.0.0 for every interface (needs tokens, or --allow-open).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, envvar="KPI_ENGINE_PORT")
@click.option("--allow-open", is_flag=True, envvar="KPI_ENGINE_ALLOW_OPEN",
              help="Serve without tokens on an address other than loopback (everyone reads everything).")
@click.option("--cors-origin", "cors_origins", multiple=True, envvar="KPI_ENGINE_CORS_ORIGINS", metavar="ORIGIN",
              help="A web origin allowed to call the API from a browser, e.g. https://dash.example.com. Repeatable "
                   "(the variable takes a space-separated list).")
@click.option("--max-body-bytes", type=click.IntRange(256), default=Limits().max_body_bytes, show_default=True,
              envvar="KPI_ENGINE_MAX_BODY_BYTES", help="Largest request body accepted.")
@_guarded
def serve_command(host: str, port: int, allow_open: bool, cors_origins, **options) -> None:
    """Serve PROJECT over HTTP: the /v1 API (OpenAPI at /openapi.json), the explorer page at /, an MCP
    endpoint at /mcp, /healthz and /readyz. Stops gracefully on SIGTERM or Ctrl-C."""
    _need_extra()
    settings = _settings(host=host, port=port, allow_open=allow_open, cors_origins=tuple(cors_origins), **options)
    from .run import serve

    serve(settings)


@click.command("mcp", context_settings=CONTEXT)
@common_options
@_guarded
def mcp_command(**options) -> None:
    """Serve PROJECT's KPIs to an AI assistant over MCP on standard input/output (tools: list_kpis,
    list_dimensions, explain_kpi, query). With tokens configured, the assistant's token is read from
    $KPI_ENGINE_TOKEN and its policy applies."""
    _need_extra()
    settings = _settings(**options)
    from .run import serve_mcp

    serve_mcp(settings, os.environ.get(TOKEN_ENV))


def check_exposure(settings: ServeSettings, tokens_configured: bool) -> None:
    """Refuse to serve everything to a whole network by accident."""
    if not tokens_configured and not settings.allow_open and not is_loopback(settings.host):
        raise UsageError(f"no API token is configured, and --host {settings.host} is reachable from other machines.",
                         None, f"Configure tokens (--tokens-file or ${TOKENS_ENV}, docs/serve.md), listen on "
                               "127.0.0.1, or pass --allow-open to let every caller read every KPI.")
