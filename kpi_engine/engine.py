"""The Python API: open a project, compile or evaluate KPIs.

    from kpi_engine import open_project

    with open_project("examples/marketing") as project:
        result = project.evaluate(["cost_per_lead", "nps"], by=["channel"], grain="month")
        result.to_dicts()      # or result.to_pandas()
        print(project.compile(["cost_per_lead"], dialect="postgres").sql())
"""

from __future__ import annotations

import datetime as dt
import operator
import os
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .calendar import SUBDAILY, Calendar
from .compiler import COMPLETE_COLUMN, CompiledQuery, Request, compile_request, extent_query
from .source_sql import ExtentsNeeded, source_relation
from .conversions import described as conversion_columns
from .completeness import Extent, as_date, as_period, complete_range, is_complete
from .dates import FORMS, last_periods, parse_last, resolve_day
from .errors import (KpiEngineError, Location, ProjectInvalid, ResolveError, SpecError, TextColumnError, UsageError,
                     WarehouseError, did_you_mean, in_file_order)
from .hookspecs import KPIS_META, Connection, TextValue, rendered, timeout_seconds
from .parser import _deep_recursion
from .plugins import Registry, default_registry
from .redaction import redact
from .resolve import Model, column_type, resolve
from .result import Result
from .spec import Project, load_project, read_project

_URL_SCHEME = re.compile(r"^([a-z][a-z0-9_+]*):")


