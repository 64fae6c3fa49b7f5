"""round() is half away from zero on the number as it prints, the same on every warehouse: 78.55
rounds to 78.6 on DuckDB (which on its own rounds the DOUBLE's binary value, 78.5499..., to 78.5),
SQLite and PostgreSQL (whose ROUND of a DOUBLE breaks ties to even: 2.5 -> 2). Expected values
are worked by hand from the decimals written in the data."""

from __future__ import annotations

import pytest

from kpi_engine.engine import open_project
from warehouse_loading import postgres_warehouse, sqlite_warehouse

pytest_plugins = ["pg"]

# id, value: ties at the rounded digit, written in decimal; a DOUBLE holds most of them inexactly.
VALUES = [("a", "78.55"), ("b", "2.675"), ("c", "-2.5"), ("d", "1234567.15"), ("e", "0.05"), ("f", "2.5"),
          ("g", "-0.45"), ("h", "1e30"), ("i", "25"), ("j", "-34.5")]
EXPECTED = {  # round(x, 1), round(x), round(x, 2), round(x, -1)
    "a": (78.6, 79.0, 78.55, 80.0), "b": (2.7, 3.0, 2.68, 0.0), "c": (-2.5, -3.0, -2.5, 0.0),
    "d": (1234567.2, 1234567.0, 1234567.15, 1234570.0), "e": (0.1, 0.0, 0.05, 0.0), "f": (2.5, 3.0, 2.5, 0.0),
    "g": (-0.5, 0.0, -0.45, 0.0), "h": (1e30, 1e30, 1e30, 1e30), "i": (25.0, 25.0, 25.0, 30.0),
    "j": (-34.5, -35.0, -34.5, -30.0)}
SPECS = """\
sources:
  readings: {table: readings, time: taken_on, dimensions: [id]}
kpis:
  one_digit: {formula: "round(max(readings.value), 1)"}
  whole: {formula: "round(max(readings.value))"}
  two_digits: {formula: "round(max(readings.value), 2)"}
  tens: {formula: "round(max(readings.value), -1)"}
"""
TABLES = {"readings": {"taken_on": "date", "id": "text", "value": "double"}}


@pytest.fixture
def folder(make_project):
    rows = [{"taken_on": "2025-01-01", "id": name, "value": value} for name, value in VALUES]
    return make_project({"specs.yaml": SPECS}, {"readings": rows},
                        config="name: rounding\nwarehouse: {adapter: duckdb, data: data, tables: {readings: "
                               "{types: {value: number}}}}\n")


def check(project):
    kpis = ["one_digit", "whole", "two_digits", "tens"]
    rows = {row["id"]: row for row in project.evaluate(kpis, by=["id"])}
    for name, expected in EXPECTED.items():
        assert tuple(rows[name][kpi] for kpi in kpis) == pytest.approx(expected, rel=1e-12, abs=1e-12), name


def test_duckdb_rounds_as_the_number_prints(folder):
    with open_project(folder) as project:
        assert project.model().sources["readings"]  # read from CSV as DOUBLE (types: number)
        check(project)


def test_sqlite_rounds_the_same(folder, tmp_path):
    with open_project(folder, warehouse=sqlite_warehouse(tmp_path, "rounding", TABLES, folder / "data")) as project:
        check(project)


def test_postgres_rounds_the_same(folder, pg_server):
    with open_project(folder, warehouse=postgres_warehouse(pg_server, "kpi_rounding", TABLES,
                                                             folder / "data")) as project:
        check(project)
