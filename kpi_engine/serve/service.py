"""The one place a request is checked, limited, restricted to its caller's policy, cached and
run. The HTTP API, the explorer page (through the API) and the MCP tools all call this class,
so the three doors answer the same and enforce the same rules."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from sqlglot import exp

from ..catalog import explain as explain_text
from ..engine import KpiProject, open_project
from ..errors import KpiEngineError, QueryError
from ..result import Result
from .access import Access, Forbidden, Tokens, load_tokens
from .cache import HIT, Freshness, ResultCache
from .models import QueryRequest
from .settings import ServeSettings


COMPILED_REQUESTS = 4096  # distinct requests whose SQL is remembered


class TooLarge(KpiEngineError):
    """An answer or request larger than the server's limits (HTTP 413)."""

    exit_code = 2
    http_status = 413


class NotFound(KpiEngineError):
    """A KPI named in a URL that the project does not define (HTTP 404)."""

    http_status = 404


@dataclass(frozen=True)
class Answer:
    result: Result
    cache: str  # HIT, MISS or SHARED (cache.py)
    age: float  # seconds since the answer was computed

    @property
    def cached(self) -> bool:
        return self.cache != "miss"


class KpiService:
    def __init__(self, project: KpiProject, settings: ServeSettings, tokens: Tokens | None = None):
        self.project = project
        self.settings = settings
        self.limits = settings.limits
        self.tokens = tokens or Tokens()
        cache = settings.cache
        self.cache = ResultCache(cache.entries, cache.max_cells, cache.ttl)
        self.compiled = ResultCache(COMPILED_REQUESTS, COMPILED_REQUESTS, float("inf"))  # request -> SQL
        self.warehouse_slots = threading.BoundedSemaphore(settings.limits.concurrent_queries)
        self.freshness = Freshness(lambda sources, rollups: self._in_warehouse(project.extents, sources,
                                                                               rollups=rollups),
                                   cache.freshness_interval, cache.refresh_signal)
        self._ready_lock = threading.Lock()
        self._ready = False

    @classmethod
    def open(cls, settings: ServeSettings) -> "KpiService":
        """Load the project and the tokens; checks the tokens against the project's KPIs."""
        tokens = load_tokens(settings.tokens, settings.tokens_file)
        project = open_project(Path(settings.project), warehouse=settings.warehouse,
                               timeout=settings.limits.query_timeout)
        try:
            tokens.validate(project.model(describe=False))
        except BaseException:
            project.close()
            raise
        return cls(project, settings, tokens)

    def close(self) -> None:
        self.project.close()

    def authenticate(self, authorization: str | None) -> Access:
        return self.tokens.authenticate(authorization)

    def ready(self) -> None:
        """Raise unless the warehouse answers: the sources are described once, then each call
        runs SELECT 1 (a readiness probe every few seconds costs the warehouse nothing)."""
        with self._ready_lock:
            if not self._ready:
                self.project.model(describe=True, strict=False)
                self._ready = True
        self.project.connection().execute(exp.select(exp.Literal.number(1)))

    # -- the catalogue
    def _model(self):
        return self.project.model(describe=False)

    def catalogue(self, access: Access) -> list[dict[str, Any]]:
        model = self._model()
        return [self._summary(model, name) for name in self.project.project.kpis if access.can_read(model, name)]

    def _readable(self, access: Access, name: str):
        model = self._model()
        if access.kpis is not None and name not in access.kpis:
            raise Forbidden(f"the KPI '{name}' is not allowed for the token '{access.name}'.", None, None)
        try:
            model.kpi(name)
        except QueryError as unknown:  # same words and suggestion, as a missing resource
            raise NotFound(unknown.message, unknown.location, unknown.hint) from None
        if not access.can_read(model, name):
            access.check(model, [name], [], None)  # raises with the reason
        return model

    @staticmethod
    def _summary(model, name: str) -> dict[str, Any]:
        kpi = model.kpi(name)
        spec = kpi.spec
        return {"name": name, "label": spec.label,
                "description": " ".join(spec.description.split()) if spec.description else None,
                "unit": spec.unit, "format": spec.format, "formula": " ".join(spec.formula.split()),
                "dimensions": list(kpi.dimensions), "grains": list(model.project.config.calendar.grains),
                "needs_grain": model.needs_grain(name),
                "target": dict(spec.target) if spec.target else None, "owner": spec.owner, "tags": list(spec.tags)}

    def explain(self, name: str, access: Access) -> dict[str, Any]:
        model = self._readable(access, name)
        kpi = model.kpi(name)
        try:
            sql = self.project.compile([name], grain="month", describe=False).sql()
        except KpiEngineError:
            sql = None  # e.g. a KPI without a time column: the rest still explains it
        return {**self._summary(model, name), "sources": sorted(kpi.sources), "uses": list(kpi.references),
                "explanation": explain_text(model, name), "sql": sql}

    def dimensions(self, access: Access) -> list[dict[str, Any]]:
        model = self._model()
        readable = [name for name in self.project.project.kpis if access.can_read(model, name)]
        described = {}
        for source in self.project.project.sources.values():
            for dim in source.dimensions:
                described.setdefault(dim.name, dim)
        names = dict.fromkeys(d for name in readable for d in model.kpi(name).dimensions)
        return [{"name": d, "label": described[d].label if d in described else None,
                 "description": described[d].description if d in described else None,
                 "kpis": [k for k in readable if d in model.kpi(k).dimensions]} for d in names]

    # -- queries
    def check_limits(self, request: QueryRequest) -> None:
        limits = self.limits
        asked = len(request.kpis) + len(request.formulas)
        if asked > limits.max_kpis:
            raise TooLarge(f"the request asks for {asked} KPIs and formulas; this server answers at most "
                           f"{limits.max_kpis} at once.", None, "Split it into several requests.")
        if len(request.by) > limits.max_dimensions:
            raise TooLarge(f"the request groups by {len(request.by)} dimensions; this server allows at most "
                           f"{limits.max_dimensions}.", None, "Group by fewer dimensions.")
        texts = [("a formula", t) for t in request.formulas] + [("--where", request.where), ("--having", request.having)]
        for what, text in texts:
            if text is not None and len(text) > limits.max_text:
                raise TooLarge(f"{what} is {len(text):,} characters long; this server allows {limits.max_text:,}.",
                               None, "Shorten it, or define a KPI for it in the project.")
        if request.limit is not None and request.limit > limits.max_rows:
            raise TooLarge(f"limit {request.limit:,} is above this server's row limit ({limits.max_rows:,}).", None,
                           f"Ask for at most {limits.max_rows:,} rows, and page with from/to or a where filter.")

    def options(self, request: QueryRequest, access: Access) -> dict[str, Any]:
        """The keyword arguments of ``KpiProject.evaluate`` for a request, with the caller's
        row policy applied; raises Forbidden when the caller may not read it."""
        self.check_limits(request)
        if not request.kpis and not request.formulas:
            raise QueryError("nothing to compute.", None, "Name one or more KPIs in 'kpis', or send 'formulas'.")
        access.check(self.project.model(describe=True, strict=False), request.kpis, request.formulas,
                     request.having)
        return {**request.evaluate_options(), "where": access.restrict(request.where)}

    def query(self, request: QueryRequest, access: Access) -> Answer:
        options = self.options(request, access)
        kpis = list(request.kpis)
        complete_only = options.pop("complete_only")
        if options["limit"] is None:  # one row more than allowed tells a too-large answer apart
            options["limit"] = self.limits.max_rows + 1
        sql, sources, rollups = self._compiled(kpis, options)
        key = (sql, complete_only, self.freshness.key(sources, rollups))
        result, status, age = self.cache.get_or_compute(
            key, lambda: self._in_warehouse(self.project.evaluate, kpis, complete_only=complete_only, **options),
            lambda value: len(value.rows) * len(value.columns))
        if len(result.rows) > self.limits.max_rows:
            raise TooLarge(f"the answer has more than {self.limits.max_rows:,} rows, this server's limit.", None,
                           "Narrow it: a coarser grain, fewer dimensions, a shorter from/to, a where filter, "
                           "or a limit.")
        return Answer(result, status, age)


    def _in_warehouse(self, run, *args, **kwargs):
        """Run warehouse work in one of the ``concurrent_queries`` slots (others wait their turn)."""
        with self.warehouse_slots:
            return run(*args, **kwargs)

    def _compiled(self, kpis: list[str], options: dict[str, Any]) -> tuple[str, tuple[str, ...], Mapping]:
        """(SQL, sources, the rollups their extents are read off) of a request, compiled once per
        distinct request: the project's files are read once per process, so the same request always
        compiles to the same query, and a cached answer is then found without compiling again."""
        request = (tuple(kpis), tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items())))

        def compile_it():
            compiled = self.project.compile(kpis, **options)
            return compiled.sql(pretty=False), compiled.sources, compiled.extent_rollups

        value, _, _ = self.compiled.get_or_compute(request, compile_it, lambda value: 1)
        return value


def http_status(error: KpiEngineError) -> int:
    """The HTTP status of an error: its own, or one by its exit code (docs/serve.md)."""
    explicit = getattr(error, "http_status", None)
    if explicit:
        return explicit
    return {1: 422, 2: 400, 3: 503, 4: 502, 5: 504}.get(error.exit_code, 500)


__all__ = ["Answer", "HIT", "KpiService", "NotFound", "TooLarge", "http_status"]
