"""What the five cloud adapters share: settings with secrets from the environment, the driver
imported lazily, one driver session per thread, a label on every query, cancellation on a
timeout or Ctrl-C, password-free errors, and column types from INFORMATION_SCHEMA.

Each warehouse module (snowflake, bigquery, redshift, databricks, trino) subclasses
``CloudAdapter`` and ``CloudConnection`` and fills in what its driver does differently.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from kpi_engine.adapters.postgres import interpolate
from kpi_engine.errors import ConnectionFailed, QueryFailed, QueryTimeout, WarehouseError
from kpi_engine.hookspecs import Adapter, Connection, Rows, asked_kpis, query_text, timeout_seconds
from kpi_engine.interrupts import on_ctrl_c
from kpi_engine.redaction import redact
from sqlglot import exp

_log = logging.getLogger("kpi_engine.cloud")
APPLICATION = "kpi-engine"
SOURCE_HINT = "Check that the tables and columns the sources name exist ('kpi-engine validate' checks them)."
_ENV_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


def label_names(kpis: tuple[str, ...]) -> tuple[str, ...]:
    """KPI names as labels carry them: letters, digits and '_' only. Names are identifiers
    already; this keeps a label from ever closing a SQL comment or splitting a tag list."""
    return tuple(_UNSAFE.sub("_", str(name)) for name in kpis)


def query_label(kpis: tuple[str, ...]) -> str:
    """``kpi-engine: cost_per_lead, close_rate``: what every query says it is for (KPI names are
    identifiers, checked when the project is read); the engine's own queries say ``kpi-engine``."""
    return f"{APPLICATION}: {', '.join(kpis)}" if kpis else APPLICATION


@dataclass
class Target:
    """A warehouse's settings once read: ``values`` may be shown, ``secrets`` never are."""

    warehouse: str
    values: dict[str, str]
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    query_timeout: float | None = None
    where: str = ""

    @property
    def hidden(self) -> list[str]:
        return [value for value in self.secrets.values() if value]


def read_target(adapter: type["CloudAdapter"], settings: Mapping[str, Any], project_root: Path) -> Target:
    """The settings of ``warehouse:`` (a mapping, or ``{"url": ...}``) checked against what the
    adapter takes. A secret is read from the environment: ``${NAME}`` in the setting, or the
    adapter's default variable (``SNOWFLAKE_PASSWORD``...) when the setting is absent; written
    literally in kpi_engine.yaml it is refused, so a project file never holds one."""
    known = ("url", *adapter.settings, *adapter.secret_env, "query_timeout")
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise WarehouseError(f"unknown {adapter.warehouse} setting(s): {', '.join(unknown)}.", None,
                             f"The {adapter.name} adapter takes {', '.join(known)}.")
    values: dict[str, str] = dict(_split_url(adapter, str(settings["url"]))) if settings.get("url") else {}
    for key in adapter.settings:
        if settings.get(key) is not None:
            values[key] = interpolate(settings[key], key)
    secrets: dict[str, str] = {}
    for key, variable in adapter.secret_env.items():
        raw = settings.get(key)
        if raw is None:
            if os.environ.get(variable):
                secrets[key] = os.environ[variable]
            continue
        if not _ENV_REFERENCE.search(str(raw)):
            raise WarehouseError(f"the {adapter.warehouse} setting '{key}' is written in the project file; secrets "
                                 "are read from the environment only.", None,
                                 f"Write '{key}: ${{{variable}}}' and set {variable} in the environment (or leave "
                                 f"'{key}' out: {variable} is read when it is set).")
        secrets[key] = interpolate(raw, key)
    missing = [key for key in adapter.required if not values.get(key)]
    if missing:
        raise WarehouseError(f"the {adapter.warehouse} warehouse has no {', '.join(repr(k) for k in missing)}.", None,
                             f"Set {' and '.join(missing)} in the warehouse settings, or use a URL such as "
                             f"{adapter.url_example}.")
    for key in adapter.path_settings:  # key files, relative to the project folder
        if values.get(key):
            path = (Path(project_root) / Path(values[key]).expanduser()).resolve()
            if not path.is_file():
                raise WarehouseError(f"the file '{path}' ({key}) does not exist.", None,
                                     f"Fix '{key}' (relative to the project folder).")
            values[key] = str(path)
    timeout = settings.get("query_timeout", values.pop("query_timeout", None))
    target = Target(adapter.warehouse, values, secrets,
                    timeout_seconds(timeout, "query_timeout") if timeout not in (None, "") else None)
    target.where = adapter.where(target)
    return target


