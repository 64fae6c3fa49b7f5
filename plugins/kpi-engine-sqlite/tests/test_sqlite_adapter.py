"""The SQLite adapter end to end: discovered as an installed plugin, every KPI of the marketing
library equal to DuckDB's on the same example data, read-only, clear errors."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import sqlite3
import threading
from collections import Counter

import pytest
import sqlglot
from click.testing import CliRunner
from conftest import EXAMPLE_DATA, TEXT_DATES, load_sqlite, write_project
from kpi_engine import errors, testing
from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from kpi_engine.errors import QueryError, WarehouseError
from kpi_engine.hookspecs import KPIS_META, rendered
from kpi_engine.plugins import Registry

import kpi_engine_sqlite
from kpi_engine_sqlite import SQLiteAdapter, SQLiteConnection

GROUPINGS = {
    "month_by_channel": dict(by=["channel"], grain="month"),
    "quarter": dict(grain="quarter"),
    "week": dict(grain="week"),
    "year_by_channel": dict(by=["channel"], grain="year"),
    "range_filled_by_channel": dict(by=["channel"], grain="month", start="2024-11-01", end="2025-05-01", fill=True),
    "days_in_range": dict(grain="day", start="2025-02-20", end="2025-03-10"),
    "total": dict(),
}


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_same_results(sqlite_rows: list[dict], duckdb_rows: list[dict], names: list[str]) -> None:
    """Same keys, same values up to floating-point rounding, None exactly where DuckDB has None."""
    testing.assert_same_results(sqlite_rows, duckdb_rows, names, engine="SQLite")


@pytest.fixture(scope="module")
def projects(example_db, duckdb_warehouse, tmp_path_factory):
    root = tmp_path_factory.mktemp("projects")
    sqlite_project = write_project(root / "on_sqlite", {"adapter": "sqlite", "path": str(example_db)})
    duckdb_project = write_project(root / "on_duckdb", duckdb_warehouse)
    with open_project(sqlite_project) as on_sqlite, open_project(duckdb_project) as on_duckdb:
        yield on_sqlite, on_duckdb


# --- discovery ---------------------------------------------------------------------------------------------


def test_kpi_engine_plugins_lists_the_sqlite_adapter_and_its_package():
    result = run("plugins", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {row["plugin"]: row for row in json.loads(result.output)}
    assert rows["sqlite"]["adapters"] == ["sqlite"]
    assert rows["sqlite"]["dialects"] == ["sqlite"]
    assert rows["sqlite"]["module"] == "kpi_engine_sqlite"
    assert rows["sqlite"]["distribution"].startswith("kpi-engine-sqlite ")
    assert rows["sqlite"]["status"] == "ok"
    table = run("plugins")
    assert table.exit_code == 0 and "adapter sqlite (sqlite)" in table.output and "kpi-engine-sqlite" in table.output


def test_the_registry_finds_it_through_its_entry_point():
    registry = Registry()
    info = registry.adapters()["sqlite"]
    assert info.adapter is SQLiteAdapter
    assert info.plugin.distribution == "kpi-engine-sqlite"
    assert registry.adapters_for_dialect("sqlite") == [SQLiteAdapter]


# --- every KPI of the library, SQLite == DuckDB --------------------------------------------------------------


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_every_library_kpi_matches_duckdb(projects, grouping):
    on_sqlite, on_duckdb = projects
    names = list(on_sqlite.project.kpis)
    assert len(names) >= 39
    options = GROUPINGS[grouping]
    if "grain" not in options:  # previous() and the like need periods
        model = on_sqlite.model()
        names = [name for name in names if not model.needs_grain(name)]
    sqlite_rows = on_sqlite.evaluate(names, **options).to_dicts()
    assert sqlite_rows
    assert_same_results(sqlite_rows, on_duckdb.evaluate(names, **options).to_dicts(), names)
    if "grain" in options:
        assert all(isinstance(row["period"], dt.date) for row in sqlite_rows)  # dates, as DuckDB returns them


def test_dates_declared_as_text_are_recognised(example_db_text_dates, duckdb_warehouse, tmp_path):
    """TEXT columns holding ISO dates are described as DATE/TIMESTAMP, so the library validates and agrees."""
    on_text = write_project(tmp_path / "text", {"adapter": "sqlite", "path": str(example_db_text_dates)})
    on_duck = write_project(tmp_path / "duck", duckdb_warehouse)
    with open_project(on_text) as sqlite_project, open_project(on_duck) as duckdb_project:
        catalog = sqlite_project.model().catalog
        assert catalog["ad_spend"]["spend_date"] == "date" and catalog["leads"]["created_at"] == "timestamp"
        assert catalog["leads"]["customer_at"] == "timestamp"  # mostly null, still recognised
        names = list(sqlite_project.project.kpis)
        for options in (GROUPINGS["month_by_channel"], GROUPINGS["quarter"]):
            assert_same_results(sqlite_project.evaluate(names, **options).to_dicts(),
                                duckdb_project.evaluate(names, **options).to_dicts(), names)


@pytest.mark.parametrize("grain", ["week", "fiscal_quarter", "fiscal_year", "month"])
def test_week_start_and_fiscal_year_match_duckdb(example_db, duckdb_warehouse, tmp_path, grain):
    calendar = {"week_start": "sunday", "fiscal_year_start": 4}
    on_sqlite = write_project(tmp_path / "s", {"adapter": "sqlite", "path": str(example_db)}, **calendar)
    on_duckdb = write_project(tmp_path / "d", duckdb_warehouse, **calendar)
    with open_project(on_sqlite) as sqlite_project, open_project(on_duckdb) as duckdb_project:
        names = list(sqlite_project.project.kpis)
        options = dict(grain=grain, by=["channel"], start="2024-05-01", end="2025-10-01")
        assert_same_results(sqlite_project.evaluate(names, **options).to_dicts(),
                            duckdb_project.evaluate(names, **options).to_dicts(), names)


FORMULAS = testing.FUNCTION_FORMULAS


@pytest.mark.parametrize("options", [dict(grain="month", by=["channel"], start="2024-07-01", end="2025-07-01"),
                                     dict(grain="quarter")], ids=["month_by_channel_range", "quarter"])
def test_functions_and_time_intelligence_match_duckdb(projects, options):
    on_sqlite, on_duckdb = projects
    names = ["formula"] + [f"formula_{i}" for i in range(2, len(FORMULAS) + 1)]
    assert_same_results(on_sqlite.evaluate(formulas=FORMULAS, **options).to_dicts(),
                        on_duckdb.evaluate(formulas=FORMULAS, **options).to_dicts(), names)


def test_having_order_and_limit(projects):
    on_sqlite, on_duckdb = projects
    options = dict(by=["channel"], grain="quarter", having="new_contacts > 10", order_by=["-cost_per_lead"], limit=7)
    sqlite_rows = on_sqlite.evaluate(["cost_per_lead", "new_contacts"], **options).to_dicts()
    duckdb_rows = on_duckdb.evaluate(["cost_per_lead", "new_contacts"], **options).to_dicts()
    assert [(r["period"], r["channel"]) for r in sqlite_rows] == [(r["period"], r["channel"]) for r in duckdb_rows]
    assert_same_results(sqlite_rows, duckdb_rows, ["cost_per_lead", "new_contacts"])


def test_the_conformance_kit_passes(tmp_path):
    """The packaged fixture tables and reference values every adapter is held to."""
    database = load_sqlite(testing.fixture_dir(), tmp_path / "fixture.sqlite")
    testing.assert_conformance({"adapter": "sqlite", "path": str(database)}, tmp_path / "project")


# --- the command line ------------------------------------------------------------------------------------------


def test_compile_for_sqlite_has_no_date_trunc_and_its_sql_runs(example_db, tmp_path, duckdb_warehouse):
    project = write_project(tmp_path / "duck", duckdb_warehouse)  # any project: prepare follows the dialect
    options = ["--by", "channel", "--grain", "quarter", "--from", "2024-04-01", "--to", "2025-04-01", "--fill"]
    result = run("compile", str(project), "--all", *options, "--dialect", "sqlite")
    assert result.exit_code == 0, result.output
    sql = result.stdout
    for name in ("DATE_TRUNC", "TIMESTAMP_TRUNC", "DATETIME_TRUNC", "YEAR(", "MONTH(", "DATE_ADD", "DATE_DIFF",
                 "DATEDIFF", "IIF(", "CONVERT_TIMEZONE", "INTERVAL"):
        assert name not in sql.upper(), name
    with sqlite3.connect(f"{example_db.as_uri()}?mode=ro", uri=True) as connection:
        rows = connection.execute(sql.rstrip().rstrip(";")).fetchall()
    on_duckdb = json.loads(run("evaluate", str(project), "--all", *options, "--format", "json").stdout)
    assert len(rows) == len(on_duckdb) and {row[0] for row in rows} == {"2024-04-01", "2024-07-01", "2024-10-01",
                                                                        "2025-01-01"}
    assert [(row[0], row[1]) for row in rows] == [(row["period"], row["channel"]) for row in on_duckdb]


def test_a_request_is_rewritten_and_rendered_once_and_sqlite_runs_the_text_shown(example_db, tmp_path, monkeypatch):
    """The engine prepares a request's tree for SQLite and renders it once, for the result's sql;
    the connection runs that text (no second rewrite or rendering): the statement SQLite ran is
    the result's sql, the SQL it ran before up to layout, and the numbers are the CSV file's."""
    ran: list[str] = []  # every statement SQLite runs
    real_open = SQLiteConnection._open

    def tracing(self):
        connection = real_open(self)
        connection.set_trace_callback(ran.append)
        return connection

    rewrites = []  # rewrites of the request's tree (the one holding the KPIs asked)
    real_rewrite = kpi_engine_sqlite.to_sqlite

    def rewriting(query):
        if (query._meta or {}).get(KPIS_META) is not None:
            rewrites.append(query)
        return real_rewrite(query)

    monkeypatch.setattr(SQLiteConnection, "_open", tracing)
    monkeypatch.setattr(kpi_engine_sqlite, "to_sqlite", rewriting)
    start, end = dt.date(2024, 1, 1), dt.date(2024, 7, 1)
    options = dict(formulas=["sum(ad_spend.spend)"], by=["channel"], grain="month", start=start, end=end)
    with open_project(write_project(tmp_path / "once", {"adapter": "sqlite", "path": str(example_db)})) as project:
        project.model()  # described first: describing runs queries of its own
        with testing.request_renders() as renders:
            result = project.evaluate(**options)
            assert renders == ["sqlite"] and not rewrites and ran[-1] == result.sql
            renders.clear()
            query, batches = project.stream(**options, batch_size=2)
            streamed = [row for batch in batches for row in batch]
            assert renders == ["sqlite"] and not rewrites and ran[-1] == query.sql()
        # what the connection ran before: the tree rewritten again, rendered without layout
        before = real_rewrite(query.expression).sql(dialect="sqlite")
        assert sqlglot.parse_one(before, read="sqlite") == sqlglot.parse_one(result.sql, read="sqlite")
    with open(EXAMPLE_DATA / "ad_spend.csv", newline="", encoding="utf-8") as handle:
        spend = Counter()
        for row in csv.DictReader(handle):
            day = dt.date.fromisoformat(row["spend_date"])
            if start <= day < end:
                spend[(day.replace(day=1), row["channel"])] += float(row["spend"])
    got = {(row["period"], row["channel"]): row["formula"] for row in result.to_dicts()}
    assert set(got) == set(spend) and len(spend) == 6 * len({channel for _, channel in spend})
    assert all(got[key] == pytest.approx(value, rel=1e-9) for key, value in spend.items())
    assert [tuple(row[:3]) for row in streamed] == [(r["period"], r["channel"], r["formula"]) for r in result.to_dicts()]


def test_a_tree_from_elsewhere_is_still_rewritten_for_sqlite(example_db, tmp_path):
    """Only the engine's own tree runs as the engine's text; any other (here a DuckDB query, run
    while the engine keeps the text of another tree) is rewritten and rendered by the connection."""
    connection = SQLiteAdapter.connect({"path": str(example_db)}, tmp_path)
    try:
        foreign = sqlglot.parse_one("SELECT DATE_TRUNC('month', CAST('2024-03-15' AS DATE)) AS m, 7 % 2.5 AS r",
                                    read="duckdb")
        other = sqlglot.parse_one("SELECT 1 AS one")
        with rendered(other, "sqlite", "SELECT 'the text of another tree' AS one"):
            assert connection.execute(foreign).rows == [(dt.date(2024, 3, 1), 2.0)]
            assert connection.execute(other).rows == [("the text of another tree",)]
        assert connection.execute(other).rows == [(1,)]
    finally:
        connection.close()


@pytest.mark.parametrize("grain", ["quarter", "fiscal_quarter", "week"])
def test_preparing_twice_changes_nothing(projects, grain):
    on_sqlite, _ = projects
    compiled = on_sqlite.compile(list(on_sqlite.project.kpis), by=["channel"], grain=grain, start="2024-06-01",
                                 end="2025-06-01", fill=True)
    assert compiled.dialect == "sqlite"
    assert SQLiteAdapter.prepare(compiled.expression).sql(dialect="sqlite") == compiled.expression.sql(dialect="sqlite")


def test_evaluate_on_the_command_line(example_db, tmp_path):
    project = write_project(tmp_path / "cli", {"adapter": "sqlite", "path": str(example_db)})
    result = run("evaluate", str(project), "cost_per_lead", "nps", "--by", "channel", "--grain", "month",
                 "--from", "2025-01-01", "--to", "2025-03-01", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows and {row["period"] for row in rows} == {"2025-01-01", "2025-02-01"}
    assert run("validate", str(project)).exit_code == 0


def test_a_relative_path_and_a_url(example_db, tmp_path):
    copy = tmp_path / "warehouse" / "data.sqlite"
    copy.parent.mkdir()
    copy.write_bytes(example_db.read_bytes())
    relative = write_project(tmp_path / "relative", {"adapter": "sqlite", "path": "../warehouse/data.sqlite"})
    with open_project(relative) as project:
        assert project.evaluate(["new_contacts"]).to_dicts()[0]["new_contacts"] > 0
    with open_project(relative, warehouse=f"sqlite://{copy}") as project:  # sqlite:///abs/path
        assert project.evaluate(["new_contacts"]).to_dicts()[0]["new_contacts"] > 0
    result = run("evaluate", str(relative), "new_contacts", "--warehouse", f"sqlite://{copy}", "--format", "json")
    assert result.exit_code == 0, result.output


# --- read-only ----------------------------------------------------------------------------------------------


def test_evaluation_never_changes_the_database_file(example_db, tmp_path):
    copy = tmp_path / "untouched.sqlite"
    copy.write_bytes(example_db.read_bytes())
    before, mtime = hashlib.sha256(copy.read_bytes()).hexdigest(), copy.stat().st_mtime_ns
    project = write_project(tmp_path / "ro", {"adapter": "sqlite", "path": str(copy)})
    (project / "sources.yaml").write_text(
        "sources:\n  big_orders:\n    sql: SELECT * FROM orders WHERE amount > 1000\n    time: ordered_at\n"
        "    dimensions: [product]\n", encoding="utf-8")
    with open_project(project) as kpi_project:
        kpi_project.model()  # describes every source, the sql one through a temporary view
        kpi_project.evaluate(list(kpi_project.project.kpis), by=["channel"], grain="month")
        by_quarter = kpi_project.evaluate(formulas=["count(big_orders)"], grain="quarter").to_dicts()
        with sqlite3.connect(copy.as_uri() + "?mode=ro", uri=True) as direct:
            (expected,) = direct.execute("SELECT COUNT(*) FROM orders WHERE amount > 1000").fetchone()
        assert sum(row["formula"] for row in by_quarter) == expected > 0
        connection = kpi_project.connection()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            connection._connection().execute("DELETE FROM leads")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            connection._connection().execute("CREATE TABLE written (x INTEGER)")
        with pytest.raises(WarehouseError):
            connection.execute(sqlglot.parse_one("DELETE FROM leads", read="sqlite"))
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before
    assert copy.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("untouched")) == ["untouched.sqlite"]


# --- errors -----------------------------------------------------------------------------------------------------


def test_a_timezone_project_gets_a_clear_error(example_db, tmp_path):
    project = write_project(tmp_path / "tz", {"adapter": "sqlite", "path": str(example_db)}, timezone="Europe/Paris")
    with open_project(project) as kpi_project:
        with pytest.raises(QueryError) as raised:
            kpi_project.evaluate(["new_contacts"], grain="month")
    message = str(raised.value)
    assert "timezone" in message and "not supported on SQLite" in message and "Europe/Paris" in message
    result = run("evaluate", str(project), "new_contacts", "--grain", "month")
    assert result.exit_code == 1
    assert "not supported on SQLite" in result.stderr and "Traceback" not in result.output


def test_a_missing_file_gives_a_clear_error(tmp_path):
    project = write_project(tmp_path / "missing", {"adapter": "sqlite", "path": "nowhere/warehouse.sqlite"})
    with open_project(project) as kpi_project:
        with pytest.raises(WarehouseError) as raised:
            kpi_project.evaluate(["new_contacts"])
    assert isinstance(raised.value, getattr(errors, "ConnectionFailed", WarehouseError))
    assert str(tmp_path / "missing" / "nowhere" / "warehouse.sqlite") in str(raised.value)
    assert "does not exist" in str(raised.value)
    assert not (tmp_path / "missing" / "nowhere").exists()  # read-only mode never creates it
    result = run("evaluate", str(project), "new_contacts")
    assert result.exit_code != 0 and "does not exist" in result.stderr and "Traceback" not in result.output


def test_a_file_that_is_not_a_database(tmp_path):
    bogus = tmp_path / "notes.sqlite"
    bogus.write_text("not a database, only text " * 100, encoding="utf-8")
    with pytest.raises(WarehouseError, match="not a database"):
        SQLiteAdapter.connect({"path": "notes.sqlite"}, tmp_path)


def test_bad_settings(tmp_path, example_db):
    with pytest.raises(WarehouseError, match="unknown SQLite setting"):
        SQLiteAdapter.connect({"path": str(example_db), "data": "x"}, tmp_path)
    with pytest.raises(WarehouseError, match="no SQLite database file"):
        SQLiteAdapter.connect({"url": "sqlite://:memory:"}, tmp_path)
    with pytest.raises(WarehouseError, match="folder"):
        SQLiteAdapter.connect({"path": "."}, tmp_path)


def test_query_failures_and_timeouts(example_db, tmp_path):
    connection = SQLiteAdapter.connect({"path": str(example_db), "query_timeout": 0.2}, tmp_path)
    try:
        with pytest.raises(WarehouseError, match="no such table: nowhere"):
            connection.execute(sqlglot.parse_one("SELECT * FROM nowhere", read="sqlite"))
        slow = sqlglot.parse_one("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500000000) "
                                 "SELECT MAX(x) FROM c", read="sqlite")
        with pytest.raises(getattr(errors, "QueryTimeout", WarehouseError), match="timeout"):
            connection.execute(slow)
        assert connection.execute(sqlglot.parse_one("SELECT 1 AS one")).rows == [(1,)]  # still usable
    finally:
        connection.close()


# --- the connection ------------------------------------------------------------------------------------------


def test_columns_describe_tables_queries_and_missing_tables(example_db, tmp_path):
    connection = SQLiteAdapter.connect({"path": str(example_db)}, tmp_path)
    try:
        leads = connection.columns(sqlglot.exp.to_table("leads"))
        assert leads["created_at"] == "TIMESTAMP" and leads["is_qualified"] == "BOOLEAN"
        assert leads["lead_id"] == "INTEGER" and leads["channel"] == "TEXT"
        assert connection.columns(sqlglot.exp.to_table("main.ad_spend"))["spend"] == "REAL"
        assert connection.columns(sqlglot.exp.to_table("no_such_table")) is None
        assert connection.columns(sqlglot.exp.to_table("nowhere.leads")) is None
        query = sqlglot.parse_one("SELECT lead_id, created_at, DATE(created_at) AS day, 1 + 1 AS two, "
                                  "'x' AS label FROM leads", read="sqlite")
        described = connection.columns(sqlglot.exp.Subquery(this=query, alias=sqlglot.exp.TableAlias(
            this=sqlglot.exp.to_identifier("q"))))
        assert described == {"lead_id": "INTEGER", "created_at": "TIMESTAMP", "day": "DATE", "two": "INTEGER",
                             "label": "TEXT"}
        missing = sqlglot.parse_one("SELECT * FROM not_there", read="sqlite")
        assert connection.columns(sqlglot.exp.Subquery(this=missing, alias=sqlglot.exp.TableAlias(
            this=sqlglot.exp.to_identifier("q")))) is None
    finally:
        connection.close()


def test_streaming_returns_batches_of_dates(projects):
    on_sqlite, on_duckdb = projects
    _, batches = on_sqlite.stream(["new_contacts", "cost_per_lead"], grain="day", batch_size=100)
    rows = [row for batch in batches for row in batch]
    assert len(rows) > 700 and all(isinstance(row[0], dt.date) for row in rows)
    expected = on_duckdb.evaluate(["new_contacts", "cost_per_lead"], grain="day").rows
    assert [row[0] for row in rows] == [row[0] for row in expected]


def test_threads_share_one_project(example_db, tmp_path):
    project = write_project(tmp_path / "threads", {"adapter": "sqlite", "path": str(example_db)})
    with open_project(project) as kpi_project:
        expected = kpi_project.evaluate(["cost_per_lead", "mrr"], by=["channel"], grain="month").rows
        results, failures = [], []

        def work():
            try:
                for _ in range(3):
                    results.append(kpi_project.evaluate(["cost_per_lead", "mrr"], by=["channel"], grain="month").rows)
            except Exception as error:  # noqa: BLE001 - reported below
                failures.append(error)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures
        assert len(results) == 18 and all(rows == expected for rows in results)
        assert isinstance(kpi_project.connection(), SQLiteConnection)


def test_text_dates_fixture_declares_text(example_db_text_dates):
    with sqlite3.connect(example_db_text_dates) as connection:
        declared = dict(connection.execute("SELECT name, type FROM pragma_table_info('leads')").fetchall())
    assert declared["created_at"] == TEXT_DATES["timestamp"] == "TEXT"


def test_sqlite_is_new_enough():
    from kpi_engine_sqlite import MIN_SQLITE_VERSION

    assert sqlite3.sqlite_version_info >= MIN_SQLITE_VERSION, sqlite3.sqlite_version
