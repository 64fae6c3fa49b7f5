"""A read-only chdb session (ClickHouse in-process) on one database folder, shared by threads.

chdb runs ClickHouse inside this process; one chdb connection serves every thread, one query at a
time (a lock). The session is set up when it opens and the settings are read back; a session
whose settings did not hold is refused:

- ``PINNED_SETTINGS``: ``join_use_nulls = 1`` (a LEFT JOIN row without a match has NULLs, as in
  SQL, not the columns' default values), ``session_timezone = 'UTC'`` (DateTime values are not
  read in the machine's time zone), and ``max_execution_time`` from ``query_timeout``;
- then ``readonly = 1``: no statement can change data or settings any more.
"""

from __future__ import annotations

import contextlib
import re
import threading
from typing import Any, Mapping

from kpi_engine.errors import ConnectionFailed, QueryFailed, QueryTimeout, WarehouseError
from kpi_engine.hookspecs import Connection, Rows, rendered_text
from sqlglot import exp

from .rewrite import to_clickhouse
from .settings import Target

#: Session settings the rendered SQL and the reading of its results rely on.
PINNED_SETTINGS = {"join_use_nulls": "1", "session_timezone": "UTC"}
SOURCE_HINT = "Check that the tables and columns the sources name exist ('kpi-engine validate' checks them)."

# ClickHouse error codes (src/Common/ErrorCodes.cpp).
_UNKNOWN_IDENTIFIER, _UNKNOWN_FUNCTION, _UNKNOWN_TABLE, _SYNTAX_ERROR, _UNKNOWN_DATABASE = 47, 46, 60, 62, 81
_TIMEOUT_EXCEEDED, _READONLY, _CANCELLED = 159, 164, 394
_UNSUPPORTED = (1, 48)  # UNSUPPORTED_METHOD, NOT_IMPLEMENTED
_TYPE_ERRORS = (43, 53, 386)  # ILLEGAL_TYPE_OF_ARGUMENT, TYPE_MISMATCH, NO_COMMON_TYPE
_CODE = re.compile(r"Code:\s*(\d+)\.\s*(?:DB::Exception:\s*)?(.*)", re.S)


def _code_and_text(error: BaseException) -> tuple[int | None, str]:
    """ClickHouse's error code and the first line of its message, without the stack trace."""
    text = str(error).strip()
    match = _CODE.search(text)
    code = int(match.group(1)) if match else None
    text = match.group(2) if match else text
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    first = re.sub(r"^default: ", "", first).split(" In scope ")[0]  # not the whole query
    return code, re.sub(r"\s*\(([A-Z_]+)\)\s*(\(version [^)]*\))?\s*$", "", first).rstrip(".")


def render(query: exp.Expression) -> str:
    """The SQL text run on ClickHouse for a compiled query."""
    return to_clickhouse(query).sql(dialect="clickhouse")


