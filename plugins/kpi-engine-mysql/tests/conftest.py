"""Fixtures: a throwaway MariaDB server (mariadb_server.py), the example warehouse
(examples/marketing/data/*.csv) and the conformance kit's tables loaded into it, and projects
that include the marketing library on MariaDB and, for comparison, on DuckDB."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from kpi_engine.testing import TABLES, fixture_dir
from kpi_engine.testing import _convert as typed_value
from kpi_engine.testing import assert_same_results as same_results


def assert_same_results(rows: list[dict], duckdb_rows: list[dict], names: list[str]) -> None:
    same_results(rows, duckdb_rows, names, engine="MariaDB")


pytest_plugins = ["mariadb_server"]

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_DATA = REPO / "examples" / "marketing" / "data"

#: MySQL types for the column kinds of the standard tables (BOOLEAN is TINYINT(1)).
MYSQL_TYPES = {"integer": "BIGINT", "decimal": "DECIMAL(14,2)", "text": "VARCHAR(255)", "boolean": "BOOLEAN",
               "date": "DATE", "timestamp": "DATETIME"}
_BATCH = 2_000


def load_mysql(connection, data: Path) -> dict[str, int]:
    """One table per CSV file of ``data`` (the standard tables), with MYSQL_TYPES; rows per table."""
    counts = {}
    with connection.cursor() as cursor:
        for table, columns in TABLES.items():
            with open(data / f"{table}.csv", newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                assert reader.fieldnames == list(columns), f"{table}.csv columns differ from the standard table"
                rows = [tuple(typed_value(row[name], kind) for name, kind in columns.items()) for row in reader]
            ddl = ", ".join(f"`{name}` {MYSQL_TYPES[kind]}" for name, kind in columns.items())
            cursor.execute(f"DROP TABLE IF EXISTS `{table}`")
            cursor.execute(f"CREATE TABLE `{table}` ({ddl})")
            insert = f"INSERT INTO `{table}` VALUES ({', '.join(['%s'] * len(columns))})"
            for start in range(0, len(rows), _BATCH):
                cursor.executemany(insert, rows[start:start + _BATCH])
            counts[table] = len(rows)
    return counts


@pytest.fixture(scope="session")
def marketing_db(mariadb_server) -> str:
    """The example warehouse in the database kpi_marketing."""
    if not EXAMPLE_DATA.is_dir():
        pytest.skip(f"the example data is not at {EXAMPLE_DATA}")
    connection = mariadb_server.connect("kpi_marketing")
    try:
        load_mysql(connection, EXAMPLE_DATA)
    finally:
        connection.close()
    return "kpi_marketing"


@pytest.fixture(scope="session")
def fixture_db(mariadb_server) -> str:
    """The conformance kit's tables in the database kpi_fixture."""
    connection = mariadb_server.connect("kpi_fixture")
    try:
        load_mysql(connection, fixture_dir())
    finally:
        connection.close()
    return "kpi_fixture"


@pytest.fixture(scope="session")
def duckdb_warehouse() -> dict[str, Any]:
    return {"adapter": "duckdb", "data": str(EXAMPLE_DATA)}
