"""The Python API: open a project, compile or evaluate KPIs.

    from kpi_engine import open_project

    with open_project("examples/marketing") as project:
        result = project.evaluate(["cost_per_lead", "nps"], by=["channel"], grain="month")
        result.to_dicts()      # or result.to_pandas()
        print(project.compile(["cost_per_lead"], dialect="postgres").sql())
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .compiler import COMPLETE_COLUMN, CompiledQuery, Request, compile_request, extent_query, source_relation
from .completeness import Extent, as_date, complete_range, is_complete
from .errors import (KpiEngineError, Location, ProjectInvalid, ResolveError, SpecError, UsageError, WarehouseError,
                     in_file_order)
from .hookspecs import Connection
from .parser import _deep_recursion
from .plugins import Registry, default_registry
from .redaction import redact
from .resolve import Model, column_type, resolve
from .result import Result
from .spec import Project, load_project, read_project

_URL_SCHEME = re.compile(r"^([a-z][a-z0-9_+]*):")


def warehouse_settings(warehouse: str | Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(adapter name, settings) from a URL or a ``warehouse:`` mapping."""
    if warehouse is None:
        raise UsageError("no warehouse is configured.", None,
                         "Add 'warehouse:' to kpi_engine.yaml (e.g. 'warehouse: {adapter: duckdb, data: data}') "
                         "or pass --warehouse URL.")
    if isinstance(warehouse, str):
        # A URL keeps its ${VAR}s for the adapter to fill in after parsing it (a password may
        # hold '/', '@' or ':'); a value that is wholly a variable, e.g. ${DATABASE_URL}, is
        # filled in here to find its scheme.
        url = warehouse if _URL_SCHEME.match(warehouse) else _interpolate(warehouse)
        match = _URL_SCHEME.match(url)
        if not match:
            # Never echoed: it may be a libpq 'host=... password=...' string, or come from a variable.
            shape = " (it looks like 'key=value' settings)" if "=" in url else ""
            raise UsageError(f"the warehouse setting is not a URL{shape}: it does not start with a scheme such as "
                             "postgresql:// or duckdb://.", None,
                             "Write it as scheme://..., e.g. duckdb:///path/to/file.duckdb or "
                             "postgresql://user@host/db; --warehouse and KPI_ENGINE_WAREHOUSE take a URL.")
        return match.group(1).split("+")[0], {"url": url}
    settings = dict(warehouse)
    return str(settings.pop("adapter")), settings