def warehouse_settings(warehouse: str | Mapping[str, Any] | None,
                       project: Project | None = None) -> tuple[str, dict[str, Any]]:
    """(adapter name, settings) from a URL or a ``warehouse:`` mapping (a dbt profile target's,
    read from profiles.yml, when it names ``dbt_profile``)."""
    if isinstance(warehouse, Mapping) and "dbt_profile" in warehouse:
        from .dbt import DbtSettings, profile_warehouse

        root = project.config.root if project else Path.cwd()
        return profile_warehouse(warehouse, DbtSettings.of(project.config.dbt if project else None, root))
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
    if not isinstance(settings.get("adapter"), str):
        raise UsageError("the warehouse settings have no 'adapter'.", None,
                         "Name one, e.g. {'adapter': 'duckdb', 'data': 'data'} ('kpi-engine plugins' lists them).")
    return settings.pop("adapter"), settings


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
        # seconds; the warehouse cancels longer queries
        self.timeout = timeout_seconds(timeout, "timeout", UsageError) if timeout is not None else None
        self.registry = registry or default_registry()
        self._warehouse = warehouse if warehouse is not None else project.config.warehouse
        self._connection: Connection | None = None
        self._model: Model | None = None
        self._unavailable: dict[str, KpiEngineError] = {}  # sources whose table cannot be read
        self._lock = threading.Lock()
        self._model_lock = threading.RLock()
        self._rollups: tuple[Model, dict, dict[str, str]] | None = None  # (model, rollups, fingerprints)
        self._writable = False  # kpi-engine materialize: the warehouse (a DuckDB file) opened for writing
        self._store_attached: bool | None = None  # the local rollup store: None not attached, else writable
        tables = getattr(project.config.calendar, "tables", None)
        if tables is not None:  # calendar tables (custom_calendars.py) are read from this warehouse, once
            tables.loader, tables.loaded = self._calendar_rows, {}

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
            adapter_name, _ = warehouse_settings(self._warehouse, self.project)
            return self.registry.adapter(adapter_name).dialect
        except KpiEngineError:
            if missing_ok:
                return None
            raise

    def connection(self) -> Connection:
        with self._lock:
            if self._connection is None:
                adapter_name, settings = warehouse_settings(self._warehouse, self.project)
                if self.timeout is not None:
                    settings["query_timeout"] = self.timeout
                if "writable" in settings:
                    raise UsageError("the warehouse setting 'writable' is not a setting of a project: requests always "
                                     "read through read-only sessions.", None,
                                     "Remove it; 'kpi-engine materialize' opens the warehouse for writing itself "
                                     "(docs/rollups.md).")
                if self._writable:
                    settings["writable"] = True
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
            if strict:  # one error for sources that read one broken file, not one each
                errors.extend({str(error): error for error in self._unavailable.values()}.values())
        try:
            model = resolve(self.project, catalog, self.registry.functions(), self._adapter_dialect())
        except ProjectInvalid as invalid:
            errors.extend(self._text_columns(invalid.errors) if describe else invalid.errors)
        if errors:
            raise ProjectInvalid(errors)
        self._model = model
        return model

    def _text_columns(self, errors: list[KpiEngineError]) -> list[KpiEngineError]:
        """Sums and averages of a column the warehouse reads as text, said once per column with the
        value that makes it text, when the warehouse can tell (a CSV file of a data folder)."""
        groups: dict[tuple[str, str], list[TextColumnError]] = {}
        for error in errors:
            if isinstance(error, TextColumnError):
                groups.setdefault((error.source, error.column), []).append(error)
        explained: dict[tuple[str, str], KpiEngineError] = {}
        for (source, column), found in groups.items():
            spec = self.project.sources[source]
            if spec.table is None or column in spec.column_map:
                continue  # read through a query or a map: the column is not the file's
            try:
                text = self.connection().text_value(source_relation(spec, self.dialect), column)
            except KpiEngineError:
                text = None
            if text is not None:
                explained[(source, column)] = _text_column_error(found, text)
        result = []
        for error in errors:
            key = (error.source, error.column) if isinstance(error, TextColumnError) else None
            if key not in explained:
                result.append(error)
            elif error is groups[key][0]:
                result.append(explained[key])
        return result

    def _describe(self) -> tuple[dict[str, dict[str, str]], dict[str, KpiEngineError]]:
        """Column types of every source, and the sources that cannot be read, with why."""
        connection = self.connection()
        catalog: dict[str, dict[str, str]] = {}
        unavailable: dict[str, KpiEngineError] = {}
        views = [source for source in self.project.sources.values() if source.axis_of]
        for source in self.project.sources.values():
            if source.unmapped or source.axis_of or source.conversion:
                continue  # declared to have no data (its KPIs are unavailable), or a view of other sources (below)
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
        for source in self.project.sources.values():  # the rows of its base source, and three columns
            if source.conversion and not source.unmapped:
                lost = [unavailable[name] for name in (source.conversion.from_, source.conversion.to) if name in unavailable]
                if lost:
                    unavailable[source.name] = lost[0]
                else:
                    columns = conversion_columns(source, self.project.sources[source.conversion.to], catalog)
                    if columns is not None:
                        catalog[source.name] = columns
        for view in views:  # the rows of its source: described once
            base = view.axis_of[0]
            if base in catalog:
                catalog[view.name] = catalog[base]
            elif base in unavailable:
                unavailable[view.name] = unavailable[base]
        return catalog, unavailable

    # -- queries
    def compile(self, kpis: Sequence[str] = (), *, dialect: str | None = None, describe: bool = True,
                **options: Any) -> CompiledQuery:
        """Compile KPIs into one query. ``options`` are those of ``make_request``: by, grain,
        start, end, last, as_of, where, having, order_by, limit, formulas and fill."""
        return self._compile(_request(kpis, options, ("dialect", "describe"), self.project),
                             _text(dialect, "dialect"),
                             _flag(describe, "describe"))

    def _compile(self, request: Request, dialect: str | None = None, describe: bool = True) -> CompiledQuery:
        target = dialect or self.dialect
        model = self.model(describe, strict=False)
        read_dialect = target if dialect is None else self.dialect  # once: it reads the warehouse settings
        extents: dict[str, Extent] = {}
        read_from: dict = {}  # source -> the rollup its extent was read from (None: its raw rows)
        routes = self._rollup_routes(model, request, target, describe) if self.project.rollups else None

        def read_extents(sources: Sequence[str], rollups: Mapping) -> None:
            found = self.extents(sources, describe, request.as_of, rollups=rollups)
            extents.update({name: found.get(name, Extent(None, None)) for name in sources})
            read_from.update({name: rollups.get(name) for name in sources})

        corrections = 2  # extents read off a guessed rollup are checked against the groupings compiled
        while True:  # e.g. interval sources read from the first day of their data: ask the warehouse for it
            if routes is not None:
                routes.begin()
            try:
                query = compile_request(model, request, target, read_dialect, extents, rollups=routes)
            except ExtentsNeeded as needed:
                if set(needed.sources) <= set(extents):
                    raise
                read_extents(needed.sources,
                             routes.guess(needed.sources, request.dimensions) if routes is not None else {})
                continue
            wrong = routes.misread(read_from) if routes is not None and corrections else []
            if not wrong:
                break
            corrections -= 1
            read_extents(wrong, routes.extent_rollups())
        if routes is not None:
            query = replace(query, extent_rollups=routes.extent_rollups())
        missing = [self._unavailable[name] for name in query.sources if name in self._unavailable]
        if missing:
            raise missing[0] if len(missing) == 1 else ProjectInvalid(missing)
        expression = self._prepare(query.expression, target)
        # the KPIs asked, for adapters that label their queries in the warehouse (hookspecs.asked_kpis)
        expression.meta[KPIS_META] = tuple(column.name for column in query.columns if column.role == "kpi")
        return replace(query, expression=expression)

    # -- rollups (rollups.py)
    def rollups(self, describe: bool = True) -> dict:
        """The project's rollups, resolved (raises ProjectInvalid listing what is wrong in them)."""
        from .rollups import fingerprint, resolve_rollups

        model = self.model(describe, strict=False)
        with self._model_lock:
            if self._rollups is None or self._rollups[0] is not model:
                rollups, errors = resolve_rollups(model)
                if errors:
                    raise ProjectInvalid(errors)
                prints = {name: fingerprint(model, rollup, self.dialect) for name, rollup in rollups.items()}
                self._rollups = (model, rollups, prints)
            return self._rollups[1]

    def rollup_state(self) -> dict:
        """rollup name -> RollupState of each materialized rollup, read from its store."""
        from .rollups import parse_state, state_query, state_relation, store_file

        rollups = self.rollups()
        connection = self.connection()
        states: dict = {}
        for store in sorted({rollup.store for rollup in rollups.values()}):
            if store == "local":
                if not hasattr(connection, "attach"):
                    continue  # a local store is a DuckDB file: only a DuckDB warehouse reads it
                file = store_file(self.project.config.root)
                if not file.is_file():
                    continue  # nothing materialized yet
                with self._model_lock:  # threads compiling at once attach it once
                    if self._store_attached is None:
                        connection.attach("kpi_rollups", file, read_only=True)
                        self._store_attached = False
            if connection.columns(state_relation(store)) is None:
                continue
            found = parse_state(connection.execute(self._prepare(state_query(store), self.dialect)).rows)
            states.update({name: state for name, state in found.items()
                           if name in rollups and rollups[name].store == store})
        return states

    def _rollup_routes(self, model: Model, request: Request, dialect: str, describe: bool):
        """What the compiler may read instead of raw rows: the materialized rollups whose
        definition has not changed since, with why each other one is not read."""
        from .rollups import Materialized, RollupRoutes, routes_offline

        if not request.rollups:  # (a rollup whose spec is wrong does not stop a raw read)
            return RollupRoutes(not_ready={name: (spec.body.get("source"), "")
                                           for name, spec in self.project.rollups.items()},
                                disabled="--no-rollups asks for the raw rows")
        rollups = self.rollups(describe)
        if not describe:
            return routes_offline(rollups, "compiled offline: which days are materialized is not known "
                                           "without the warehouse")
        if dialect != self.dialect:
            return routes_offline(rollups, f"the SQL is for {dialect}, and the rollups live in the {self.dialect} "
                                           "warehouse")
        try:
            states = self.rollup_state()
        except WarehouseError as error:  # e.g. a store locked by a materialize run: the raw rows still answer
            return routes_offline(rollups, f"the state of the rollups could not be read ({error.message.rstrip('.')})")
        prints = self._rollups[2]
        routes = RollupRoutes()
        local = hasattr(self.connection(), "attach")
        for name, rollup in rollups.items():
            state = states.get(name)
            if rollup.store == "local" and not local:
                routes.not_ready[name] = (rollup.source, f"'store: local' is a DuckDB file, and the warehouse is "
                                                         f"{self.dialect} (use 'store: warehouse')")
            elif state is None:
                routes.not_ready[name] = (rollup.source, "not materialized yet (run kpi-engine materialize)")
            elif state.fingerprint != prints[name]:
                routes.not_ready[name] = (rollup.source, "its definition (or its source's) changed since it was "
                                                         "materialized (run kpi-engine materialize)")
            else:
                routes.ready[name] = Materialized(rollup, state.first_day, state.last_day)
        return routes

    def materialize(self, names: Sequence[str] = (), *, start: dt.date | str | None = None,
                    end: dt.date | str | None = None, full: bool = False) -> list[dict[str, Any]]:
        """Compute and store the day totals of rollups ``names`` (default: all): every day on the
        first run, with ``full`` or after a definition changed; else the days from the last
        materialized one minus its lookback (or ``start``) to ``end`` (default today, excluded).
        Each rollup is replaced in one transaction: on failure nothing of it is written.
        Returns what was done per rollup."""
        calendar = self.project.config.calendar
        start, end = _date(start, "start", calendar), _date(end, "end", calendar)
        full = _flag(full, "full")
        rollups = self.rollups()
        if not rollups:
            raise UsageError("the project declares no rollups.", None,
                             "Declare them under 'rollups:' in a spec file (docs/rollups.md).")
        chosen = list(dict.fromkeys(_texts(names, "rollups")))
        for name in chosen:
            if name not in rollups:
                raise UsageError(f"unknown rollup '{name}'.", None, did_you_mean(name, rollups) or
                                 f"The project's rollups: {', '.join(sorted(rollups))}.")
        chosen = [rollups[name] for name in chosen or sorted(rollups)]
        adapter, settings = warehouse_settings(self._warehouse, self.project)
        local = [r.name for r in chosen if r.store == "local"]
        if local and adapter != "duckdb":
            raise UsageError(f"rollup '{local[0]}' is kept in a local DuckDB file ('store: local', the default), "
                             f"which only a DuckDB warehouse reads; the warehouse is {adapter}.", None,
                             "Give it 'store: warehouse' to keep it as a table in the warehouse.")
        if adapter not in ("duckdb", "postgres", "postgresql"):
            raise UsageError(f"rollups are written to DuckDB or PostgreSQL warehouses, and the warehouse is {adapter}.",
                             None, "Read this project's raw rows (requests do so without a materialized rollup).")
        database = settings.get("path") or re.sub(r"^duckdb:(//)?", "", str(settings.get("url") or ""))
        in_warehouse = [r.name for r in chosen if r.store == "warehouse"]
        if in_warehouse and adapter == "duckdb" and database in ("", ":memory:"):
            raise UsageError(f"rollup '{in_warehouse[0]}' has 'store: warehouse', and the warehouse has no database "
                             "file to keep it in (a data folder is read into memory).", None,
                             "Use 'store: local' (a DuckDB file in the project's .kpi_engine folder), or a "
                             "warehouse with 'path: <file>.duckdb'.")
        if in_warehouse:
            self.close()
            self._writable = True
        try:
            return self._materialize(chosen, start, end, full)
        finally:  # the project reads as before: read-only, the local store attached for reading when asked
            self.close()
            self._writable, self._store_attached = False, None

    def _materialize(self, chosen: list, start: dt.date | None, end: dt.date | None, full: bool) -> list[dict[str, Any]]:
        from .rollups import plan_refresh, refresh_statements, store_file

        connection = self.connection()
        if any(r.store == "local" for r in chosen) and self._store_attached is not True:
            file = store_file(self.project.config.root)
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UsageError(f"cannot create the rollup store folder '{file.parent}': "
                                 f"{error.strerror or error}.", None, "Make the project folder writable.") from None
            connection.attach("kpi_rollups", file, read_only=False)
            self._store_attached = True
        states = self.rollup_state()
        prints = self._rollups[2]
        model = self.model(strict=False)
        today = self.project.config.calendar.today()
        done = []
        for rollup in chosen:
            exists = connection.columns(rollup.relation) is not None
            refresh = plan_refresh(rollup, states.get(rollup.name), prints[rollup.name], start, end, full, today,
                                   exists)
            now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
            statements = [self._prepare(s, self.dialect) for s in
                          refresh_statements(model, refresh, self.dialect, prints[rollup.name], now)]
            with _deep_recursion():
                connection.write(statements)
            state = self.rollup_state()[rollup.name]
            done.append({"rollup": rollup.name, "table": rollup.relation.sql(dialect=self.dialect),
                         "refresh": "full" if refresh.full else "incremental", "why": refresh.why,
                         "from": refresh.start, "to": refresh.end, "first_day": state.first_day,
                         "last_day": state.last_day, "rows": state.rows})
        return done

    def _prepare(self, expression, dialect: str):
        for adapter in self.registry.adapters_for_dialect(dialect):  # e.g. SQLite's date functions
            expression = adapter.prepare(expression)
        return expression

    def _calendar_rows(self, granularity) -> list[tuple]:
        """(day, first day of its period) of every row of a granularity's calendar table."""
        from sqlglot import exp

        from .sql_build import col, qualified_table

        query = exp.select(col(granularity.date_column), col(granularity.start_column), copy=False) \
            .from_(qualified_table(granularity.table), copy=False)
        with _deep_recursion():
            return list(self.connection().execute(self._prepare(query, self.dialect)).rows)

    def extents(self, sources: Iterable[str], describe: bool = True, today: dt.date | None = None,
                grain: str | None = None, rollups: Mapping | None = None) -> dict[str, Extent]:
        """The first and last day each source (with a time column) has data for, in one query
        (an open interval runs to ``today``, by default today in the project's time zone); at a
        sub-daily ``grain``, the first and last period of it (local datetimes). ``rollups``:
        source -> the materialized rollup (rollups.Materialized) a request reads it from, whose
        days stand for the rows it has materialized (CompiledQuery.extent_rollups)."""
        model = self.model(describe, strict=False)
        timed = [name for name in dict.fromkeys(sources) if model.sources[name].time]
        if not timed:
            return {}
        clock = grain in SUBDAILY
        query = extent_query(model, timed, self.dialect, self.dialect, today, clock, rollups)
        query = self._prepare(query, self.dialect)
        with _deep_recursion():
            rows = self.connection().execute(query).rows
        if clock:
            calendar = self.project.config.calendar
            return {row[0]: Extent(*(None if v is None else calendar.period_start(as_period(v, grain), grain)
                                     for v in row[1:3]), grain) for row in rows}
        return {row[0]: Extent(as_date(row[1]), as_date(row[2])) for row in rows}

    def _run_plan(self, kpis: Sequence[str], complete_only: bool, describe: bool, options: Mapping[str, Any]):
        """The query to run and a function adding each row's ``complete`` flag (None when no
        row can be complete, under ``complete_only``)."""
        request = _request(kpis, options, ("describe", "complete_only", "batch_size"), self.project)
        complete_only, describe = _flag(complete_only, "complete_only"), _flag(describe, "describe")
        query = self._compile(request, describe=describe)
        calendar = self.project.config.calendar
        model = self.model(describe, strict=False)
        cohorts = any(model.kpi(name).spec.matures_after_days for name in request.kpis)
        timed = request.grain or request.start or request.end or cohorts
        extents = self.extents(query.sources, describe, request.as_of, request.grain,
                               rollups=query.extent_rollups) if timed else {}
        maturities = self.maturities(model, request.kpis, extents)
        if complete_only and request.grain:  # complete periods are contiguous: run on them alone
            narrowed = complete_range(request.grain, request.start, request.end, extents, calendar, maturities)
            if narrowed is None:
                return query, None
            query = self._compile(replace(request, start=narrowed[0], end=narrowed[1]), describe=describe)

        def flag(row: tuple) -> tuple:
            period = as_period(row[0], request.grain) if request.grain else None
            return row + (is_complete(period, request.grain, request.start, request.end, extents, calendar,
                                      maturities),)

        if complete_only and not request.grain and not is_complete(None, None, request.start, request.end,
                                                                   extents, calendar, maturities):
            return query, None
        return replace(query, columns=query.columns + (COMPLETE_COLUMN,)), flag

    @staticmethod
    def maturities(model: Model, kpis: Sequence[str], extents: Mapping[str, Extent]) -> list[tuple[int, dt.date | None]]:
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
        sql = query.sql()  # rendered once: a query too deep to write out fails cleanly here
        if flag is None:
            return Result(query.columns + (COMPLETE_COLUMN,), [], sql)
        with _deep_recursion(), rendered(query.expression, query.dialect, sql):  # the adapter runs this text
            rows = self.connection().execute(query.expression)
        return Result(query.columns, [flag(tuple(row)) for row in rows.rows], sql)

    def values(self, dimensions: Sequence[str] | str, *, sources: Iterable[str] | str | None = None,
               grain: str | None = None, start: dt.date | str | None = None, end: dt.date | str | None = None,
               where: str | None = None, limit: int | None = None, describe: bool = True) -> Result:
        """The values ``dimensions`` take (with the period, given a ``grain``) where ``sources``
        have rows in the range, after ``where``: a query of dimensions only, one row per distinct
        key. Without ``sources``, every source that has all the dimensions (and a time column,
        when the request cuts by time) is read and the keys of any of them are listed."""
        from .calendar import PARTS
        from .resolve import dimension_paths
        from .source_sql import has_dimension

        request = _request((), {"by": dimensions, "grain": grain, "start": start, "end": end, "where": where,
                                "limit": limit}, (), self.project)
        if not request.dimensions and not request.grain:
            raise UsageError("name at least one dimension (or a --grain) to list values of.", None,
                             "For example: kpi-engine values PROJECT channel --grain month.")
        model = self.model(_flag(describe, "describe"), strict=False)
        timed = bool(request.grain or request.start or request.end)

        def has_all(name: str) -> bool:  # (a time axis's view holds its source's rows again: left out)
            source = model.sources[name]
            return (not source.unmapped and not source.axis_of and (source.time or not timed)
                    and all(has_dimension(model, name, d) for d in request.dimensions))

        known = {d for name in model.sources for d in dimension_paths(model.sources, name)} | set(PARTS)
        for dim in request.dimensions:
            if dim not in known:
                raise UsageError(f"unknown dimension '{dim}'.", None,
                                 did_you_mean(dim, known) or "See the dimensions with 'kpi-engine list'.")
        chosen = list(dict.fromkeys(_texts(sources, "sources")))
        for name in chosen:
            if name not in model.sources:
                raise UsageError(f"unknown source '{name}'.", None, did_you_mean(name, model.sources) or None)
        chosen = chosen or [name for name in model.sources if has_all(name)]
        if not chosen:
            raise UsageError(f"no source has {', '.join(request.dimensions) or 'a time column'}"
                             f"{' and a time column' if timed and request.dimensions else ''}.", None,
                             "Check the dimension names with 'kpi-engine list', or name a source with --source.")
        request = replace(request, formulas=tuple(f"count({name})" for name in chosen))
        query = self._compile(request, describe=describe)
        keys = [column for column in query.columns if column.role != "kpi"]
        sql = query.sql()
        with _deep_recursion(), rendered(query.expression, query.dialect, sql):
            rows = self.connection().execute(query.expression).rows
        return Result(tuple(keys), [tuple(row[:len(keys)]) for row in rows], sql)

    def stream(self, kpis: Sequence[str] = (), *, batch_size: int = 10_000, complete_only: bool = False,
               describe: bool = True, **options: Any):
        """Compile and run, returning (the compiled query, an iterator of row batches):
        for results too large to hold in memory (see ``output.write_stream``)."""
        try:
            if isinstance(batch_size, bool) or operator.index(batch_size) < 1:
                raise TypeError
        except TypeError:
            raise UsageError(f"'batch_size' must be a whole number of at least 1, not {str(batch_size)[:40]!r}.",
                             None, "For example batch_size=10_000.") from None
        query, flag = self._run_plan(kpis, complete_only, describe, options)
        sql = query.sql()  # fails cleanly if the query is too deep to write out
        if flag is None:
            return replace(query, columns=query.columns + (COMPLETE_COLUMN,)), iter(())
        with _deep_recursion(), rendered(query.expression, query.dialect, sql):
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


