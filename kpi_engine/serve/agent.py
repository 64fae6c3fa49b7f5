"""The agent interface: an MCP server (official SDK) whose tools list KPIs and dimensions,
explain a KPI and run a query, through ``service.KpiService`` like the HTTP API, so an
assistant answers from governed definitions instead of writing SQL.

Over HTTP (mounted by ``api.py``) the caller's token comes from its Authorization header; over
standard input/output (``kpi-engine mcp``) the token is the process's (KPI_ENGINE_TOKEN).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any, Optional

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.context import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import ValidationError

from .. import __version__
from ..errors import KpiEngineError
from .access import Access, Unauthorized
from .middleware import SERVER_LOGGER
from .models import QueryRequest, answer_body, error_content
from .service import KpiService, http_status
from .settings import is_loopback

INSTRUCTIONS = (
    "KPIs of a marketing and sales project, defined once in YAML and computed on its warehouse. "
    "Call list_kpis to see what exists (label, unit, formula, dimensions), explain_kpi for one KPI's "
    "meaning, and query to compute KPIs by dimensions and time grain over a date range. Answer from "
    "these numbers instead of writing SQL. Rows whose 'complete' is false are partial periods.")


def _fail(error: KpiEngineError) -> ToolError:
    """A tool error that reads like the command line's: one paragraph, what, where, how to fix."""
    return ToolError(str(error))


async def _call(fn, *args) -> Any:
    """Run blocking service work off the event loop; engine errors become tool errors."""
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except KpiEngineError as error:
        raise _fail(error) from None
    except Exception:  # a bug: the details go to the server's log, not to the assistant
        logging.getLogger(SERVER_LOGGER).exception("unexpected error in an MCP tool")
        raise ToolError("internal error: the server could not answer. Retry later; the server's log has "
                        "the details.") from None


def build_agent(service: KpiService, stdio_access: Access | None = None) -> MCPServer:
    """The MCP server. ``stdio_access`` is the caller over stdio; over HTTP it comes per request."""
    agent = MCPServer(f"kpi-engine: {service.project.name}", version=__version__, instructions=INSTRUCTIONS,
                      log_level="WARNING")

    def caller(ctx: Context) -> Access:
        if stdio_access is not None:
            return stdio_access
        request = ctx.request_context.request
        headers = getattr(request, "headers", None)
        try:
            return service.authenticate(headers.get("authorization") if headers is not None else None)
        except Unauthorized as error:
            raise _fail(error) from None

    @agent.tool()
    async def list_kpis(ctx: Context) -> dict[str, Any]:
        """Every KPI you may read: name, label, description, unit, formula, dimensions, grains, target."""
        access = caller(ctx)
        return {"project": service.project.name, "kpis": await _call(service.catalogue, access)}

    @agent.tool()
    async def list_dimensions(ctx: Context) -> dict[str, Any]:
        """Every dimension KPIs can be sliced by (use them in 'by' and 'where'), with the KPIs that have it."""
        access = caller(ctx)
        return {"dimensions": await _call(service.dimensions, access)}

    @agent.tool()
    async def explain_kpi(name: str, ctx: Context) -> dict[str, Any]:
        """One KPI in words: meaning, formula, what it is built from, dimensions, target and its SQL."""
        access = caller(ctx)
        return await _call(service.explain, name, access)

    @agent.tool()
    async def query(ctx: Context, kpis: list[str], by: Optional[list[str]] = None, grain: Optional[str] = None,
                    start: Optional[str] = None, end: Optional[str] = None, where: Optional[str] = None,
                    having: Optional[str] = None, order: Optional[list[str]] = None, limit: Optional[int] = None,
                    formulas: Optional[list[str]] = None, fill: bool = False,
                    complete_only: bool = False) -> dict[str, Any]:
        """Compute KPIs. kpis: KPI names from list_kpis. by: dimensions to group by. grain: day, week,
        month, quarter, year, fiscal_quarter or fiscal_year, or hour, minute, second on sources with a
        TIMESTAMP time (local wall-clock time; omit for one total). start: first day,
        inclusive, YYYY-MM-DD; end: the day after the last, exclusive (e.g. last quarter of 2025:
        start 2025-10-01, end 2026-01-01). where: a filter on dimensions, e.g. "channel in ('email',
        'ppc')". having: a filter on KPI values, e.g. 'cost_per_lead > 100'. order: output columns, '-'
        in front for descending. Returns columns (with units), rows and the SQL that was run; a row's
        'complete' is false when its period is partial."""
        access = caller(ctx)
        fields = {"kpis": kpis, "by": by or [], "grain": grain, "from": start, "to": end, "where": where,
                  "having": having, "order": order or [], "limit": limit, "formulas": formulas or [], "fill": fill,
                  "complete_only": complete_only}
        try:
            request = QueryRequest.model_validate_json(json.dumps(fields))
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(str(p) for p in item['loc']) or 'request'}: {item['msg']}"
                                 for item in error.errors())
            raise ToolError(f"the query is not valid: {problems}.") from None
        answer = await _call(service.query, request, access)
        return answer_body(answer)

    return agent


class McpEndpoint:
    """The MCP endpoint (streamable HTTP, stateless, JSON answers) behind the same token check as
    the API: 401 before any MCP message. ``running()`` goes in the app's lifespan; each run gets a
    fresh session manager (the SDK's runs once), so the app can be started again, as tests do.
    On a loopback address the SDK's DNS-rebinding protection stays on; elsewhere tokens guard it."""

    def __init__(self, agent: MCPServer, service: KpiService):
        self.agent, self.service = agent, service
        self.app = None

    @contextlib.asynccontextmanager
    async def running(self):
        settings = self.service.settings
        security = (None if is_loopback(settings.host)
                    else TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self.app = self.agent.streamable_http_app(
            streamable_http_path=settings.mcp_path, stateless_http=True, json_response=True,
            max_request_body_size=settings.limits.max_body_bytes, transport_security=security, host=settings.host)
        async with self.agent.session_manager.run():
            yield

    async def __call__(self, scope, receive, send):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        try:
            access = self.service.authenticate(headers.get("authorization"))
        except Unauthorized as error:
            body = json.dumps(error_content(error)).encode()
            await send({"type": "http.response.start", "status": http_status(error),
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})["token"] = access.name
        await self.app(scope, receive, send)


def run_stdio(service: KpiService, access: Access) -> None:
    """Serve MCP on standard input/output until the client closes it."""
    build_agent(service, access).run("stdio")


__all__ = ["McpEndpoint", "build_agent", "run_stdio"]