def _interpolate(value: str) -> str:
    """${NAME} -> the environment variable NAME, so URLs with passwords live in the environment."""
    def replace_variable(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise UsageError(f"the environment variable {name} used in the warehouse URL is not set.", None,
                             f"Set {name}, or write the URL without ${{{name}}}.")
        return os.environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", replace_variable, value)


class KpiProject:
    """A loaded project plus, when needed, an open warehouse connection."""

    def __init__(self, project: Project, *, warehouse: str | Mapping[str, Any] | None = None,
                 registry: Registry | None = None, timeout: float | None = None):
        self.project = project
        self.timeout = timeout  # seconds; the warehouse cancels longer queries
        self.registry = registry or default_registry()
        self._warehouse = warehouse if warehouse is not None else project.config.warehouse
        self._connection: Connection | None = None
        self._model: Model | None = None
        self._unavailable: dict[str, KpiEngineError] = {}  # sources whose table cannot be read
        self._lock = threading.Lock()
        self._model_lock = threading.RLock()

    # -- set-up
    @property
    def name(self) -> str:
        return self.project.config.name

    @property
    def dialect(self) -> str:
        """The dialect the warehouse speaks and ``sql:`` sources are written in."""
        return self.project.config.dialect or self._adapter_dialect(missing_ok=False) or "duckdb"

    def _adapter_dialect(self, missing_ok: bool = True) -> str | None:
        """The warehouse adapter's dialect, known from its class without connecting; None when no
        warehouse is configured, or (``missing_ok``) when its adapter is not installed: connecting
        reports that."""
        if self._warehouse is None:
            return None
        try:
            adapter_name, _ = warehouse_settings(self._warehouse)
            return self.registry.adapter(adapter_name).dialect
        except KpiEngineError:
            if missing_ok:
                return None
            raise

    def connection(self) -> Connection:
        with self._lock:
            if self._connection is None:
                adapter_name, settings = warehouse_settings(self._warehouse)
                if self.timeout is not None:
                    settings["query_timeout"] = self.timeout
                adapter = self.registry.adapter(adapter_name)
                self._connection = adapter.connect(settings, self.project.config.root)
            return self._connection

    def model(self, describe: bool = True, strict: bool = True) -> Model:
        """The resolved model. With ``describe``, sources and columns are checked against
        the warehouse too, and column types are known to the type checker.

        ``strict=False`` tolerates sources whose table is missing (a team that adopts a
        library without every table): they fail only when a request reads them.
        """
        with self._model_lock:  # threads evaluating at once describe the warehouse once
            return self._build_model(describe, strict)

    def _build_model(self, describe: bool, strict: bool) -> Model:
        if self._model is not None and (self._model.catalog or not describe) and (not strict or not self._unavailable):
            return self._model
        catalog: dict[str, dict[str, str]] = {}
        errors: list[KpiEngineError] = []
        if describe:
            catalog, self._unavailable = self._describe()
            if strict:
                errors.extend(self._unavailable.values())
        try:
            model = resolve(self.project, catalog, self.registry.functions(), self._adapter_dialect())
        except ProjectInvalid as invalid:
            errors.extend(invalid.errors)
        if errors:
            raise ProjectInvalid(errors)
        self._model = model
        return model

    def _describe(self) -> tuple[dict[str, dict[str, str]], dict[str, KpiEngineError]]:
        """Column types of every source, and the sources that cannot be read, with why."""
        connection = self.connection()
        catalog: dict[str, dict[str, str]] = {}
        unavailable: dict[str, KpiEngineError] = {}
        for source in self.project.sources.values():
            if source.unmapped:
                continue  # declared to have no data: its KPIs are unavailable
            try:
                relation = source_relation(source, self.dialect)
            except SpecError:
                continue  # a sql: source that does not parse: resolve reports it once
            try:
                described = connection.columns(relation)
            except KpiEngineError as error:
                unavailable[source.name] = error
                continue
            if described is None:
                what = f"table '{source.table}'" if source.table else "the source's query"
                unavailable[source.name] = ResolveError(f"{what} does not exist in the warehouse.",
                                                        source.where("table" if source.table else "sql"),
                                                        "Fix the name (schema.table), or create the table.")
                continue
            catalog[source.name] = {col: column_type(raw) for col, raw in described.items()}
        return catalog, unavailable

    # -- queries
    def compile(self, kpis: Sequence[str] = (), *, dialect: str | None = None, describe: bool = True,
                **options: Any) -> CompiledQuery:
        """Compile KPIs into one query. ``options`` are the fields of ``compiler.Request``:
        by, grain, start, end, where, having, order_by, limit, formulas, fill."""
        return self._compile(make_request(kpis, **options), dialect, describe)

    def _compile(self, request: Request, dialect: str | None = None, describe: bool = True) -> CompiledQuery:
        target = dialect or self.dialect
        query = compile_request(self.model(describe, strict=False), request, target, self.dialect)
        missing = [self._unavailable[name] for name in query.sources if name in self._unavailable]
        if missing:
            raise missing[0] if len(missing) == 1 else ProjectInvalid(missing)
        return replace(query, expression=self._prepare(query.expression, target))

    def _prepare(self, expression, dialect: str):
        for adapter in self.registry.adapters_for_dialect(dialect):  # e.g. SQLite's date functions
            expression = adapter.prepare(expression)
        return expression

    def extents(self, sources: Iterable[str], describe: bool = True) -> dict[str, Extent]:
        """The first and last day each source (with a time column) has data for, in one query."""
        model = self.model(describe, strict=False)
        timed = [name for name in dict.fromkeys(sources) if model.sources[name].time]
        if not timed:
            return {}
        query = self._prepare(extent_query(model, timed, self.dialect, self.dialect), self.dialect)
        with _deep_recursion():
            rows = self.connection().execute(query).rows
        return {row[0]: Extent(as_date(row[1]), as_date(row[2])) for row in rows}

    def _run_plan(self, kpis: Sequence[str], complete_only: bool, describe: bool, options: Mapping[str, Any]):
        """The query to run and a function adding each row's ``complete`` flag (None when no
        row can be complete, under ``complete_only``)."""
        request = make_request(kpis, **options)
        query = self._compile(request, describe=describe)
        calendar = self.project.config.calendar
        model = self.model(describe, strict=False)
        cohorts = any(model.kpi(name).spec.matures_after_days for name in request.kpis)
        timed = request.grain or request.start or request.end or cohorts
        extents = self.extents(query.sources, describe) if timed else {}
        maturities = self._maturities(model, request.kpis, extents)
        if complete_only and request.grain:  # complete periods are contiguous: run on them alone
            narrowed = complete_range(request.grain, request.start, request.end, extents, calendar, maturities)
            if narrowed is None:
                return query, None
            query = self._compile(replace(request, start=narrowed[0], end=narrowed[1]), describe=describe)

        def flag(row: tuple) -> tuple:
            period = as_date(row[0]) if request.grain else None
            return row + (is_complete(period, request.grain, request.start, request.end, extents, calendar,
                                      maturities),)

        if complete_only and not request.grain and not is_complete(None, None, request.start, request.end,
                                                                   extents, calendar, maturities):
            return query, None
        return replace(query, columns=query.columns + (COMPLETE_COLUMN,)), flag

    @staticmethod
    def _maturities(model: Model, kpis: Sequence[str], extents: Mapping[str, Extent]) -> list[tuple[int, dt.date | None]]:
        """(matures_after days, end of its sources' data) of each cohort KPI asked for."""
        result = []
        for name in kpis:
            kpi = model.kpi(name)
            if kpi.spec.matures_after_days is not None:
                ends = [extents[s].end for s in kpi.sources if s in extents]
                result.append((kpi.spec.matures_after_days, min(ends) if ends and None not in ends else None))
        return result

    def evaluate(self, kpis: Sequence[str] = (), *, complete_only: bool = False, describe: bool = True,
                 **options: Any) -> Result:
        """Compile and run on the project's warehouse; returns a ``Result`` whose last column,
        ``complete``, says whether each row's period is complete (see completeness.py).
        ``complete_only`` keeps the complete rows alone."""
        query, flag = self._run_plan(kpis, complete_only, describe, options)
        sql = query.sql()  # renders once here, so a query too deep to write out fails cleanly first
        if flag is None:
            return Result(query.columns + (COMPLETE_COLUMN,), [], sql)
        with _deep_recursion():  # adapters render the same tree
            rows = self.connection().execute(query.expression)
        return Result(query.columns, [flag(tuple(row)) for row in rows.rows], sql)

    def stream(self, kpis: Sequence[str] = (), *, batch_size: int = 10_000, complete_only: bool = False,
               describe: bool = True, **options: Any):
        """Compile and run, returning (the compiled query, an iterator of row batches):
        for results too large to hold in memory (see ``output.write_stream``)."""
        query, flag = self._run_plan(kpis, complete_only, describe, options)
        query.sql()  # fails cleanly if the query is too deep to write out
        if flag is None:
            return replace(query, columns=query.columns + (COMPLETE_COLUMN,)), iter(())
        with _deep_recursion():
            _, batches = self.connection().stream(query.expression, batch_size)
        return query, ([flag(tuple(row)) for row in batch] for batch in batches)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> "KpiProject":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_request(kpis: Sequence[str] = (), *, by: Iterable[str] = (), grain: str | None = None,
                 start: dt.date | str | None = None, end: dt.date | str | None = None, where: str | None = None,
                 having: str | None = None, order_by: Iterable[str] = (), limit: int | None = None,
                 formulas: Iterable[str] = (), fill: bool = False) -> Request:
    if isinstance(kpis, str):
        kpis = [kpis]
    if isinstance(by, str):
        by = [by]
    if isinstance(order_by, str):
        order_by = [order_by]
    if isinstance(formulas, str):
        formulas = [formulas]
    return Request(kpis=tuple(kpis), formulas=tuple(formulas), dimensions=tuple(by), grain=grain,
                   start=_date(start, "start"), end=_date(end, "end"), where=where, having=having,
                   order_by=tuple(order_by), limit=limit, fill=fill)


def _date(value: dt.date | str | None, what: str) -> dt.date | None:
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise UsageError(f"'{value}' is not a date ({what}).", None, "Write dates as YYYY-MM-DD.") from None


def check_project(path: str | Path, *, warehouse: str | Mapping[str, Any] | None = None, describe: bool = True,
                  registry: Registry | None = None) -> tuple[Model | None, list[KpiEngineError]]:
    """Validate a project: the model when it is sound, and every problem found in it.

    Goes as far as it can: objects with schema problems are left out and the rest is
    still resolved and checked against the warehouse.
    """
    project, errors = read_project(path)
    if project is None:
        return None, errors
    model = None
    with KpiProject(project, warehouse=warehouse, registry=registry) as kpi_project:
        try:
            model = kpi_project.model(describe)
        except ProjectInvalid as invalid:
            errors.extend(invalid.errors)
        except KpiEngineError as error:
            errors.append(error)
    return (None if errors else model), in_file_order(errors)


def open_project(path: str | Path, *, warehouse: str | Mapping[str, Any] | None = None,
                 registry: Registry | None = None, timeout: float | None = None) -> KpiProject:
    """Load a project folder (raises ``ProjectInvalid`` listing every problem in its files)."""
    return KpiProject(load_project(path), warehouse=warehouse, registry=registry, timeout=timeout)


__all__ = ["KpiProject", "open_project", "make_request", "redact", "warehouse_settings", "Location",
           "WarehouseError"]
