"""Load a folder of CSV files into PostgreSQL or SQLite, with declared column types.

Tables are described as {table: {column: kind}} with the kinds of ``kpi_engine.testing.TABLES``
(integer, decimal, text, boolean, date, timestamp) and double, in CSV column order. An empty CSV field is NULL.
"""

from __future__ import annotations

import csv
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from kpi_engine.testing import _convert as typed_value

POSTGRES_TYPES = {"integer": "integer", "decimal": "numeric(12,2)", "text": "text", "boolean": "boolean",
                  "date": "date", "timestamp": "timestamp", "double": "double precision"}
# SQLite keeps dates and timestamps as ISO text and booleans as 0/1; the declared type tells
# kpi-engine the kind of each column.
SQLITE_TYPES = {"integer": "INTEGER", "decimal": "REAL", "text": "TEXT", "boolean": "BOOLEAN", "date": "DATE",
                "timestamp": "TIMESTAMP", "double": "REAL"}  # a double's text becomes a REAL by the column's affinity


def _header(path: Path, columns: dict[str, str]) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert header == list(columns), f"{path.name}: columns {header} differ from {list(columns)}"
    return header


def load_postgres(connection, tables: dict[str, dict[str, str]], data_dir: Path) -> None:
    """CREATE TABLE and COPY each table from ``data_dir/<table>.csv`` (psycopg 3 connection)."""
    from psycopg import sql

    for table, columns in tables.items():
        path = Path(data_dir) / f"{table}.csv"
        header = _header(path, columns)
        ddl = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(POSTGRES_TYPES[kind]))
                                 for name, kind in columns.items())
        connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        connection.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), ddl))
        copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, header)))
        with connection.cursor() as cursor, cursor.copy(copy) as stream:
            stream.write(path.read_bytes())


def _sqlite_value(text: str, kind: str) -> Any:
    value = typed_value(text, kind)
    if value is None:
        return None
    if kind in ("date", "timestamp"):
        return text  # ISO text, as written
    if isinstance(value, bool):
        return int(value)
    return float(value) if isinstance(value, Decimal) else value


def load_sqlite(file: Path, tables: dict[str, dict[str, str]], data_dir: Path) -> Path:
    """Create the SQLite database ``file`` with one table per CSV file."""
    connection = sqlite3.connect(file)
    try:
        for table, columns in tables.items():
            path = Path(data_dir) / f"{table}.csv"
            _header(path, columns)
            with open(path, newline="", encoding="utf-8") as handle:
                rows = [tuple(_sqlite_value(row[name], kind) for name, kind in columns.items())
                        for row in csv.DictReader(handle)]
            ddl = ", ".join(f'"{name}" {SQLITE_TYPES[kind]}' for name, kind in columns.items())
            connection.execute(f'CREATE TABLE "{table}" ({ddl})')
            connection.executemany(f'INSERT INTO "{table}" VALUES ({", ".join("?" for _ in columns)})', rows)
        connection.commit()
    finally:
        connection.close()
    return file


def sqlite_warehouse(tmp_dir: Path, name: str, tables: dict[str, dict[str, str]], data_dir: Path) -> str:
    """A SQLite database of the CSV files, as a warehouse URL, for tests that compare SQLite with
    DuckDB. The SQLite adapter is a separate package; CI installs it (and sets
    KPI_ENGINE_REQUIRE_POSTGRES), where its absence is a failure, not a skip."""
    import os

    import pytest

    from kpi_engine.errors import KpiEngineError
    from kpi_engine.plugins import default_registry

    try:
        default_registry().adapter("sqlite")
    except KpiEngineError:
        if os.environ.get("KPI_ENGINE_REQUIRE_POSTGRES", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("the kpi-engine-sqlite plugin is required in CI but not installed", pytrace=False)
        pytest.skip("the kpi-engine-sqlite plugin is not installed (pip install ./plugins/kpi-engine-sqlite)")
    return f"sqlite:///{load_sqlite(Path(tmp_dir) / f'{name}.sqlite', tables, data_dir).resolve()}"


def postgres_warehouse(pg_server, dbname: str, tables: dict[str, dict[str, str]], data_dir: Path) -> str:
    """A fresh database ``dbname`` on the test server (tests/pg.py) holding the CSV files, as a
    warehouse URL, for tests that compare PostgreSQL with DuckDB."""
    import dataclasses

    import psycopg
    from psycopg import sql

    database = dataclasses.replace(pg_server, dbname=dbname)
    with pg_server.admin_connect("postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname),
                                                                   sql.Identifier(database.user)))
    with psycopg.connect(database.url, autocommit=True) as connection:
        load_postgres(connection, tables, data_dir)
    return database.url