def _split_url(adapter: type["CloudAdapter"], url: str) -> dict[str, str]:
    """``scheme://user@host:port/path?option=value`` -> settings, ${NAME} filled in after splitting.
    A password in the URL is refused: it belongs in the environment."""
    text = url.strip()
    scheme, sep, _ = text.partition("://")
    if not sep or scheme.lower() not in (adapter.name, *adapter.schemes):
        raise WarehouseError(f"the warehouse URL is not a {adapter.warehouse} URL.", None,
                             f"Write it as {adapter.url_example}.")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise WarehouseError(f"the warehouse URL is not valid: {redact(str(error), [text])}.", None,
                             f"Write it as {adapter.url_example}.") from None
    if parts.password is not None:
        raise WarehouseError(f"the {adapter.warehouse} URL holds a password; secrets are read from the environment "
                             "only.", None, f"Remove it from the URL and set {adapter.secret_hint()}.")
    found = adapter.url_parts(parts.username and unquote(parts.username), parts.hostname and unquote(parts.hostname),
                              port, [unquote(p) for p in parts.path.split("/") if p])
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in adapter.settings and key != "query_timeout":
            raise WarehouseError(f"the warehouse URL has an unknown option '{key}'.", None,
                                 f"{adapter.warehouse} URLs take {', '.join(adapter.settings)} after '?'.")
        found[key] = value
    return {key: interpolate(value, f"url ({key})") for key, value in found.items() if value is not None}