class ClickHouseConnection(Connection):
    """A read-only chdb session on one database folder; safe to share between threads."""

    dialect = "clickhouse"

    def __init__(self, target: Target):
        import chdb

        self.target = target
        self._lock = threading.Lock()
        self._closed = False
        where = f"the chdb database folder '{target.path}'"
        try:
            self._connection = chdb.connect(str(target.path))
        except Exception as error:  # chdb raises RuntimeError and its own error kinds
            message = _code_and_text(error)[1]
            other = re.search(r"initialized with path '([^']*)'", message)
            if other:
                raise ConnectionFailed(
                    f"cannot open {where}: chdb runs one ClickHouse per process, and it already has the folder "
                    f"'{other.group(1)}' open; a process can read one chdb folder at a time.", None,
                    "Keep the tables in one folder (as databases: 'database' chooses one), or close the other "
                    "project (and any chdb connection) before opening this one.") from None
            if _locked_by_another_process(target):
                raise ConnectionFailed(f"cannot open {where}: another process has it open (chdb lets one process "
                                       "use a folder at a time).", None,
                                       "Stop the other process (a kpi-engine serve, a notebook, a chdb script), or "
                                       "evaluate on a copy of the folder.") from None
            raise ConnectionFailed(f"cannot open {where}: {message}.", None,
                                   "Check that the folder holds a chdb database and that no other process has "
                                   "it open.") from None
        try:
            self._cursor = self._connection.cursor()
            self._set_up(where)
        except BaseException:
            with contextlib.suppress(Exception):
                self._connection.close()
            raise

    def _set_up(self, where: str) -> None:
        target = self.target
        assignments = dict(PINNED_SETTINGS)
        if target.query_timeout is not None:
            assignments["max_execution_time"] = f"{target.query_timeout:g}"
        try:
            self._cursor.execute("SELECT version()")
            self.server_version = str(self._cursor.fetchone()[0])
            for name, value in assignments.items():
                literal = exp.Literal.string(value) if name == "session_timezone" else exp.Literal.number(value)
                self._cursor.execute(f"SET {name} = {literal.sql(dialect='clickhouse')}")
            self._cursor.execute(exp.Use(this=exp.to_identifier(target.database, quoted=True)).sql(
                dialect="clickhouse"))
            self._cursor.execute("SET readonly = 1")
            names = [*assignments, "readonly"]
            self._cursor.execute("SELECT " + ", ".join(f"toString(getSetting('{name}'))" for name in names))
            values = self._cursor.fetchone()
        except Exception as error:
            code, message = _code_and_text(error)
            if code == _UNKNOWN_DATABASE:
                raise ConnectionFailed(f"the ClickHouse database '{target.database}' does not exist in {where}.",
                                       None, "Fix 'database' (default: default), or create the database.") from None
            raise ConnectionFailed(f"cannot set up the chdb session on {where}: {message}.", None,
                                   "kpi-engine needs chdb 3 or later; check the installed chdb.") from None
        expected = {**assignments, "readonly": "1"}
        for name, value in zip(names, values):
            if not _same_setting(str(value), expected[name]):
                raise ConnectionFailed(
                    f"the chdb session on {where} has {name} = '{value}', and kpi-engine needs "
                    f"'{expected[name]}'; it set it when opening the session, but the setting did not hold, so "
                    "no query is run.", None, "Upgrade chdb, or report the chdb version that ignores the setting.")

    # -- queries
    def execute(self, query) -> Rows:
        if not isinstance(query, exp.Expression):
            raise TypeError("ClickHouseConnection.execute takes a sqlglot expression")
        if not isinstance(query, exp.Query):
            raise QueryFailed(f"ClickHouse connections of kpi-engine only read: {type(query).__name__} is not a "
                              "query.", None, "Pass a SELECT.")
        sql = rendered_text(query, self.dialect)  # the engine's request: prepared already
        if sql is None:  # any other tree
            sql = render(query)
        with self._lock:
            self._check_open()
            try:
                self._cursor.execute(sql)
                columns = tuple(column[0] for column in self._cursor.description or ())
                return Rows(columns, [tuple(row) for row in self._cursor.fetchall()])
            except Exception as error:
                self._fresh_cursor()
                raise query_error(error, self.target) from None

    def _fresh_cursor(self) -> None:
        """A new cursor after a failed query: chdb's cursor misreads the result of the next query
        after an error (the session, and its settings, stay)."""
        with contextlib.suppress(Exception):
            self._cursor.close()
        self._cursor = self._connection.cursor()

    def _check_open(self) -> None:
        if self._closed:
            raise WarehouseError("the ClickHouse connection is closed.", None, "Open the project again.")

    # -- description
    def columns(self, relation) -> Mapping[str, str] | None:
        if not isinstance(relation, (exp.Table, exp.Subquery)):
            raise TypeError(f"cannot describe a {type(relation).__name__}")
        if isinstance(relation, exp.Table) and relation.args.get("catalog") is not None:
            return None  # ClickHouse names are database.table at most
        sql = render(exp.select(exp.Star()).from_(relation.copy()).limit(0))
        with self._lock:
            self._check_open()
            try:
                self._cursor.execute(sql)
                return {column[0]: type_name(column[1]) for column in self._cursor.description or ()}
            except Exception as error:
                self._fresh_cursor()
                code, message = _code_and_text(error)
                if code in (_UNKNOWN_TABLE, _UNKNOWN_DATABASE):
                    return None
                what = (f"table {'.'.join(part.name for part in relation.parts)}"
                        if isinstance(relation, exp.Table) else "the source's sql")
                raise WarehouseError(f"cannot describe {what} in ClickHouse: {message}.", None,
                                     "Check the source's table or sql.") from None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(Exception):
                self._cursor.close()
            with contextlib.suppress(Exception):
                self._connection.close()


