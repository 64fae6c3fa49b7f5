"""The built-in, embedded DuckDB adapter: results with no server.

Settings (``warehouse:`` in kpi_engine.yaml):

- ``path``: a DuckDB database file, opened read-only. Or a URL ``duckdb:///abs/file.duckdb``
  / ``duckdb://relative/file.duckdb``.
- ``data``: a folder of CSV or Parquet files; each file becomes a read-only view
  named after the file (``leads.csv`` -> ``leads``) in an in-memory database.

Registered through the ``kpi_engine`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Mapping

from sqlglot import exp

from ..errors import ConnectionFailed, QueryFailed, QueryTimeout, WarehouseError
from ..hookspecs import Adapter, Connection, Rows, hookimpl, timeout_seconds
from ..interrupts import on_ctrl_c

DATA_SUFFIXES = {".csv": "read_csv", ".parquet": "read_parquet"}
_VIEW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DuckDBConnection(Connection):
    dialect = "duckdb"

    def __init__(self, connection, where: str, timeout: float | None = None):
        self._connection = connection
        self._where = where
        self._timeout = timeout
        self._lock = threading.Lock()

    def execute(self, query) -> Rows:
        columns, batches = self.stream(query, batch_size=None)
        return Rows(columns, [row for batch in batches for row in batch])

    def stream(self, query, batch_size: int | None = 10_000):
        """Rows in batches of ``batch_size`` (all at once when None), fetched as they are read."""
        if not isinstance(query, exp.Expression):
            raise TypeError("DuckDBConnection takes a sqlglot expression")
        sql = query.sql(dialect=self.dialect)
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
                raise self._failure(error, timed_out=timer is not None and timer.finished.is_set()) from None
            raise
        finally:
            if timer:
                timer.cancel()
        columns = tuple(d[0] for d in cursor.description or ())
        return columns, self._batches(cursor, batch_size)

    def _batches(self, cursor, batch_size: int | None):
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
            raise self._failure(error) from None
        finally:
            cursor.close()

    def _interruptible(self, cursor, call, *args):
        """``call(*args)``, cancelled inside DuckDB the moment Ctrl-C is pressed (not when DuckDB
        next looks at Python's signals, which may be minutes later): a KeyboardInterrupt then."""
        with on_ctrl_c(cursor.interrupt) as interrupted:
            try:
                result = call(*args)
            except (self._errors, RuntimeError):  # DuckDB reports its own interruption as either
                if interrupted.is_set():
                    raise KeyboardInterrupt from None
                raise
        if interrupted.is_set():
            raise KeyboardInterrupt
        return result

    @property
    def _errors(self):
        import duckdb

        return duckdb.Error

    def _failure(self, error: Exception, timed_out: bool = False) -> WarehouseError:
        if timed_out:
            return QueryTimeout(f"the query ran longer than the {self._timeout:g} s timeout and was cancelled "
                                f"in DuckDB ({self._where}).", None,
                                "Narrow the request (--from/--to, fewer KPIs) or raise query_timeout / --timeout.")
        return QueryFailed(f"the query failed in DuckDB ({self._where}): {_first_line(error)}", None,
                           "Check that the tables and columns the sources name exist "
                           "('kpi-engine validate' checks them).")

    def columns(self, relation) -> Mapping[str, str] | None:
        import duckdb

        query = exp.select(exp.Star()).from_(relation).limit(0)
        with self._lock:
            cursor = self._connection.cursor()
        try:
            cursor.execute(query.sql(dialect=self.dialect))
            return {d[0]: str(d[1]) for d in cursor.description}
        except duckdb.CatalogException:
            return None
        except duckdb.Error as error:
            raise WarehouseError(f"cannot describe {relation.sql(dialect=self.dialect)} in DuckDB: {_first_line(error)}",
                                 None, "Check the source's table or sql.") from None
        finally:
            cursor.close()

    def close(self) -> None:
        self._connection.close()


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list"}.get(type(value), f"a {type(value).__name__}")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class DuckDBAdapter(Adapter):
    name = "duckdb"
    dialect = "duckdb"
    description = "Embedded DuckDB: a database file (read-only) or a folder of CSV/Parquet files"

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
        unknown = set(settings) - {"url", "path", "data", "query_timeout"}
        if unknown:
            raise WarehouseError(f"unknown DuckDB setting(s): {', '.join(sorted(unknown))}.", None,
                                 "DuckDB takes 'path' (a database file) and/or 'data' (a folder of CSV/Parquet files).")
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
                connection = duckdb.connect(str(file), read_only=True)
                where = file.name
            else:
                connection = duckdb.connect(":memory:")
                where = "in-memory"
        except duckdb.Error as error:
            raise ConnectionFailed(f"cannot open the DuckDB database: {_first_line(error)}", None,
                                 "Check that the file is a DuckDB database and not locked by a writer.") from None
        if data:
            folder = (project_root / data).resolve()
            _attach_files(connection, folder)
            where = f"data folder {data}"
        return DuckDBConnection(connection, where,
                                timeout_seconds(timeout, "query_timeout") if timeout not in (None, "") else None)


def _attach_files(connection, folder: Path) -> None:
    """Expose each CSV/Parquet file of ``folder`` as a view named after it."""
    import duckdb

    if not folder.is_dir():
        raise ConnectionFailed(f"the data folder '{folder}' does not exist.", None,
                             "Fix 'data' in kpi_engine.yaml (relative to the project folder).")
    for file in sorted(folder.iterdir()):
        reader = DATA_SUFFIXES.get(file.suffix.lower())
        if reader is None or not _VIEW_NAME.match(file.stem):
            continue
        source = exp.Table(this=exp.Anonymous(this=reader, expressions=[exp.Literal.string(str(file))]))
        view = exp.Create(kind="VIEW", this=exp.Table(this=exp.to_identifier(file.stem, quoted=True)),
                          expression=exp.select(exp.Star()).from_(source))
        try:
            connection.execute(view.sql(dialect="duckdb"))
        except duckdb.Error as error:
            raise ConnectionFailed(f"cannot read data file '{file.name}': {_first_line(error)}", None,
                                 "Check that it is a well-formed CSV (with a header row) or Parquet file.") from None


@hookimpl
def kpi_engine_adapters():
    return [DuckDBAdapter]
