"""The HTTP service: the /v1 API (OpenAPI at /openapi.json), the explorer page at /, the MCP
endpoint, health and readiness probes. Every route calls ``service.KpiService``."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from typing import Optional

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from .. import __version__
from ..errors import KpiEngineError
from ..result import Result
from .access import Access, Unauthorized
from .explorer import explorer_page
from .middleware import SERVER_LOGGER, AccessLog, BodyLimit
from .models import (DimensionList, ErrorResponse, KpiExplanation, KpiList, QueryRequest, QueryResponse, answer_body,
                     error_content)
from .service import KpiService, http_status

log = logging.getLogger(SERVER_LOGGER)

MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8",
         "arrow": "application/vnd.apache.arrow.stream"}
ERRORS = {status: {"model": ErrorResponse, "description": what} for status, what in (
    (400, "A malformed request"), (404, "No such KPI"), (401, "No valid API token"), (403, "Not allowed for this token"),
    (413, "Larger than the server's limits"), (422, "A request the project cannot answer (unknown KPI, "
                                                    "formula error, ...)"),
    (502, "The warehouse refused the query"), (503, "The warehouse cannot be reached"),
    (504, "The query ran past the time limit"))}

_bearer = HTTPBearer(auto_error=False, description="An API token; not needed when the server runs without tokens.")


def _error_response(error: KpiEngineError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else None
    return JSONResponse(error_content(error), status_code=http_status(error), headers=headers)


def _plain_error(status: int, message: str, hint: str | None = None) -> JSONResponse:
    return JSONResponse(error_content(KpiEngineError(message, None, hint)), status_code=status)


def _arrow(result: Result) -> bytes:
    try:
        import pyarrow as pa
    except ImportError:
        from ..errors import UsageError

        raise UsageError("the Arrow format needs pyarrow on the server.", None,
                         "pip install 'kpi-engine[serve]', or ask for JSON or CSV.") from None
    table = result.to_arrow() if result.rows else pa.table({name: pa.array([], pa.null()) for name in result.names})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def negotiate(explicit: str | None, accept: str | None) -> str:
    """json, csv or arrow: from ``format`` if given, else the first Accept type that names one."""
    if explicit:
        return explicit
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        for name, known in MEDIA.items():
            if media == known.split(";")[0]:
                return name
    return "json"


def create_app(service: KpiService) -> FastAPI:
    settings = service.settings
    from .agent import McpEndpoint, build_agent

    mcp_endpoint = McpEndpoint(build_agent(service), service)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # Threads that wait for the warehouse are bounded by the service's query slots; enough
        # threads beyond those let cached answers through while the warehouse works.
        anyio.to_thread.current_default_thread_limiter().total_tokens = max(
            40, 4 * settings.limits.concurrent_queries + 64)
        async with mcp_endpoint.running():
            yield
        service.close()  # after the requests in flight (uvicorn drains them on SIGTERM)

    app = FastAPI(title=f"KPIs of {service.project.name}", version=__version__, lifespan=lifespan,
                  description="Governed KPI definitions served from one place: the catalogue, explanations and "
                              "queries. Errors are JSON: {error: {message, location, hint}}. See docs/serve.md.",
                  responses={k: v for k, v in ERRORS.items() if k in (400, 401)})

    def open_caller(request: Request) -> Access:
        access = service.authenticate(request.headers.get("authorization"))
        request.state.token = access.name
        return access

    def token_caller(request: Request, _: Optional[HTTPAuthorizationCredentials] = Depends(_bearer)) -> Access:
        return open_caller(request)

    # The OpenAPI description declares the bearer token only when the server asks for one.
    caller = token_caller if service.tokens.configured else open_caller

    @app.exception_handler(KpiEngineError)
    async def engine_error(request: Request, error: KpiEngineError):
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
            problems.append({"message": f"{where}: {item.get('msg', 'invalid')}", "location": where,
                             "hint": None, "detail": None})
        first = problems[0] if problems else {"message": "invalid request", "location": None}
        return JSONResponse({"error": {"message": first["message"], "location": first["location"],
                                       "hint": "See the request schema at /openapi.json (or /docs).",
                                       "detail": None, "problems": problems}}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        response = _plain_error(error.status_code, str(error.detail))
        response.headers.update(error.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _plain_error(500, "internal error: the server could not answer.",
                            "Retry later; the server's log has the details.")

    @app.get("/", include_in_schema=False)
    def explorer() -> HTMLResponse:
        page, policy = explorer_page(service.project.name)
        return HTMLResponse(page, headers={"Content-Security-Policy": policy, "Cache-Control": "no-store"})

    @app.get("/healthz", tags=["operation"], summary="The process is up")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operation"], summary="The warehouse answers", responses={503: ERRORS[503]})
    def readyz():
        try:
            service.ready()
        except KpiEngineError as error:
            content = error_content(error)
            return JSONResponse(content, status_code=503)
        return {"status": "ready"}

    @app.get("/v1/info", tags=["catalogue"], summary="The project served, and whether tokens are needed")
    def info() -> dict:
        config = service.project.project.config
        return {"project": config.name, "currency": config.currency, "auth": service.tokens.configured,
                "grains": list(config.calendar.grains), "max_rows": service.limits.max_rows, "mcp": settings.mcp_path}

    @app.get("/v1/kpis", tags=["catalogue"], response_model=KpiList, summary="The KPIs this token may read")
    def list_kpis(access: Access = Depends(caller)):
        return {"project": service.project.name, "kpis": service.catalogue(access)}

    @app.get("/v1/kpis/{name}", tags=["catalogue"], response_model=KpiExplanation, summary="One KPI, explained",
             responses={k: ERRORS[k] for k in (403, 404)})
    def explain_kpi(name: str, access: Access = Depends(caller)):
        return service.explain(name, access)

    @app.get("/v1/dimensions", tags=["catalogue"], response_model=DimensionList,
             summary="The dimensions the readable KPIs can be sliced by")
    def list_dimensions(access: Access = Depends(caller)):
        return {"dimensions": service.dimensions(access)}

    @app.post("/v1/query", tags=["query"], response_model=QueryResponse, summary="Compute KPIs",
              responses={**{k: v for k, v in ERRORS.items() if k not in (400, 401)},
                         200: {"content": {"text/csv": {}, "application/vnd.apache.arrow.stream": {}},
                               "description": "Rows with column metadata (JSON), or CSV, or Arrow IPC"}})
    def query(body: QueryRequest, request: Request, access: Access = Depends(caller),
              format: Optional[str] = Query(None, pattern="^(json|csv|arrow)$",
                                            description="json, csv or arrow (overrides the Accept header)")):
        fmt = negotiate(format or body.format, request.headers.get("accept"))
        answer = service.query(body, access)
        request.state.rows = len(answer.result.rows)
        headers = {"X-KPI-Cache": answer.cache, "Age": str(int(answer.age))}
        if fmt == "csv":
            from ..output import to_csv

            headers["Content-Disposition"] = 'attachment; filename="kpis.csv"'
            return Response(to_csv(answer.result), media_type=MEDIA["csv"], headers=headers)
        if fmt == "arrow":
            return Response(_arrow(answer.result), media_type=MEDIA["arrow"], headers=headers)
        return Response(json.dumps(answer_body(answer), ensure_ascii=False), media_type=MEDIA["json"],
                        headers=headers)

    app.router.routes.append(Route(settings.mcp_path, endpoint=mcp_endpoint, methods=["GET", "POST", "DELETE"]))
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes)
    if settings.cors_origins:  # outside the body limit, so a browser can read its 413 too
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type", "Accept"],
                           expose_headers=["X-KPI-Cache", "Age", "X-Request-ID"])
    app.add_middleware(AccessLog)  # outermost: every answer is logged
    return app


__all__ = ["create_app", "negotiate"]
