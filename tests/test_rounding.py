"""round() is half away from zero on the number as it prints, the same on every warehouse: the
conformance kit's check (kpi_engine/testing/rounding.py, hand-worked values) on DuckDB (which on
its own rounds a DOUBLE's binary value, 78.5499..., to 78.5), SQLite (which reads negative digits
as 0) and PostgreSQL (whose ROUND of a DOUBLE breaks ties to even: 2.5 -> 2). The MySQL and
ClickHouse plugins run the same check in their own tests."""

from __future__ import annotations

import csv

import pytest

from kpi_engine.engine import open_project
from kpi_engine.testing.rounding import COLUMNS, ROWS, TABLE, rounding_mismatches, write_rounding_project
from warehouse_loading import postgres_warehouse, sqlite_warehouse

pytest_plugins = ["pg"]

TABLES = {TABLE: COLUMNS}


@pytest.fixture
def data(tmp_path):
    """The check's rows as CSV (an empty field is NULL), for the loaders of each warehouse."""
    folder = tmp_path / "data"
    folder.mkdir()
    with open(folder / f"{TABLE}.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows([[_csv_text(value) for value in row] for row in ROWS])
    return folder


def _csv_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # (the shortest text that reads back as the same double)
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def test_duckdb_rounds_as_the_number_prints(data, tmp_path):
    warehouse = {"adapter": "duckdb", "data": str(data),
                 "tables": {TABLE: {"types": {"value": "number", "price": "number"}}}}
    with open_project(write_rounding_project(tmp_path / "duckdb", warehouse)) as project:
        assert rounding_mismatches(project) == []


def test_sqlite_rounds_the_same(data, tmp_path):
    warehouse = sqlite_warehouse(tmp_path, "rounding", TABLES, data)
    with open_project(write_rounding_project(tmp_path / "sqlite", warehouse)) as project:
        assert rounding_mismatches(project) == []


def test_postgres_rounds_the_same(data, tmp_path, pg_server):
    warehouse = postgres_warehouse(pg_server, "kpi_rounding", TABLES, data)
    with open_project(write_rounding_project(tmp_path / "postgres", warehouse)) as project:
        assert rounding_mismatches(project) == []


def test_the_check_catches_a_warehouse_that_rounds_ties_to_even(data, tmp_path):
    # The kit must fail a warehouse that rounds otherwise: Python's round() breaks ties to even on
    # the binary value, so a project whose values are those of Python's round() is told apart.
    class TiesToEven:
        def evaluate(self, names, by):
            class Result:
                @staticmethod
                def to_dicts():
                    rows = []
                    for _, name, value, price, units in ROWS:
                        row = {"id": name, "price": round(float(price), 1), "units_tens": float(round(units, -1))}
                        for kpi, digits in (("one_digit", 1), ("whole", 0), ("two_digits", 2), ("tens", -1)):
                            row[kpi] = None if value is None else round(value, digits)
                        rows.append(row)
                    return rows
            return Result()

    problems = rounding_mismatches(TiesToEven())
    assert any(problem.startswith("f whole: 2.0, expected 3.0") for problem in problems), problems
    assert any(problem.startswith("a one_digit: 78.5, expected 78.6") for problem in problems), problems
    assert any(problem.startswith("i tens: 20.0, expected 30.0") for problem in problems), problems
    assert not any(problem.startswith("n one_digit") for problem in problems)  # null is null on both sides