def _text_column_error(found: list[TextColumnError], text: TextValue) -> TextColumnError:
    """One error for the formulas that add up a column a data file holds as text: where, which
    value, and the settings that read it as numbers."""
    first, column = found[0], found[0].column
    where = f"column '{column}' of data file '{text.file}'"
    if text.value is None:
        what = f"{where} is read as text: it holds no value in any row."
        hint = f"Declare its type in kpi_engine.yaml: 'warehouse: {{tables: {{{text.table}: {{types: {{{column}: number}}}}}}}}'"
    else:
        value = repr(text.value if len(text.value) <= 60 else text.value[:57] + "...")
        what = f"{where} is read as text: row {text.row} (line {text.row + 1} of the file) holds {value}."
        # Declared markers replace DuckDB's own, the empty field: it stays one.
        hint = (f"Declare {value} a marker of no value and the column a number in kpi_engine.yaml: 'warehouse: "
                f"{{csv: {{null: ['', {value}]}}, tables: {{{text.table}: {{types: {{{column}: number}}}}}}}}', "
                "or fix the value in the file")
    also = f" It is added up at {', '.join(str(error.location) for error in found[1:])} too." if found[1:] else ""
    return TextColumnError(f"'{first.func}' needs numbers, but {what}{also}", first.location,
                           hint + " (docs/specs.md, 'Reading a folder of CSV and Parquet files').", first.detail,
                           first.source, column, first.func)


