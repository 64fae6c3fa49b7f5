"""Fixtures: the example warehouse (examples/marketing/data/*.csv) loaded into SQLite files,
and projects that include the marketing library on SQLite and, for comparison, on DuckDB."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from kpi_engine.testing import TABLES

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_DATA = REPO / "examples" / "marketing" / "data"

#: Declared SQLite types for the column kinds of the standard tables. SQLite stores dates and
#: timestamps as ISO-8601 text and booleans as 0/1; the declared type tells kpi-engine the kind.
DECLARED = {"integer": "INTEGER", "decimal": "REAL", "text": "TEXT", "boolean": "BOOLEAN", "date": "DATE",
            "timestamp": "TIMESTAMP"}
#: The same with dates and timestamps declared TEXT: the adapter recognises them from their values.
TEXT_DATES = {**DECLARED, "date": "TEXT", "timestamp": "TEXT"}


def _value(text: str, kind: str) -> Any:
    if text == "":
        return None
    if kind == "integer":
        return int(text)
    if kind == "decimal":
        return float(text)
    if kind == "boolean":
        if text not in ("true", "false"):
            raise ValueError(f"not a boolean: {text!r}")
        return 1 if text == "true" else 0
    return text  # text, and ISO dates and timestamps as they are written


def load_sqlite(data: Path, file: Path, types: dict[str, str] = DECLARED) -> Path:
    """Create ``file`` with one table per CSV file of ``data`` (the standard tables)."""
    connection = sqlite3.connect(file)
    try:
        for table, columns in TABLES.items():
            with open(data / f"{table}.csv", newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                assert reader.fieldnames == list(columns), f"{table}.csv columns differ from the standard table"
                rows = [tuple(_value(row[name], kind) for name, kind in columns.items()) for row in reader]
            ddl = ", ".join(f'"{name}" {types[kind]}' for name, kind in columns.items())
            connection.execute(f'CREATE TABLE "{table}" ({ddl})')
            marks = ", ".join("?" for _ in columns)
            connection.executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows)
        connection.commit()
    finally:
        connection.close()
    return file


def write_project(folder: Path, warehouse: dict[str, Any], **config: Any) -> Path:
    """A project that includes the marketing library; ``config`` adds calendar settings."""
    folder.mkdir(parents=True, exist_ok=True)
    body = {"name": folder.name, "warehouse": warehouse, "include": ["builtin:marketing"], **config}
    (folder / "kpi_engine.yaml").write_text(json.dumps(body, indent=2), encoding="utf-8")  # JSON is YAML
    return folder


@pytest.fixture(scope="session")
def example_db(tmp_path_factory) -> Path:
    """The example warehouse in SQLite, with DATE, TIMESTAMP and BOOLEAN declared."""
    if not EXAMPLE_DATA.is_dir():
        pytest.skip(f"the example data is not at {EXAMPLE_DATA}")
    return load_sqlite(EXAMPLE_DATA, tmp_path_factory.mktemp("sqlite") / "marketing.sqlite")


@pytest.fixture(scope="session")
def example_db_text_dates(tmp_path_factory) -> Path:
    """The example warehouse in SQLite, with dates and timestamps declared TEXT."""
    if not EXAMPLE_DATA.is_dir():
        pytest.skip(f"the example data is not at {EXAMPLE_DATA}")
    return load_sqlite(EXAMPLE_DATA, tmp_path_factory.mktemp("sqlite_text") / "marketing.db", TEXT_DATES)


@pytest.fixture(scope="session")
def duckdb_warehouse() -> dict[str, Any]:
    return {"adapter": "duckdb", "data": str(EXAMPLE_DATA)}
