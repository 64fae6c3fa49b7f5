"""The built-in, embedded DuckDB adapter: results with no server.

Settings (``warehouse:`` in kpi_engine.yaml):

- ``path``: a DuckDB database file, opened read-only (``kpi-engine materialize`` alone opens it
  for writing, ``writable``, to store rollups in it). Or a URL ``duckdb:///abs/file.duckdb``
  / ``duckdb://relative/file.duckdb``.
- ``data``: a folder of CSV or Parquet files; each file becomes a read-only view
  named after the file (``leads.csv`` -> ``leads``) in an in-memory database. The files are
  read by their exact paths: a folder named ``proj[1]`` or ``data*`` is not a glob pattern.
  With it, ``csv`` and ``tables`` declare how files are read: column types, date formats,
  markers of no value (data_files.py). A value that does not read is reported at its file,
  row and column.

Nothing is downloaded or loaded at run time: extension auto-installing and auto-loading are
off (the extensions built into the duckdb package, such as ICU, JSON and Parquet, still work),
the session time zone is UTC (a TIMESTAMPTZ is read as the UTC time it stores, on any machine),
and the configuration is locked once the connection is set up.

Registered through the ``kpi_engine`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Mapping

from sqlglot import exp

from ..calendar import cast
from ..errors import ConnectionFailed, QueryFailed, QueryTimeout, WarehouseError
from ..hookspecs import Adapter, Connection, Rows, TextValue, hookimpl, query_text, timeout_seconds
from ..interrupts import on_ctrl_c
from ..sql_build import copy_of
from .data_files import SETTINGS, DataFile, data_files, empty_file_problem, first_non_number, locate_bad_value

#: Given when the database opens: nothing is installed from the network or loaded from disk.
CONNECT_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                  "allow_community_extensions": False}
_EXTENSION_NEEDED = re.compile(r"exists in the \S+ extension|requires the extension|the required extension",
                               re.IGNORECASE)
SOURCE_HINT = "Check that the tables and columns the sources name exist ('kpi-engine validate' checks them)."
EXTENSION_HINT = ("kpi-engine never installs or loads DuckDB extensions while it runs (nothing is downloaded): "
                  "use functions built into DuckDB in sql: sources, or another warehouse.")


class DuckDBConnection(Connection):
    dialect = "duckdb"

    def __init__(self, connection, where: str, timeout: float | None = None, files: list[DataFile] | None = None):
        self._connection = connection
        self._where = where
        self._timeout = timeout
        self._files = files or []  # the data folder's files, to find a value that does not read
        self._lock = threading.Lock()

    def execute(self, query) -> Rows:
        columns, batches = self.stream(query, batch_size=None)
        return Rows(columns, [row for batch in batches for row in batch])

    def stream(self, query, batch_size: int | None = 10_000):
        """Rows in batches of ``batch_size`` (all at once when None), fetched as they are read."""
        if not isinstance(query, exp.Expression):
            raise TypeError("DuckDBConnection takes a sqlglot expression")
        sql = query_text(query, self.dialect)
        with self._lock:
            cursor = self._connection.cursor()  # one cursor per query: threads do not share state
        # The timeout cancels the query inside DuckDB (interrupt), as Ctrl-C does.
        timer = threading.Timer(self._timeout, cursor.interrupt) if self._timeout else None
        if timer:
            timer.start()
        try:
            self._interruptible(cursor, cursor.execute, sql)
        except BaseException as error:
            cursor.close()
            if isinstance(error, self._errors):
                raise self._failure(error, timed_out=timer is not None and timer.finished.is_set(), query=query) from None
            raise
        finally:
            if timer:
                timer.cancel()
        columns = tuple(d[0] for d in cursor.description or ())
        return columns, self._batches(cursor, batch_size, query)

    def _batches(self, cursor, batch_size: int | None, query: exp.Expression | None = None):
        try:
            while True:
                if batch_size is None:
                    batch = self._interruptible(cursor, cursor.fetchall)
                else:
                    batch = self._interruptible(cursor, cursor.fetchmany, batch_size)
                if batch:
                    yield batch
                if not batch or batch_size is None:
                    return
        except self._errors as error:
            raise self._failure(error, query=query) from None
        finally:
            cursor.close()

    def _interruptible(self, cursor, call, *args):
        """``call(*args)``, cancelled inside DuckDB the moment Ctrl-C is pressed (not when DuckDB
        next looks at Python's signals, which may be minutes later): a KeyboardInterrupt then."""
        with on_ctrl_c(cursor.interrupt) as interrupted:
            try:
                result = call(*args)
            except (self._errors, RuntimeError) as error:  # DuckDB reports its own interruption as either
                # DuckDB may see the pending signal itself before the watcher thread has run: the
                # signal's wake-up byte is already written, so the watcher confirms it at once.
                if interrupted.is_set() or ("interrupt" in str(error).lower() and interrupted.wait(2)):
                    raise KeyboardInterrupt from None
                raise
        if interrupted.is_set():
            raise KeyboardInterrupt
        return result

    @property
    def _errors(self):
        import duckdb

        return duckdb.Error

    def _failure(self, error: Exception, timed_out: bool = False, query: exp.Expression | None = None
                 ) -> WarehouseError:
        import duckdb

        read = {table.name for table in query.find_all(exp.Table)} if query is not None else set()
        files = [file for file in self._files if file.view in read]  # the data files the query reads
        if isinstance(error, duckdb.ConversionException) and files:
            with self._lock:
                cursor = self._connection.cursor()
            try:
                located = locate_bad_value(cursor, files)
            except duckdb.Error:
                located = None  # the query's own error below still says what failed
            finally:
                cursor.close()
            if located is not None:
                return located
        if timed_out:
            return QueryTimeout(f"the query ran longer than the {self._timeout:g} s timeout and was cancelled "
                                f"in DuckDB ({self._where}).", None,
                                "Narrow the request (--from/--to, fewer KPIs) or raise query_timeout / --timeout.")
        return QueryFailed(f"the query failed in DuckDB ({self._where}): {_first_line(error)}", None,
                           _hint(error, SOURCE_HINT))

    def attach(self, alias: str, file: Path, read_only: bool = True) -> None:
        """Attach another DuckDB file under ``alias`` (rollups.py's local store), replacing an
        attachment of that name; a writable one creates the file."""
        name = exp.to_identifier(alias, quoted=True).sql(dialect=self.dialect)
        path = exp.Literal.string(str(file)).sql(dialect=self.dialect)
        with self._lock:
            try:
                self._connection.execute(f"DETACH DATABASE IF EXISTS {name}")
                self._connection.execute(f"ATTACH {path} AS {name} ({'READ_ONLY' if read_only else 'READ_WRITE'})")
            except self._errors as error:
                raise ConnectionFailed(f"cannot open the DuckDB file '{file}': {_first_line(error)}", None,
                                       "Check that it is a DuckDB database and that no other process is writing "
                                       "to it.") from None

    def write(self, statements) -> None:
        """Run sqlglot statements in one transaction: all of them take effect, or none."""
        with self._lock:
            cursor = self._connection.cursor()
        try:
            cursor.execute("BEGIN TRANSACTION")
            for statement in statements:
                self._interruptible(cursor, cursor.execute, statement.sql(dialect=self.dialect))
            cursor.execute("COMMIT")
        except BaseException as error:
            try:
                cursor.execute("ROLLBACK")
            except self._errors:
                pass  # the transaction is already gone: nothing was written
            if isinstance(error, self._errors):
                raise QueryFailed(f"writing to DuckDB ({self._where}) failed, and nothing was written: "
                                  f"{_first_line(error)}", None, _hint(error, SOURCE_HINT)) from None
            raise
        finally:
            cursor.close()

    def columns(self, relation) -> Mapping[str, str] | None:
        import duckdb

        query = exp.select(exp.Star()).from_(relation).limit(0)
        with self._lock:
            cursor = self._connection.cursor()
        try:
            cursor.execute(query.sql(dialect=self.dialect))
            described = {d[0]: str(d[1]) for d in cursor.description}
        except duckdb.Error as error:
            if isinstance(error, duckdb.CatalogException) and not _needs_extension(error):
                return None  # no such table
            raise WarehouseError(f"cannot describe {relation.sql(dialect=self.dialect)} in DuckDB: {_first_line(error)}",
                                 None, _hint(error, "Check the source's table or sql.")) from None
        finally:
            cursor.close()
        file = self._file_of(relation)
        problem = empty_file_problem(file, described) if file else None
        if problem:
            raise problem
        return described

    def _file_of(self, relation) -> DataFile | None:
        """The data file a relation reads, when it is one of the data folder's views."""
        if not isinstance(relation, exp.Table) or relation.args.get("db") or not isinstance(relation.this, exp.Identifier):
            return None
        return next((file for file in self._files if file.view == relation.name), None)

    def text_value(self, relation, column: str) -> TextValue | None:
        import duckdb

        file = self._file_of(relation)
        if file is None or not file.is_csv or column in file.types:
            return None
        with self._lock:
            cursor = self._connection.cursor()
        try:
            found = first_non_number(cursor, file, column)
        except duckdb.Error:
            return None  # the resolver's own message stands
        finally:
            cursor.close()
        return TextValue(file.path.name, file.view, *found) if found else None

    def close(self) -> None:
        self._connection.close()


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list"}.get(type(value), f"a {type(value).__name__}")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _needs_extension(error: Exception) -> bool:
    """DuckDB names the extension a missing function or file type lives in ('... but it exists in
    the excel extension', '... requires the extension httpfs to be loaded')."""
    return _EXTENSION_NEEDED.search(_first_line(error)) is not None


def _hint(error: Exception, default: str) -> str:
    """A function or file type that lives in an extension is refused, never fetched: say so."""
    return EXTENSION_HINT if _needs_extension(error) else default


# Marks a ROUND already written as round_as_printed builds it, so preparing twice changes nothing.
_AS_PRINTED = "kpi_round_as_printed"


def round_as_printed(node: exp.Expression) -> exp.Expression:
    """ROUND(x, d) half away from zero on the number as it prints (the shortest decimal that
    reads back as it), as the other warehouses' adapters make theirs: 78.55 is 78.6. DuckDB
    rounds a DOUBLE's binary value (78.549999... is 78.5). Only a value within 1e-7 of a tie can
    differ, so that value alone is rounded as a DECIMAL of its text (45 times the cost of ROUND
    per row), and as a DOUBLE where the text does not fit one (over 10^20); every other value as
    it is. Other nodes are returned as they are."""
    if not isinstance(node, exp.Round) or node.meta.get(_AS_PRINTED):
        return node
    value = node.this.transform(round_as_printed)  # (a ROUND inside: transform skips a replaced node's children)
    digits = node.args.get("decimals") or exp.Literal.number("0")
    scale = (exp.Literal.number(repr(10.0 ** float(digits.this))) if isinstance(digits, exp.Literal)
             else exp.Pow(this=exp.Literal.number("10.0"), expression=copy_of(digits)))
    scaled = exp.Mul(this=exp.Abs(this=copy_of(value)), expression=scale)
    off_tie = exp.Sub(this=exp.Sub(this=scaled, expression=exp.Floor(this=copy_of(scaled))),
                      expression=exp.Literal.number("0.5"))
    near_tie = exp.LT(this=exp.Abs(this=off_tie), expression=exp.Literal.number("1e-07"))
    exact = exp.TryCast(this=cast(copy_of(value), "VARCHAR"), to=exp.DataType.build("DECIMAL(38, 18)"))
    binary = exp.Round(this=value, decimals=digits)
    as_printed = exp.Round(this=exact, decimals=copy_of(digits))
    for rounded in (binary, as_printed):
        rounded.meta[_AS_PRINTED] = True
    fallback = copy_of(binary)
    fallback.meta[_AS_PRINTED] = True
    return exp.Case(ifs=[exp.If(this=near_tie, true=exp.Coalesce(this=as_printed, expressions=[fallback]))],
                    default=binary)


class DuckDBAdapter(Adapter):
    name = "duckdb"
    dialect = "duckdb"
    description = "Embedded DuckDB: a database file (read-only) or a folder of CSV/Parquet files"

    @classmethod
    def prepare(cls, query):
        """Every ROUND half away from zero on the number as it prints (``round_as_printed``)."""
        if next(query.find_all(exp.Round), None) is None:
            return query
        return query.transform(round_as_printed)

    @classmethod
    def connect(cls, settings: Mapping[str, Any], project_root: Path) -> Connection:
        import duckdb

        path, data = settings.get("path"), settings.get("data")
        url = settings.get("url")
        if url:
            rest = re.sub(r"^duckdb:(//)?", "", str(url))
            path = rest if rest not in ("", ":memory:") else None
        timeout = settings.get("query_timeout")
        if timeout not in (None, ""):
            timeout_seconds(timeout, "query_timeout")  # before opening anything
        writable = settings.get("writable") is True  # kpi-engine materialize writes rollups into the file
        unknown = set(settings) - {"url", "path", "data", "query_timeout", "writable", *SETTINGS}
        if unknown:
            raise WarehouseError(f"unknown DuckDB setting(s): {', '.join(sorted(unknown))}.", None,
                                 "DuckDB takes 'path' (a database file) and/or 'data' (a folder of CSV/Parquet files, "
                                 "read as 'csv' and 'tables' say).")
        if set(settings) & set(SETTINGS) and not data:
            raise WarehouseError(f"the DuckDB settings {', '.join(sorted(set(settings) & set(SETTINGS)))} describe "
                                 "the files of a data folder, but no 'data' folder is set.", None,
                                 "Add 'data: <folder>' or remove them.")
        for key, value in (("path", path), ("data", data)):
            if value is not None and not isinstance(value, str):
                raise WarehouseError(f"the DuckDB setting '{key}' must be a path (text), not {_kind(value)}.", None,
                                     f"Quote it in kpi_engine.yaml, e.g. {key}: 'data'.")
        try:
            if path:
                file = (project_root / path).resolve()
                if not file.is_file():
                    raise ConnectionFailed(f"the DuckDB database file '{file}' does not exist.", None,
                                         "Fix 'path' in kpi_engine.yaml, or create the database first.")
                connection = duckdb.connect(str(file), read_only=not writable, config=CONNECT_CONFIG)
                where = file.name
            else:
                connection = duckdb.connect(":memory:", config=CONNECT_CONFIG)
                where = "in-memory"
        except duckdb.Error as error:
            raise ConnectionFailed(f"cannot open the DuckDB database: {_first_line(error)}", None,
                                 "Check that the file is a DuckDB database and not locked by a writer.") from None
        files = []
        if data:
            folder = (project_root / data).resolve()
            files = _attach_files(connection, folder, settings)
            where = f"data folder {data}"
        _pin_settings(connection)
        return DuckDBConnection(connection, where,
                                timeout_seconds(timeout, "query_timeout") if timeout not in (None, "") else None, files)


def _attach_files(connection, folder: Path, settings: Mapping[str, Any]) -> list[DataFile]:
    """Expose each CSV/Parquet file of ``folder`` as a view named after it, read as the
    settings declare."""
    import duckdb

    if not folder.is_dir():
        raise ConnectionFailed(f"the data folder '{folder}' does not exist.", None,
                             "Fix 'data' in kpi_engine.yaml (relative to the project folder).")
    files = data_files(folder, settings)
    for file in files:
        view = exp.Create(kind="VIEW", this=exp.Table(this=exp.to_identifier(file.view, quoted=True)),
                          expression=file.view_query())
        try:
            connection.execute(view.sql(dialect="duckdb"))
        except duckdb.Error as error:
            raise ConnectionFailed(f"cannot read data file '{file.path.name}': {_first_line(error)}", None,
                                 "Check that it is a well-formed CSV (with a header row) or Parquet file, and that "
                                 "the columns its settings name exist.") from None
    return files


def _pin_settings(connection) -> None:
    """Timestamps with a time zone are read as the UTC time they store, whatever the machine's
    zone; then the configuration is locked, so no query can change a setting."""
    import duckdb

    try:
        # A second connection to a file this process has open shares its database, already pinned and locked.
        zone, locked = connection.execute(
            "SELECT current_setting('TimeZone'), current_setting('lock_configuration')").fetchone()
        if locked and zone == "UTC":
            return
        connection.execute("SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: each query's cursor is a session of its own
        connection.execute("SET lock_configuration = true")
    except duckdb.Error as error:
        raise ConnectionFailed(f"cannot set up the DuckDB session: {_first_line(error)}", None,
                               "Use the duckdb package from PyPI (it includes the ICU time zones).") from None


@hookimpl
def kpi_engine_adapters():
    return [DuckDBAdapter]