REQUEST_OPTIONS = ("by", "grain", "start", "end", "last", "as_of", "where", "having", "order_by", "limit",
                   "formulas", "fill", "time_axis", "rollups")
MAX_LIMIT = 2 ** 63 - 1  # a LIMIT every warehouse can hold (a 64-bit integer)


def _request(kpis: Sequence[str], options: Mapping[str, Any], others: tuple[str, ...], project: Project) -> Request:
    """The request of the API's keyword arguments (``query=NAME`` runs a saved query, the other
    arguments given replacing its own); an unknown one is named, with a suggestion among the
    request's options and the method's ``others``."""
    options = dict(options)
    if options.get("query") is not None:
        raw = {"rollups": options["rollups"]} if "rollups" in options else {}  # False is given, not "unset"
        kpis, options = with_saved_query(project, _text(options.pop("query"), "query"), kpis, options)
        options.update(raw)
    options.pop("query", None)
    unknown = [name for name in options if name not in REQUEST_OPTIONS]
    if unknown:
        raise UsageError(f"unknown option '{unknown[0]}'.",
                         None, did_you_mean(unknown[0], REQUEST_OPTIONS + others + ("query",)))
    return make_request(kpis, calendar=project.config.calendar, **options)


_SAVED_OPTIONS = {"by": "by", "grain": "grain", "from": "start", "to": "end", "last": "last", "where": "where",
                  "having": "having", "order": "order_by", "limit": "limit", "formulas": "formulas", "fill": "fill",
                  "time_axis": "time_axis"}