class CloudAdapter(Adapter):
    """An adapter whose driver is an optional dependency, imported when a project connects."""

    warehouse: ClassVar[str]  # the name messages use: "Snowflake"
    driver: ClassVar[str]  # the module imported: "snowflake.connector"
    package: ClassVar[str]  # its PyPI name
    extra: ClassVar[str]  # the extra of kpi-engine-cloud that installs it
    settings: ClassVar[tuple[str, ...]] = ()
    secret_env: ClassVar[dict[str, str]] = {}  # secret setting -> the environment variable read by default
    required: ClassVar[tuple[str, ...]] = ()
    path_settings: ClassVar[tuple[str, ...]] = ()
    url_example: ClassVar[str] = ""
    connection_class: ClassVar[type["CloudConnection"]]

    @classmethod
    def url_parts(cls, user: str | None, host: str | None, port: int | None, path: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def where(cls, target: Target) -> str:
        return target.values.get("host") or target.values.get("account") or target.values.get("project") or "?"

    @classmethod
    def secret_hint(cls) -> str:
        return " or ".join(cls.secret_env.values()) or "the driver's credentials"

    @classmethod
    def import_driver(cls):
        try:
            return importlib.import_module(cls.driver)
        except ImportError:
            raise WarehouseError(f"the {cls.warehouse} adapter needs {cls.package}, which is not installed.", None,
                                 f"Install it with: pip install 'kpi-engine-cloud[{cls.extra}]'") from None

    @classmethod
    def connect(cls, settings: Mapping[str, Any], project_root: Path) -> Connection:
        target = read_target(cls, settings, Path(project_root))
        return cls.connection_class(target, cls.import_driver())


@dataclass
class Running:
    """The query in flight, as far as the driver has told (a cursor, a job, a query id). A cancel
    asked for before the driver has told (the timeout passing while the query is being submitted)
    is made as soon as it does."""

    session: Any = None
    cancel: Any = None  # the connection's cancel(running)
    handle: Any = None
    pending: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def started(self, handle: Any) -> None:
        with self._lock:
            self.handle = handle
            pending = self.pending
        if pending:
            self.stop()

    def stop(self) -> None:
        with self._lock:
            if self.handle is None:
                self.pending = True
                return
        with contextlib.suppress(Exception):  # the query may have ended meanwhile
            self.cancel(self)


class CloudConnection(Connection):
    """Queries through one driver session per thread; every query labelled, and cancelled in the
    warehouse when ``query_timeout`` passes or Ctrl-C arrives."""

    dialect: ClassVar[str]
    #: INFORMATION_SCHEMA stores unquoted names in this case (None: as written).
    name_case: ClassVar[str | None] = None

    def __init__(self, target: Target, driver):
        self.target = target
        self.driver = driver
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Any] = []
        self._closed = False
        self._local.session = self._open()  # a wrong password or host is reported when connecting

    # -- what each warehouse fills in
    def open_session(self):
        """A driver connection, set up (session settings, read-only where the warehouse allows)."""
        raise NotImplementedError

    def run(self, session, sql: str, kpis: tuple[str, ...], running: Running) -> tuple[tuple[str, ...], list]:
        """Send ``sql`` labelled with ``kpis``; give what cancels it to ``running.started`` as soon
        as the driver tells; return the column names and the rows."""
        raise NotImplementedError

    def cancel(self, running: Running) -> None:
        """Stop the query in the warehouse (called from another thread)."""
        raise NotImplementedError

    def describe(self, session, sql: str) -> dict[str, str]:
        """Column names and type names of a query that returns no rows (``sql:`` sources)."""
        cursor = session.cursor()
        try:
            cursor.execute(sql)
            cursor.fetchall()  # LIMIT 0: nothing; some clients describe the columns once it is read
            return {column[0]: self.type_name(column[1]) for column in cursor.description or ()}
        finally:
            cursor.close()

    def type_name(self, code: Any) -> str:
        """A type name from a type code of cursor.description."""
        return str(code).upper()

    def information_schema(self, relation: exp.Table) -> exp.Table:
        """The COLUMNS view that describes ``relation``'s table: in its catalog (database), if named."""
        catalog = relation.args.get("catalog")
        return exp.Table(this=exp.to_identifier("columns"), db=exp.to_identifier("information_schema"),
                         catalog=catalog.copy() if catalog else None)

    def current_schema(self) -> exp.Expression:
        """The schema an unqualified table name is read from."""
        return exp.CurrentSchema()

    def errors(self) -> tuple[type[BaseException], ...]:
        return (self.driver.Error,) if hasattr(self.driver, "Error") else (Exception,)

    # -- sessions
    def _open(self):
        try:
            session = self.open_session()
        except WarehouseError:
            raise
        except self.errors() + (OSError, ValueError) as error:  # ValueError: a malformed key file, for one
            raise ConnectionFailed(f"cannot connect to {self.target.warehouse} at {self.target.where}: "
                                   f"{self._message(error)}.", None,
                                   "Check the warehouse settings and the credentials in the environment "
                                   f"({self.credentials_hint()}).") from None
        with self._lock:
            if self._closed:
                with contextlib.suppress(Exception):
                    session.close()
                raise WarehouseError(f"the {self.target.warehouse} connection is closed.", None, "Open the project again.")
            self._opened.append(session)
        return session

    def credentials_hint(self) -> str:
        return "the secrets are read from the environment, never from the project"

    def _session(self):
        if self._closed:
            raise WarehouseError(f"the {self.target.warehouse} connection is closed.", None, "Open the project again.")
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._open()
        return session

    def _message(self, error: BaseException) -> str:
        text = str(error).strip() or type(error).__name__
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return redact(lines[0] if lines else text, self.target.hidden)

    # -- queries
    def execute(self, query) -> Rows:
        if not isinstance(query, exp.Expression):
            raise TypeError(f"{type(self).__name__}.execute takes a sqlglot expression")
        if not isinstance(query, exp.Query):
            raise QueryFailed(f"{self.target.warehouse} connections of kpi-engine only read: {type(query).__name__} "
                              "is not a query.", None, "Pass a SELECT.")
        columns, rows = self._guarded(query_text(query, self.dialect), label_names(asked_kpis(query)))
        return Rows(tuple(columns), [tuple(row) for row in rows])

    def _guarded(self, sql: str, kpis: tuple[str, ...], run=None):
        """Run with the timeout and Ctrl-C both cancelling the query in the warehouse."""
        session = self._session()
        running = Running(session=session, cancel=self.cancel)
        timed_out = threading.Event()
        stop = running.stop

        def expire() -> None:
            timed_out.set()
            _log.info("%s query over its query_timeout of %s s: cancelling it", self.target.warehouse,
                      self.target.query_timeout)
            stop()

        timer = threading.Timer(self.target.query_timeout, expire) if self.target.query_timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            with on_ctrl_c(stop):
                try:
                    return (run or self.run)(session, sql, kpis, running)
                except self.errors() as error:
                    if timed_out.is_set():
                        raise self._timeout() from None
                    raise self.query_error(error) from None
                except BaseException:  # Ctrl-C in the driver's Python code, or another failure: stop it there
                    if running.handle is not None:
                        stop()
                    if timed_out.is_set():
                        raise self._timeout() from None
                    raise
        finally:
            if timer is not None:
                timer.cancel()

    def _timeout(self) -> QueryTimeout:
        return QueryTimeout(f"{self.target.warehouse} query cancelled after the query_timeout of "
                            f"{self.target.query_timeout:g} s.", None,
                            "Raise 'query_timeout' (or --timeout), or ask for less (a shorter --from/--to range, "
                            "fewer KPIs or dimensions).")

    def query_error(self, error: BaseException) -> WarehouseError:
        return QueryFailed(f"the query failed in {self.target.warehouse}: {self._message(error)}. It was not run "
                           "again.", None, SOURCE_HINT)

    # -- description
    def columns(self, relation) -> Mapping[str, str] | None:
        if not isinstance(relation, (exp.Table, exp.Subquery)):
            raise TypeError(f"cannot describe a {type(relation).__name__}")
        if isinstance(relation, exp.Subquery):
            sql = exp.select(exp.Star()).from_(relation.copy()).limit(0).sql(dialect=self.dialect)
            try:
                return self._guarded(sql, (), lambda session, sql, kpis, running: self.describe(session, sql))
            except QueryFailed as failed:
                raise WarehouseError(f"cannot describe the source's sql in {self.target.warehouse}: "
                                     f"{failed.message}", None, "Check the source's sql.") from None
        query = self.columns_query(relation)
        _, rows = self._guarded(query.sql(dialect=self.dialect), ())
        return {str(name): str(kind) for name, kind in rows} or None

    def _name(self, identifier: exp.Identifier | None) -> exp.Expression | None:
        if identifier is None:
            return None
        name = identifier.name
        if self.name_case == "lower":
            name = name.lower()
        elif self.name_case == "upper" and not identifier.quoted:
            name = name.upper()
        return exp.Literal.string(name)

    def columns_query(self, relation: exp.Table) -> exp.Select:
        """SELECT column_name, data_type FROM <catalog>.INFORMATION_SCHEMA.COLUMNS WHERE table_schema = ...
        AND table_name = ..., built as sqlglot nodes (the names as quoted literals)."""
        schema = self._name(relation.args.get("db")) or self.current_schema()
        return (exp.select(exp.column("column_name"), exp.column(self.type_column))
                .from_(self.information_schema(relation))
                .where(exp.EQ(this=exp.column("table_schema"), expression=schema))
                .where(exp.EQ(this=exp.column("table_name"), expression=self._name(relation.args.get("this"))))
                .order_by(exp.column("ordinal_position")))

    type_column: ClassVar[str] = "data_type"

    def close(self) -> None:
        with self._lock:
            self._closed = True
            opened, self._opened = self._opened, []
        for session in opened:
            with contextlib.suppress(Exception):
                session.close()
