"""Every KPI of the marketing library gives on ClickHouse (chdb) what it gives on DuckDB over the
same example data, for every grain and calendar; and the conformance kit passes."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import assert_same_results, settings
from kpi_engine import testing
from kpi_engine.engine import open_project
from kpi_engine.testing import FUNCTION_FORMULAS, write_project

GROUPINGS = {
    "month_by_channel": dict(by=["channel"], grain="month"),
    "quarter": dict(grain="quarter"),
    "week": dict(grain="week"),
    "year_by_channel": dict(by=["channel"], grain="year"),
    "range_filled_by_channel": dict(by=["channel"], grain="month", start="2024-11-01", end="2025-05-01", fill=True),
    "days_in_range": dict(grain="day", start="2025-02-20", end="2025-03-10"),
    "total": dict(),
}


@pytest.fixture(scope="module")
def projects(chdb_folder, duckdb_warehouse, tmp_path_factory):
    root = tmp_path_factory.mktemp("projects")
    clickhouse_project = write_project(root / "on_clickhouse", settings(chdb_folder))
    duckdb_project = write_project(root / "on_duckdb", duckdb_warehouse)
    with open_project(clickhouse_project) as on_clickhouse, open_project(duckdb_project) as on_duckdb:
        yield on_clickhouse, on_duckdb


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_every_library_kpi_matches_duckdb(projects, grouping):
    on_clickhouse, on_duckdb = projects
    names = list(on_clickhouse.project.kpis)
    assert len(names) >= 38
    options = GROUPINGS[grouping]
    if "grain" not in options:  # previous() and the like need periods
        model = on_clickhouse.model()
        names = [name for name in names if not model.needs_grain(name)]
    rows = on_clickhouse.evaluate(names, **options).to_dicts()
    assert rows
    assert_same_results(rows, on_duckdb.evaluate(names, **options).to_dicts(), names)
    if "grain" in options:
        assert all(type(row["period"]) is dt.date for row in rows)  # dates, as DuckDB returns them