_RANGE = ("start", "end", "last")


def with_saved_query(project: Project, name: str, kpis: Sequence[str] | str | None,
                     options: Mapping[str, Any]) -> tuple[Sequence[str] | str | None, dict[str, Any]]:
    """The KPIs and options of saved query ``name``, with those given here in place of its own
    (given KPIs replace its KPIs; a given --from, --to or --last replaces its whole range)."""
    saved = project.queries.get(name)
    if saved is None:
        raise UsageError(f"unknown saved query '{name}'.", None,
                         did_you_mean(name, project.queries) or "Saved queries are declared under 'queries:' in a "
                                                               "spec file (docs/specs.md).")
    merged = {option: saved.body[key] for key, option in _SAVED_OPTIONS.items() if key in saved.body}
    given = {key: value for key, value in options.items() if value not in (None, (), [], "", False)}
    if any(key in given for key in _RANGE):
        merged = {key: value for key, value in merged.items() if key not in _RANGE}
    return (kpis or tuple(saved.body.get("kpis", ()))), {**merged, **given}


def make_request(kpis: Sequence[str] | str | None = (), *, by: Iterable[str] | str | None = (),
                 grain: str | None = None, start: dt.date | str | None = None, end: dt.date | str | None = None,
                 last: str | Sequence[str | int] | None = None, as_of: dt.date | str | None = None,
                 where: str | None = None, having: str | None = None, order_by: Iterable[str] | str | None = (),
                 limit: int | None = None, formulas: Iterable[str] | str | None = (), fill: bool = False,
                 calendar: Calendar | None = None, time_axis: str | None = None, rollups: bool = True) -> Request:
    """A ``Request`` from the API's arguments, each checked: a wrong type raises ``UsageError``
    naming the argument (never a TypeError from deep inside).

    ``start`` and ``end`` are dates or text: YYYY-MM-DD or a day relative to today such as
    'start of quarter' or '6 months ago'; ``last`` ('6 months', or (6, 'months')) is the complete
    periods before the current one, instead of ``start`` and ``end`` (dates.py). ``as_of`` is
    "today" for them (default: today in the ``calendar``'s time zone, whose week start and fiscal
    year place weeks and fiscal periods)."""
    calendar = calendar or Calendar()
    today = _date(as_of, "as_of", calendar, clock=False)
    if last is not None:
        if start is not None or end is not None:
            raise UsageError("--last sets both ends of the range, so it cannot be combined with --from or --to.",
                             None, "Drop --from and --to, or write the range with them alone "
                                   "(--from 'start of year' --to today).")
        if not isinstance(last, (str, Sequence)) or isinstance(last, (bytes, bytearray)):
            raise UsageError(f"'last' must be text such as '6 months' or a pair (6, 'months'), not {_kind(last)}.",
                             None, "For example last='6 months'.")
        start, end = last_periods(*parse_last(last, "last"), today or calendar.today(), calendar,
                                  None if today else calendar.now())
    return Request(kpis=_texts(kpis, "kpis"), formulas=_texts(formulas, "formulas"), dimensions=_texts(by, "by"),
                   grain=_text(grain, "grain"), start=_date(start, "start", calendar, today),
                   end=_date(end, "end", calendar, today), where=_text(where, "where"), having=_text(having, "having"),
                   order_by=_texts(order_by, "order_by"), limit=_limit(limit), fill=_flag(fill, "fill"), as_of=today,
                   time_axis=_text(time_axis, "time_axis"), rollups=_flag(rollups, "rollups"))


