"""Fixtures: one chdb database folder (chdb opens one folder per process) holding the example
warehouse (examples/marketing/data/*.csv) in the database ``marketing`` and the conformance
kit's tables in ``fixture``; the DuckDB warehouse over the same CSV files, for comparison.

Without chdb the tests skip, or fail when KPI_ENGINE_REQUIRE_CLICKHOUSE=1 (as CI runs them)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest
from kpi_engine.testing import TABLES, fixture_dir
from kpi_engine.testing import assert_same_results as same_results

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_DATA = REPO / "examples" / "marketing" / "data"

#: ClickHouse types for the column kinds of the standard tables.
CLICKHOUSE_TYPES = {"integer": "Int64", "decimal": "Decimal(14, 2)", "text": "String", "boolean": "Bool",
                    "date": "Date", "timestamp": "DateTime"}


def assert_same_results(rows: list[dict], duckdb_rows: list[dict], names: list[str]) -> None:
    same_results(rows, duckdb_rows, names, engine="ClickHouse")


def require_chdb():
    """The chdb module, or a skip (a failure under KPI_ENGINE_REQUIRE_CLICKHOUSE=1)."""
    try:
        import chdb
    except ImportError:
        message = "chdb is not installed (pip install chdb, or pip install plugins/kpi-engine-clickhouse)"
        if os.environ.get("KPI_ENGINE_REQUIRE_CLICKHOUSE") == "1":
            pytest.fail(f"ClickHouse is required (KPI_ENGINE_REQUIRE_CLICKHOUSE=1) but {message}", pytrace=False)
        pytest.skip(message)
    return chdb


def column_types(path: Path, columns: dict[str, str]) -> dict[str, str]:
    """The ClickHouse type of each column of a CSV file: Nullable where a cell is empty."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == list(columns), f"{path.name}: columns differ from the standard table"
        empty = {name for row in reader for name, value in row.items() if value == ""}
    return {name: f"Nullable({CLICKHOUSE_TYPES[kind]})" if name in empty else CLICKHOUSE_TYPES[kind]
            for name, kind in columns.items()}


def load_clickhouse(cursor, database: str, data: Path) -> None:
    """One MergeTree table per CSV file of ``data`` in ``database``, read by ClickHouse's file()."""
    cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    for table, columns in TABLES.items():
        path = data / f"{table}.csv"
        types = column_types(path, columns)
        structure = ", ".join(f"`{name}` {kind}" for name, kind in types.items())
        cursor.execute(f"DROP TABLE IF EXISTS `{database}`.`{table}`")
        cursor.execute(f"CREATE TABLE `{database}`.`{table}` ({structure}) ENGINE = MergeTree ORDER BY tuple()")
        quoted = str(path).replace("\\", "\\\\").replace("'", "\\'")
        cursor.execute(f"INSERT INTO `{database}`.`{table}` SELECT * FROM file('{quoted}', 'CSVWithNames', "
                       f"'{structure}') SETTINGS input_format_csv_empty_as_default = 1")


@pytest.fixture(scope="session")
def chdb_folder(tmp_path_factory) -> Path:
    """The folder of the chdb database with ``marketing`` and ``fixture`` loaded."""
    chdb = require_chdb()
    if not EXAMPLE_DATA.is_dir():
        pytest.skip(f"the example data is not at {EXAMPLE_DATA}")
    folder = tmp_path_factory.mktemp("chdb")
    writer = chdb.connect(str(folder))
    try:
        cursor = writer.cursor()
        load_clickhouse(cursor, "marketing", EXAMPLE_DATA)
        load_clickhouse(cursor, "fixture", fixture_dir())
        cursor.close()
    finally:
        writer.close()
    return folder


def settings(folder: Path, database: str = "marketing", **more: Any) -> dict[str, Any]:
    return {"adapter": "clickhouse", "path": str(folder), "database": database, **more}


@pytest.fixture(scope="session")
def duckdb_warehouse() -> dict[str, Any]:
    return {"adapter": "duckdb", "data": str(EXAMPLE_DATA)}
