"""kpi-engine-sqlite: run kpi-engine projects on a SQLite database file.

A third-party adapter plugin, registered through the ``kpi_engine`` entry-point group::

    # kpi_engine.yaml
    warehouse: {adapter: sqlite, path: warehouse.sqlite}     # relative to the project folder
    # or: kpi-engine evaluate PROJECT ... --warehouse sqlite:///abs/path/warehouse.sqlite

Settings (``warehouse:`` in kpi_engine.yaml):

- ``path``: the database file, relative to the project folder. It is opened read-only
  (``file:...?mode=ro``): nothing kpi-engine runs can change it.
- ``url``: ``sqlite:///abs/file.db`` (absolute) or ``sqlite://relative/file.db``.
- ``query_timeout``: seconds; a longer query is interrupted inside SQLite.

Dates and timestamps are ISO-8601 text (``2025-01-31``, ``2025-01-31 14:05:00``);
declare their columns DATE, DATETIME or TIMESTAMP and boolean columns BOOLEAN (stored as
0/1) so kpi-engine knows their kinds. Time zones are not supported: SQLite has none.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from kpi_engine import errors, hookspecs
from kpi_engine.hookspecs import Adapter, Connection, Rows, hookimpl
from sqlglot import exp

from .rewrite import to_sqlite

__version__ = "0.1.0"
__all__ = ["SQLiteAdapter", "SQLiteConnection", "MIN_SQLITE_VERSION", "kpi_engine_adapters", "to_sqlite"]

WarehouseError = errors.WarehouseError
# The finer error kinds (and their exit codes) where this kpi-engine has them.
ConnectionFailed = getattr(errors, "ConnectionFailed", WarehouseError)
QueryFailed = getattr(errors, "QueryFailed", WarehouseError)
QueryTimeout = getattr(errors, "QueryTimeout", WarehouseError)
# The text the engine rendered a request's tree to (prepared by SQLiteAdapter.prepare already);
# a kpi-engine without it leaves every query to be rewritten and rendered here.
rendered_text = getattr(hookspecs, "rendered_text", lambda query, dialect: None)

#: RANGE BETWEEN n PRECEDING window frames need 3.28, NULLS FIRST/LAST 3.30.
MIN_SQLITE_VERSION = (3, 30, 0)
_SETTINGS = {"path", "url", "query_timeout"}
_SAMPLE = 50  # values read to recognise ISO dates in TEXT (or untyped) columns
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_TEXT_AFFINITY = ("CHAR", "CLOB", "TEXT")
_PROGRESS_STEPS = 10_000  # SQLite virtual machine steps between two looks at the clock


class SQLiteConnection(Connection):
    """One read-only sqlite3 connection per thread, all to the same file.

    sqlite3 connections belong to the thread that made them; a project shares its
    Connection between threads, so each thread gets its own (opened on first use).
    """

    dialect = "sqlite"

    def __init__(self, file: Path, timeout: float | None = None):
        self.file = file
        self._uri = file.as_uri() + "?mode=ro"
        self._timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[sqlite3.Connection] = []
        self._closed = False
        self._local.connection = self._open()  # fail now, at connect, when the file is no database

    # -- connections
    def _open(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
            connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
        except sqlite3.Error as error:
            raise ConnectionFailed(f"cannot open the SQLite database '{self.file}': {_first_line(error)}", None,
                                   "Check that the file is a SQLite database and readable.") from None
        with self._lock:
            if self._closed:
                connection.close()
                raise WarehouseError("the SQLite connection is closed.", None, "Open the project again.")
            self._opened.append(connection)
        return connection

    def _connection(self) -> sqlite3.Connection:
        """This thread's sqlite3 connection (the driver's, read-only)."""
        if self._closed:
            raise WarehouseError("the SQLite connection is closed.", None, "Open the project again.")
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._open()
        return connection

    # -- queries
    def execute(self, query) -> Rows:
        columns, batches = self.stream(query, batch_size=None)
        return Rows(columns, [row for batch in batches for row in batch])

    def stream(self, query, batch_size: int | None = 10_000) -> tuple[tuple[str, ...], Iterator[list[tuple]]]:
        """Rows in batches of ``batch_size`` (all at once when None), read as they are fetched."""
        if not isinstance(query, exp.Expression):
            raise TypeError("SQLiteConnection takes a sqlglot expression")
        if not isinstance(query, exp.Query):
            raise QueryFailed(f"SQLite connections of kpi-engine only read: {type(query).__name__} is not a query.",
                              None, "Pass a SELECT.")
        sql = rendered_text(query, self.dialect)  # the text the result shows, when the engine runs its request
        if sql is None:  # any other tree: make it runnable (a no-op on one compiled for SQLite) and render it
            query = to_sqlite(query)
            sql = query.sql(dialect=self.dialect)
        dates = _date_columns(query)
        connection = self._connection()
        guard = _Guard(self._timeout)
        cursor = connection.cursor()
        try:
            with guard.running(connection):
                cursor.execute(sql)
                first = cursor.fetchall() if batch_size is None else cursor.fetchmany(batch_size)
        except BaseException as error:
            cursor.close()
            if isinstance(error, sqlite3.Error):
                raise self._failure(error, guard) from None
            raise
        columns = tuple(d[0] for d in cursor.description or ())
        return columns, self._batches(cursor, first, batch_size, dates, guard, connection)

    def _batches(self, cursor, first: list, batch_size: int | None, dates: list[bool], guard: "_Guard",
                 connection: sqlite3.Connection):
        try:
            batch = first
            while batch:
                yield _with_dates(batch, dates)
                if batch_size is None:
                    return
                with guard.running(connection):
                    batch = cursor.fetchmany(batch_size)
        except sqlite3.Error as error:
            raise self._failure(error, guard) from None
        finally:
            cursor.close()

    def _failure(self, error: sqlite3.Error, guard: "_Guard") -> WarehouseError:
        if guard.interrupted or (not guard.expired and _first_line(error) == "interrupted"):
            raise KeyboardInterrupt
        if guard.expired:
            return QueryTimeout(f"the query ran longer than the {self._timeout:g} s timeout and was interrupted "
                                f"in SQLite ({self.file.name}).", None,
                                "Narrow the request (--from/--to, fewer KPIs) or raise query_timeout / --timeout.")
        message = _first_line(error)
        hint = "Check that the tables and columns the sources name exist ('kpi-engine validate' checks them)."
        if "readonly" in message or "read-only" in message:
            hint = "kpi-engine opens SQLite databases read-only; it never writes to them."
        elif "no such function" in message:
            hint = "SQLite lacks this function; a plugin function or a source's sql may use another engine's SQL."
        return QueryFailed(f"the query failed in SQLite ({self.file.name}): {message}", None, hint)

    # -- description
    def columns(self, relation) -> Mapping[str, str] | None:
        """Declared column types (what ``PRAGMA table_info`` says); a TEXT or untyped column
        whose values are ISO dates or timestamps is reported as DATE or TIMESTAMP."""
        connection = self._connection()
        try:
            if isinstance(relation, exp.Subquery):
                declared = self._query_types(connection, relation)
            elif isinstance(relation, exp.Table):
                declared = self._table_types(connection, relation)
            else:
                raise TypeError(f"cannot describe a {type(relation).__name__}")
            if declared is None:
                return None
            return {name: self._kind(connection, relation, name, kind) for name, kind in declared.items()}
        except sqlite3.Error as error:
            if "no such table" in str(error) or "unknown database" in str(error):
                return None
            raise QueryFailed(f"cannot describe {relation.sql(dialect=self.dialect)} in SQLite: {_first_line(error)}",
                              None, "Check the source's table or sql.") from None

    @staticmethod
    def _table_types(connection: sqlite3.Connection, table: exp.Table) -> dict[str, str] | None:
        if table.args.get("catalog") is not None:
            return None  # SQLite names are schema.table at most
        schema = table.text("db")
        sql = "SELECT name, type FROM pragma_table_info(?, ?)" if schema else "SELECT name, type FROM pragma_table_info(?)"
        rows = connection.execute(sql, (table.name, schema) if schema else (table.name,)).fetchall()
        return {name: declared for name, declared in rows} or None

    @staticmethod
    def _query_types(connection: sqlite3.Connection, relation: exp.Subquery) -> dict[str, str]:
        inner = relation.this
        cursor = connection.execute(exp.select(exp.Star()).from_(relation.copy()).limit(0).sql(dialect="sqlite"))
        names = [d[0] for d in cursor.description]
        cursor.close()
        # A temporary view (in memory, never in the file) tells the declared types of the columns
        # the query passes through; computed columns have none.
        view = f"kpi_engine_describe_{threading.get_ident()}_{time.monotonic_ns()}"

        def table() -> exp.Table:
            return exp.Table(this=exp.to_identifier(view, quoted=True), db=exp.to_identifier("temp"))

        try:
            connection.execute(exp.Create(kind="VIEW", this=table(), expression=inner.copy()).sql(dialect="sqlite"))
        except sqlite3.Error:
            return {name: "" for name in names}
        try:
            declared = dict(connection.execute("SELECT name, type FROM pragma_table_info(?, 'temp')", (view,)).fetchall())
        finally:
            connection.execute(exp.Drop(kind="VIEW", exists=True, tables=[table()]).sql(dialect="sqlite"))
        return {name: declared.get(name, "") for name in names}

    @staticmethod
    def _kind(connection: sqlite3.Connection, relation, column: str, declared: str) -> str:
        declared = (declared or "").strip().upper()
        if declared and not any(word in declared for word in _TEXT_AFFINITY):
            return declared
        # TEXT or no declared type: look at a few values.
        source = relation.copy()
        value = exp.Column(this=exp.to_identifier(column, quoted=True))
        sample = exp.select(value).from_(source).where(exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null())))
        values = [row[0] for row in connection.execute(sample.limit(_SAMPLE).sql(dialect="sqlite")).fetchall()]
        sniffed = _sniff(values)
        if declared:
            return sniffed if sniffed in ("DATE", "TIMESTAMP") else declared
        return sniffed or "unknown"

    def close(self) -> None:
        with self._lock:
            self._closed = True
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()


class _Guard:
    """Watches one query: its time budget, spent only while SQLite works (not while a caller
    holds a stream), and Ctrl-C, which Python can only see while SQLite calls back into it."""

    def __init__(self, timeout: float | None):
        self.remaining = timeout
        self.expired = False
        self.interrupted = False

    @contextlib.contextmanager
    def running(self, connection: sqlite3.Connection):
        started = time.monotonic()
        deadline = None if self.remaining is None else started + self.remaining

        def progress() -> int:
            try:
                if deadline is not None and time.monotonic() > deadline:
                    self.expired = True
                    return 1  # non-zero interrupts the statement
            except KeyboardInterrupt:
                self.interrupted = True
                return 1
            return 0

        connection.set_progress_handler(progress, _PROGRESS_STEPS)
        try:
            yield
        finally:
            connection.set_progress_handler(None, _PROGRESS_STEPS)
            if self.remaining is not None:
                self.remaining = max(0.0, self.remaining - (time.monotonic() - started))


def _sniff(values: list) -> str | None:
    """The kind of a sample of values: DATE, TIMESTAMP, INTEGER, REAL, TEXT, or None when empty."""
    if not values:
        return None
    if all(isinstance(v, str) for v in values):
        if all(_ISO_DATE.match(v) for v in values):
            return "DATE"
        if all(_ISO_DATE.match(v) or _ISO_TIMESTAMP.match(v) for v in values):
            return "TIMESTAMP"
        return "TEXT"
    if all(isinstance(v, int) for v in values):
        return "INTEGER"
    if all(isinstance(v, (int, float)) for v in values):
        return "REAL"
    return None


def _date_columns(query: exp.Expression) -> list[bool]:
    """Which output columns are dates (DATE(...) in SQLite, so text): traced through the CTEs.
    They are returned as ``datetime.date``, as the other adapters return them."""
    ctes = {cte.alias_or_name: cte.this for cte in query.ctes} if isinstance(query, exp.Query) else {}

    def leftmost(node: exp.Expression) -> exp.Expression:
        while isinstance(node, exp.SetOperation):
            node = node.this
        while isinstance(node, exp.Subquery):
            node = node.this
        return node

    def is_date(node: exp.Expression, depth: int) -> bool:
        node = node.unalias()
        if isinstance(node, exp.Anonymous):
            return str(node.this).upper() == "DATE"
        if isinstance(node, exp.Cast):
            return node.to.this == exp.DataType.Type.DATE
        if not isinstance(node, exp.Column) or depth > 32 or node.table not in ctes:
            return False
        select = leftmost(ctes[node.table])
        if not isinstance(select, exp.Select):
            return False
        for projection in select.expressions:
            if not projection.is_star and projection.alias_or_name == node.name:
                return is_date(projection, depth + 1)
        if any(p.is_star for p in select.expressions):  # SELECT * or SELECT t.*: the FROM table's column
            source = select.args.get("from_") or select.args.get("from")  # renamed in sqlglot 28
            source = source.this if source is not None else None
            if isinstance(source, exp.Table):
                return is_date(exp.Column(this=exp.to_identifier(node.name), table=exp.to_identifier(source.name)),
                               depth + 1)
        return False

    select = leftmost(query)
    return [is_date(e, 0) for e in select.expressions] if isinstance(select, exp.Select) else []


def _with_dates(batch: list[tuple], dates: list[bool]) -> list[tuple]:
    if not any(dates):
        return batch
    return [tuple(_to_date(v) if is_date else v for v, is_date in zip(row, dates)) for row in batch]


def _to_date(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return value
    return value


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _version_problem() -> str | None:
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        need = ".".join(map(str, MIN_SQLITE_VERSION))
        return (f"this Python uses SQLite {sqlite3.sqlite_version}; kpi-engine needs {need} or later "
                "(window frames over periods, NULLS LAST).")
    return None


class SQLiteAdapter(Adapter):
    name = "sqlite"
    dialect = "sqlite"
    description = "A SQLite database file, opened read-only (path: file.sqlite, or sqlite:///abs/file.sqlite)"

    @classmethod
    def prepare(cls, query):
        """Rewrite date truncation, date arithmetic and the rest for SQLite (see ``rewrite``)."""
        return to_sqlite(query)

    @classmethod
    def connect(cls, settings: Mapping[str, Any], project_root: Path) -> Connection:
        unknown = set(settings) - _SETTINGS
        if unknown:
            raise WarehouseError(f"unknown SQLite setting(s): {', '.join(sorted(unknown))}.", None,
                                 "SQLite takes 'path' (a database file, relative to the project folder), "
                                 "or 'url' (sqlite:///abs/file.sqlite), and optionally 'query_timeout'.")
        problem = _version_problem()
        if problem:
            raise ConnectionFailed(problem, None, "Use a Python built with a newer SQLite (e.g. Python 3.10+ "
                                                  "from python.org, or pysqlite3).")
        path = settings.get("path")
        if settings.get("url"):
            path = re.sub(r"^sqlite3?:(//)?", "", str(settings["url"]))
        if not path or str(path) == ":memory:":
            raise ConnectionFailed("no SQLite database file is given.", None,
                                   "Set 'path' in kpi_engine.yaml (e.g. warehouse: {adapter: sqlite, path: "
                                   "warehouse.sqlite}) or use a URL such as sqlite:///abs/path/warehouse.sqlite.")
        file = (Path(project_root) / Path(str(path)).expanduser()).resolve()
        if not file.is_file():
            what = "is a folder, not a file" if file.is_dir() else "does not exist"
            raise ConnectionFailed(f"the SQLite database file '{file}' {what}.", None,
                                   "Fix 'path' in kpi_engine.yaml (relative to the project folder), "
                                   "or create the database first.")
        timeout = settings.get("query_timeout")
        try:
            timeout = float(timeout) if timeout not in (None, "") else None
        except (TypeError, ValueError):
            raise WarehouseError(f"query_timeout must be a number of seconds, not '{timeout}'.", None, None) from None
        return SQLiteConnection(file, timeout if timeout and timeout > 0 else None)


@hookimpl
def kpi_engine_adapters():
    return [SQLiteAdapter]