# What each argument takes, for the error that says it was given something else.
_EXPECTED = {
    "kpis": ("KPI names", "kpis=['cost_per_lead']"), "by": ("dimension names", "by=['channel']"),
    "sources": ("source names", "sources=['leads']"), "rollups": ("rollup names", "['leads_daily']"),
    "order_by": ("output column names", "order_by=['-cost_per_lead']"),
    "formulas": ("formulas", "formulas=['sum(ad_spend.spend) / count(leads)']"),
    "grain": ("a grain", "grain='month'"), "time_axis": ("a time column", "time_axis='won_at'"), "where": ("a condition", "where=\"channel = 'email'\""),
    "having": ("a condition", "having='cost_per_lead > 100'"), "dialect": ("a dialect name", "dialect='postgres'"),
}


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _texts(value: Any, what: str) -> tuple[str, ...]:
    """One name (or formula) or a list of them; None for none."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    plural, example = _EXPECTED[what]
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise UsageError(f"'{what}' must be one of the {plural} or a list of them, not {_kind(value)}.", None,
                         f"For example {example}.")
    items = tuple(value)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise UsageError(f"'{what}' must hold text only, but item {index + 1} is {_kind(item)} "
                             f"({str(item)[:40]!r}).", None, f"For example {example}.")
    return items


def _text(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    kind, example = _EXPECTED[what]
    raise UsageError(f"'{what}' must be {kind} (text) or None, not {_kind(value)}.", None, f"For example {example}.")


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    raise UsageError(f"'{what}' must be True or False, not {_kind(value)}.", None, f"For example {what}=True.")


def _limit(value: Any) -> int | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # int, or an integer type such as numpy's; never '5' or 5.0
    except TypeError:
        raise UsageError(f"'limit' must be a whole number or None, not {_kind(value)} ({str(value)[:40]!r}).", None,
                         "For example limit=10.") from None
    if number > MAX_LIMIT:
        raise UsageError(f"'limit' is {number:,}; the largest limit is {MAX_LIMIT:,}.", None,
                         "Leave it out (None) to get every row.")
    return number


def _date(value: Any, what: str, calendar: Calendar, today: dt.date | None = None,
          clock: bool = True) -> dt.date | None:
    """A date, a local datetime, or text dates.py reads (relative days count from ``today``);
    ``clock=False``: a day only."""
    if value is None or isinstance(value, (dt.date, str)):
        return resolve_day(value, what, calendar, today, clock)
    raise UsageError(f"{str(value)[:40]!r} is not a date ({what}).", None,
                     f"Give a datetime.date or text: {FORMS}.")


def check_project(path: str | Path, *, warehouse: str | Mapping[str, Any] | None = None, describe: bool = True,
                  registry: Registry | None = None) -> tuple[Model | None, list[KpiEngineError]]:
    """Validate a project: the model when it is sound, and every problem found in it.

    Goes as far as it can: objects with schema problems are left out and the rest is
    still resolved and checked against the warehouse.
    """
    _check_location(path, warehouse)
    describe = _flag(describe, "describe")
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
        if describe:  # calendar tables are read and checked once here
            errors.extend(_calendar_table_errors(project))
        if model is not None and project.rollups:  # sources, dimensions and measures of the rollups
            from .rollups import resolve_rollups

            errors.extend(resolve_rollups(model)[1])
        if model is not None:  # each saved query compiles: its KPIs, dimensions, range and filters hold
            for query in project.queries.values():
                if not describe and project.config.calendar.is_custom(query.body.get("grain")):
                    continue  # its periods may need the warehouse (the data's extent, a calendar table)
                try:
                    kpi_project.compile(query=query.name, describe=describe, rollups=False)
                except KpiEngineError as error:
                    errors.append(SpecError(error.message, query.where(key=True), error.hint))
    return (None if errors else model), in_file_order(errors)


def _calendar_table_errors(project: Project) -> list[KpiEngineError]:
    config = project.config
    errors: list[KpiEngineError] = []
    for name, granularity in getattr(config.calendar, "granularities", {}).items():
        if granularity.kind == "table":
            try:
                config.calendar.table(granularity)
            except KpiEngineError as error:
                errors.append(SpecError(error.message if name in error.message else f"granularity '{name}': {error.message}",
                                        config.positions.at(("granularities", name), key=True), error.hint))
    return errors


def open_project(path: str | Path, *, warehouse: str | Mapping[str, Any] | None = None,
                 registry: Registry | None = None, timeout: float | None = None) -> KpiProject:
    """Load a project folder (raises ``ProjectInvalid`` listing every problem in its files)."""
    _check_location(path, warehouse)
    return KpiProject(load_project(path), warehouse=warehouse, registry=registry, timeout=timeout)


def _check_location(path: Any, warehouse: Any) -> None:
    """``path`` and ``warehouse`` of open_project and check_project have the types they document."""
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"'path' must be the project folder (a str or Path), not {_kind(path)}.", None,
                         "For example open_project('examples/marketing').")
    if warehouse is not None and not isinstance(warehouse, (str, Mapping)):
        raise UsageError(f"'warehouse' must be a URL or a mapping of settings, not {_kind(warehouse)}.", None,
                         "For example warehouse='duckdb:///warehouse.duckdb' or {'adapter': 'duckdb', 'data': 'data'}.")


__all__ = ["KpiProject", "open_project", "make_request", "redact", "warehouse_settings", "Location",
           "WarehouseError"]
