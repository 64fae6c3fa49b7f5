"""from_unixtime(x): a warehouse that stores its times as Unix time (seconds since 1970-01-01
00:00 UTC, as Stripe's and many applications' tables do; milliseconds divided by 1000) is read
by mapping the time column through it. Checked against plain Python's
datetime.fromtimestamp(x, UTC) over the rows written here, on DuckDB, SQLite, PostgreSQL and
Spark, by month and in a project with a time zone, and the errors that point there."""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict

import pytest
import sqlglot
from sqlglot import exp

from kpi_engine.engine import open_project
from kpi_engine.errors import KpiEngineError
from warehouse_loading import postgres_warehouse, sqlite_warehouse

pytest_plugins = ["pg", "spark_fixture"]

SPECS = """\
sources:
  charges:
    table: charges
    time: created_at
    dimensions: [status]
    map: {created_at: "from_unixtime(created)", refunded_at: "from_unixtime(refunded_ms / 1000)"}
kpis:
  charges_n: {formula: count(charges)}
  paid: {formula: "sum(charges.amount where status = 'paid') / 100"}
  refunded_in_2_days: {formula: "count(charges where days_between(created_at, refunded_at) <= 2)"}
  growth: {formula: charges_n - previous(charges_n)}
"""
# created (Unix seconds), amount (cents), status, refunded_ms (Unix milliseconds, '' never; a
# double on PostgreSQL and SQLite, past what a 32-bit integer holds)
CHARGES = [(1735689599, 1000, "paid", ""),               # 2024-12-31 23:59:59 UTC
           (1735689600, 2500, "paid", 1735862400000),     # 2025-01-01 00:00:00, refunded 2 days later
           (1735707600, 400, "failed", ""),               # 2025-01-01 05:00:00 (00:00 in New York)
           (1738367999, 1200, "paid", 1738368000500),     # 2025-01-31 23:59:59, refunded the next day
           (1738368000, 700, "paid", 1738800000000),      # 2025-02-01 00:00:00, refunded 5 days later
           (1740787199, 300, "paid", ""),                 # 2025-02-28 23:59:59
           (-86400, 50, "paid", "")]                      # 1969-12-31 00:00:00: before 1970
COLUMNS = {"created": "integer", "amount": "integer", "status": "text", "refunded_ms": "double"}
KPIS = ["charges_n", "paid", "refunded_in_2_days", "growth"]


def utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def reference(zone: str = "UTC") -> dict[dt.date, dict]:
    """Per month of the local time in ``zone``: charges, paid in units, refunded within 2 calendar
    days (of UTC dates, as days_between reads the stored times), growth over the month before."""
    from zoneinfo import ZoneInfo

    months = defaultdict(list)
    for row in CHARGES:
        months[utc(row[0]).astimezone(ZoneInfo(zone)).date().replace(day=1)].append(row)
    expected = {}
    for month, rows in months.items():
        before = (month - dt.timedelta(days=1)).replace(day=1)
        quick = [row for row in rows if row[3] != ""
                 and (utc(row[3] / 1000).date() - utc(row[0]).date()).days <= 2]
        expected[month] = {"charges_n": len(rows), "paid": sum(r[1] for r in rows if r[2] == "paid") / 100,
                           "refunded_in_2_days": len(quick), "growth": len(rows) - len(months.get(before, []))}
    return expected


def check(project, zone: str = "UTC"):
    rows = {row["period"]: row for row in project.evaluate(KPIS, grain="month").to_dicts()}
    expected = reference(zone)
    assert set(rows) == set(expected)
    for month, values in expected.items():
        for kpi, value in values.items():
            assert rows[month][kpi] == pytest.approx(value), (month, kpi)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "p"
    (root / "data").mkdir(parents=True)
    with open(root / "data" / "charges.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(CHARGES)
    (root / "specs.yaml").write_text(SPECS)
    (root / "kpi_engine.yaml").write_text("name: unix_time\nwarehouse: {adapter: duckdb, data: data}\n")
    return root


def test_unix_times_by_month_on_duckdb(folder):
    with open_project(folder) as project:
        assert project.model().sources["charges"].time  # the mapped column is the source's time axis
        check(project)


def test_local_months_in_a_project_with_a_time_zone(folder):
    # Unix time is UTC: 2025-01-01 05:00 UTC is midnight in New York, 2024-12-31 23:59:59 UTC is
    # still December there, and so is 2025-01-01 00:00 UTC.
    config = folder / "kpi_engine.yaml"
    config.write_text(config.read_text() + "timezone: America/New_York\n")
    with open_project(folder) as project:
        check(project, "America/New_York")
    december = dt.date(2024, 12, 1)  # not vacuous: the zone moves a charge into December
    assert (reference("America/New_York")[december]["charges_n"], reference()[december]["charges_n"]) == (2, 1)


def test_the_same_on_sqlite(folder, tmp_path):
    with open_project(folder, warehouse=sqlite_warehouse(tmp_path, "unix", {"charges": COLUMNS},
                                                         folder / "data")) as project:
        check(project)


def test_the_same_on_postgres(folder, pg_server):
    with open_project(folder, warehouse=postgres_warehouse(pg_server, "kpi_unix_time", {"charges": COLUMNS},
                                                           folder / "data")) as project:
        check(project)


def test_the_same_on_spark(folder, spark):
    # (the adapter reads the CSV files into the running local session; its SQL reads TIMESTAMP_SECONDS)
    with open_project(folder, warehouse={"adapter": "spark", "data": str(folder / "data")}) as project:
        check(project)


@pytest.mark.parametrize("formula, words", [
    ("count(charges where from_unixtime(status) > timestamp('2025-01-01'))",
     ["from_unixtime() reads a number of seconds since 1970-01-01 00:00 UTC, but this is a string",
      "timestamp(text_column)"]),
    ("count(charges where timestamp(created) > timestamp('2025-01-01'))",
     ["timestamp() reads text", "from_unixtime(ts)", "from_unixtime(ts / 1000)"]),
    ("count(charges where date(created) > date('2025-01-01'))", ["date(from_unixtime(ts))"]),
    ("count(charges where from_unixtime() > timestamp('2025-01-01'))", ["from_unixtime(seconds_column)"]),
])
def test_errors_point_to_the_function(folder, formula, words):
    with open_project(folder) as project:
        with pytest.raises(KpiEngineError) as raised:
            project.evaluate(formulas=[formula], grain="month")
    message = str(raised.value)
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("dialect", ["snowflake", "bigquery", "redshift", "databricks", "trino", "clickhouse", "mysql",
                                     "tsql", "oracle", "postgres", "spark", "duckdb", "sqlite"])
def test_every_dialect_renders_it_and_parses_it_back(folder, dialect):
    with open_project(folder) as project:
        sql = project.compile(KPIS, grain="month", dialect=dialect, describe=False).sql()
    tree = sqlglot.parse_one(sql, read=dialect)
    assert "created" in {column.name for column in tree.find_all(exp.Column)}
    assert "1970-01-01" in sql or "unixepoch" in sql or "TIMESTAMP_SECONDS" in sql or "fromUnixTimestamp64Milli" in sql