def _locked_by_another_process(target: Target) -> bool:
    """Whether another process holds the folder's lock (ClickHouse's flock on ``status``); chdb
    reports only that its server could not start."""
    import fcntl

    try:
        with open(target.path / "status", "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _same_setting(value: str, expected: str) -> bool:
    value = {"true": "1", "false": "0"}.get(value, value)
    try:
        return float(value) == float(expected)
    except ValueError:
        return value == expected


#: ClickHouse type families -> type names kpi-engine's catalogue understands (resolve.column_type).
_FAMILIES = {"Bool": "BOOLEAN", "Date": "DATE", "Date32": "DATE", "DateTime": "TIMESTAMP",
             "DateTime64": "TIMESTAMP", "String": "VARCHAR", "FixedString": "CHAR", "UUID": "UUID",
             "Enum8": "ENUM", "Enum16": "ENUM", "Float32": "FLOAT", "Float64": "DOUBLE", "BFloat16": "FLOAT",
             "Decimal": "DECIMAL", "Decimal32": "DECIMAL", "Decimal64": "DECIMAL", "Decimal128": "DECIMAL",
             "Decimal256": "DECIMAL", "Int8": "TINYINT", "Int16": "SMALLINT", "Int32": "INTEGER",
             "Int64": "BIGINT", "Int128": "HUGEINT", "Int256": "HUGEINT", "UInt8": "UTINYINT",
             "UInt16": "USMALLINT", "UInt32": "UINTEGER", "UInt64": "UBIGINT", "UInt128": "HUGEINT",
             "UInt256": "HUGEINT"}
_WRAPPERS = ("Nullable", "LowCardinality", "SimpleAggregateFunction")


def type_name(clickhouse_type: str) -> str:
    """A type name for a ClickHouse column type: ``Nullable(Int64)`` is BIGINT, ``DateTime('UTC')``
    TIMESTAMP, ``LowCardinality(String)`` VARCHAR; other types keep their ClickHouse name."""
    text = clickhouse_type.strip()
    while True:
        family, _, inner = text.partition("(")
        if family in _WRAPPERS and inner.endswith(")"):
            inner = inner[:-1]
            text = inner.rsplit(",", 1)[-1].strip() if family == "SimpleAggregateFunction" else inner.strip()
            continue
        return _FAMILIES.get(family.strip(), clickhouse_type)


def query_error(error: BaseException, target: Target) -> WarehouseError:
    """A failed query as one clear message; the query is never sent again."""
    code, message = _code_and_text(error)
    if code == _TIMEOUT_EXCEEDED:
        return QueryTimeout(f"ClickHouse stopped the query after the query_timeout of {target.query_timeout or 0:g} s: "
                            f"{message}.", None,
                            "Raise 'query_timeout' (or --timeout), or ask for less (a shorter --from/--to range, "
                            "fewer KPIs or dimensions).")
    if code == _CANCELLED:
        return QueryFailed(f"ClickHouse cancelled the query before it finished: {message}. It was not run again.",
                           None, "Run the command again.")
    if code in (_UNKNOWN_TABLE, _UNKNOWN_DATABASE):
        return QueryFailed(f"the query reads a table that does not exist in ClickHouse: {message}.", None,
                           SOURCE_HINT)
    if code == _UNKNOWN_IDENTIFIER:
        return QueryFailed(f"the query reads a column that does not exist in ClickHouse: {message}.", None,
                           SOURCE_HINT)
    if code == _READONLY:
        return QueryFailed(f"the ClickHouse session is read-only: {message}.", None,
                           "kpi-engine only reads from the warehouse.")
    if code in (_SYNTAX_ERROR, _UNKNOWN_FUNCTION, *_UNSUPPORTED, *_TYPE_ERRORS):
        return QueryFailed(f"ClickHouse cannot run the query's SQL: {message}.", None,
                           "A source's sql, a --where/--having filter or a plugin function may use another "
                           "engine's SQL; see 'kpi-engine compile --dialect clickhouse' for the SQL that ran.")
    return QueryFailed(f"the query failed in ClickHouse: {message}.", None, SOURCE_HINT)
