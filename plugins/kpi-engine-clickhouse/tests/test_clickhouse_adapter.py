"""The ClickHouse adapter on chdb: discovered as an installed plugin, connected from settings and
URLs, read-only, pinned session settings, timeouts, descriptions, and one clear error for each
failure."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlglot
from click.testing import CliRunner
from conftest import EXAMPLE_DATA, require_chdb, settings
from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from kpi_engine.errors import ConnectionFailed, QueryFailed, QueryTimeout, WarehouseError
from kpi_engine.plugins import Registry
from kpi_engine.testing import write_project

from kpi_engine_clickhouse import PINNED_SETTINGS, ClickHouseAdapter, ClickHouseConnection, type_name

#: Ten billion rows hashed: runs for minutes unless stopped.
SLOW = "SELECT SUM(cityHash64(number)) AS h FROM numbers(10000000000)"


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def query(sql: str) -> sqlglot.exp.Expression:
    return sqlglot.parse_one(sql, read="clickhouse")


def csv_rows(table: str) -> list[dict]:
    with open(EXAMPLE_DATA / f"{table}.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def connect(chdb_folder, tmp_path):
    """connect(**settings): an adapter connection to the example warehouse, closed afterwards."""
    opened = []

    def make(**more):
        merged = {key: value for key, value in settings(chdb_folder, **more).items() if key != "adapter"}
        connection = ClickHouseAdapter.connect(merged, tmp_path)
        opened.append(connection)
        return connection

    yield make
    for connection in opened:
        connection.close()


# --- discovery ---------------------------------------------------------------------------------------------


def test_kpi_engine_plugins_lists_the_clickhouse_adapter_and_its_package():
    result = run("plugins", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {row["plugin"]: row for row in json.loads(result.output)}
    assert rows["clickhouse"]["adapters"] == ["clickhouse"] and rows["clickhouse"]["dialects"] == ["clickhouse"]
    assert rows["clickhouse"]["module"] == "kpi_engine_clickhouse" and rows["clickhouse"]["status"] == "ok"
    assert rows["clickhouse"]["distribution"].startswith("kpi-engine-clickhouse ")
    registry = Registry()
    assert registry.adapters()["clickhouse"].adapter is ClickHouseAdapter
    assert registry.adapters_for_dialect("clickhouse") == [ClickHouseAdapter]


# --- connecting ------------------------------------------------------------------------------------------------


def test_urls_and_a_relative_path(chdb_folder, tmp_path):
    expected = len(csv_rows("leads"))
    project = write_project(tmp_path / "p", f"clickhouse+chdb://{chdb_folder}?database=marketing")
    with open_project(project) as kpi_project:
        assert kpi_project.evaluate(["new_contacts"]).to_dicts()[0]["new_contacts"] == expected
    result = run("evaluate", str(project), "new_contacts", "--warehouse", f"chdb://{chdb_folder}?database=marketing",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["new_contacts"] == expected
    relative = os.path.relpath(chdb_folder, project)
    with open_project(write_project(tmp_path / "r", {"adapter": "clickhouse", "path": relative,
                                                     "database": "marketing"})) as kpi_project:
        assert kpi_project.evaluate(formulas=["count(orders)"]).to_dicts()[0]["formula"] == len(csv_rows("orders"))


@pytest.mark.parametrize("given, words", [
    ({"path": "x", "dbname": "y"}, "unknown ClickHouse setting(s): dbname"),
    ({"database": "marketing"}, "no chdb database folder is given"),
    ({"path": "no/such/folder"}, "does not exist"),
    ({"path": "kpi_engine.yaml"}, "is not a folder"),
    ({"url": "clickhouse://analyst:pw@db.example.com:8123/marketing"}, "does not connect to a ClickHouse server"),
    ({"url": "postgresql://u@h/db"}, "not a chdb URL"),
    ({"url": "chdb://u:pw@h:9000/x"}, "has no user, password or port"),
    ({"url": "chdb:///tmp?sslmode=require"}, "unknown option 'sslmode'"),
    ({"url": "chdb:///tmp", "path": "x"}, "both 'url' and 'path'"),
    ({"path": ".", "database": "market'ing"}, "is not a plain name"),
    ({"path": ".", "database": "${KPI_TEST_SURELY_UNSET}"}, "KPI_TEST_SURELY_UNSET is not set"),
    ({"path": ".", "query_timeout": "soon"}, "'query_timeout' must be a number of seconds"),
], ids=["unknown", "no_path", "missing", "file", "server", "scheme", "credentials", "option", "both", "database",
        "variable", "timeout"])
def test_bad_settings(tmp_path, given, words):
    (tmp_path / "kpi_engine.yaml").write_text("name: x\n", encoding="utf-8")
    with pytest.raises(WarehouseError) as raised:
        ClickHouseAdapter.connect(given, tmp_path)
    assert words in str(raised.value)
    assert "pw" not in str(raised.value)


def test_a_database_that_does_not_exist(connect):
    with pytest.raises(ConnectionFailed, match="the ClickHouse database 'nowhere' does not exist in the chdb"):
        connect(database="nowhere")


def test_one_chdb_folder_per_process_is_a_clear_error(connect, tmp_path):
    connect()
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ConnectionFailed) as raised:
        ClickHouseAdapter.connect({"path": str(other)}, tmp_path)
    assert "already has the folder" in str(raised.value) and "one chdb folder at a time" in str(raised.value)


def test_the_settings_are_read_from_environment_variables(chdb_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KPI_TEST_CHDB_FOLDER", str(chdb_folder))
    project = write_project(tmp_path / "env", {"adapter": "clickhouse", "path": "${KPI_TEST_CHDB_FOLDER}",
                                               "database": "marketing"})
    with open_project(project) as kpi_project:
        assert kpi_project.evaluate(formulas=["count(orders)"]).to_dicts()[0]["formula"] == len(csv_rows("orders"))


# --- read-only and pinned sessions ----------------------------------------------------------------------------


def test_sessions_are_read_only(connect):
    before = len(csv_rows("leads"))
    connection = connect()
    for statement in ("DELETE FROM leads WHERE 1", "CREATE TABLE written (x Int8) ENGINE = Memory",
                      "INSERT INTO leads (lead_id) VALUES (-1)", "SET readonly = 0", "DROP TABLE leads"):
        with pytest.raises(Exception, match="readonly mode"):
            connection._cursor.execute(statement)
    with pytest.raises(QueryFailed, match="only read"):
        connection.execute(query("DROP TABLE leads"))
    assert connection.execute(query("SELECT COUNT(*) AS n FROM leads")).rows == [(before,)]


def test_the_pinned_settings_hold(connect):
    connection = connect(query_timeout=42)
    names = [*PINNED_SETTINGS, "max_execution_time", "readonly"]
    connection._cursor.execute("SELECT " + ", ".join(f"toString(getSetting('{name}'))" for name in names))
    values = dict(zip(names, connection._cursor.fetchone()))
    assert values == {"join_use_nulls": "true", "session_timezone": "UTC", "max_execution_time": "42",
                      "readonly": "1"}


HOSTILE = ["a\\", "a\\'b", "it's", 'say "hi"', "\\n", "50%_off", "x' OR '1'='1", "é\u00e9 \u4e2d\u6587",
           "tab\there", "${HOME}", "-- not a comment", "back\\\\slash"]


def test_hostile_strings_are_their_text(chdb_folder, tmp_path):
    """Literals from formulas reach ClickHouse as sqlglot string literals: backslashes and quotes
    are characters, never SQL."""
    chdb = require_chdb()
    writer = chdb.connect(str(chdb_folder))
    cursor = writer.cursor()
    cursor.execute("CREATE DATABASE IF NOT EXISTS scratch")
    cursor.execute("DROP TABLE IF EXISTS scratch.labels")
    cursor.execute("CREATE TABLE scratch.labels (id Int64, label String, created_at DateTime) "
                   "ENGINE = MergeTree ORDER BY id")
    for index, text in enumerate(HOSTILE):
        for suffix, number in (("", index), ("!", 100 + index)):  # and near misses
            row = sqlglot.exp.Tuple(expressions=[sqlglot.exp.Literal.number(number),
                                                 sqlglot.exp.Literal.string(text + suffix),
                                                 sqlglot.exp.Literal.string(f"2025-01-{1 + index:02d} 12:00:00")])
            cursor.execute(f"INSERT INTO scratch.labels VALUES {row.sql(dialect='clickhouse')}")
    cursor.execute("SELECT label FROM scratch.labels WHERE id < 100 ORDER BY id")
    assert [label for (label,) in cursor.fetchall()] == HOSTILE  # stored as their text
    writer.close()
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "kpi_engine.yaml").write_text(json.dumps({"name": "hostile",
                                                        "warehouse": settings(chdb_folder, "scratch")}))
    (folder / "sources.yaml").write_text(json.dumps({"sources": {"labels": {
        "table": "labels", "time": "created_at", "dimensions": ["label"]}}}))
    with open_project(folder) as kpi_project:
        for text in HOSTILE:
            literal = "'" + text.replace("'", "''") + "'"  # the formula language doubles quotes
            result = kpi_project.evaluate(formulas=[f"count(labels where label = {literal})"]).to_dicts()
            assert result[0]["formula"] == 1, text
        by_day = kpi_project.evaluate(formulas=["count(labels)"], grain="day").to_dicts()
    # Each day holds one label and its near miss; no row is lost or duplicated.
    assert [(row["period"], row["formula"]) for row in by_day] == [(dt.date(2025, 1, 1 + i), 2)
                                                                  for i in range(len(HOSTILE))]


# --- timeouts ----------------------------------------------------------------------------------------------------


def test_the_query_timeout_stops_a_query(connect):
    connection = connect(query_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(QueryTimeout) as raised:
        connection.execute(query(SLOW))
    assert time.monotonic() - started < 20
    assert "query_timeout of 0.5 s" in str(raised.value)
    assert connection.execute(query("SELECT 1 AS one")).rows == [(1,)]  # still usable


def test_the_timeout_on_the_command_line(chdb_folder, tmp_path):
    project = write_project(tmp_path / "t", settings(chdb_folder))
    slow_rows = ("SELECT a.session_id, a.started_at FROM web_sessions AS a CROSS JOIN web_sessions AS b "
                 "CROSS JOIN leads AS c WHERE a.duration_seconds + b.duration_seconds + c.lead_id < 0")
    (project / "sources.yaml").write_text(
        json.dumps({"sources": {"slow": {"sql": slow_rows, "time": "started_at"}}}), encoding="utf-8")
    started = time.monotonic()
    result = run("evaluate", str(project), "--formula", "count(slow)", "--timeout", "1")
    assert result.exit_code == 5, result.output
    assert "query_timeout of 1 s" in result.stderr and "Traceback" not in result.output
    assert time.monotonic() - started < 30


# --- describing ------------------------------------------------------------------------------------------------


def test_columns_of_tables_queries_and_missing_tables(connect):
    connection = connect()
    assert connection.columns(sqlglot.exp.to_table("leads")) == {
        "lead_id": "BIGINT", "created_at": "TIMESTAMP", "channel": "VARCHAR", "campaign": "VARCHAR",
        "industry": "VARCHAR", "company_size": "VARCHAR", "is_qualified": "BOOLEAN", "mql_at": "TIMESTAMP",
        "sql_at": "TIMESTAMP", "opportunity_at": "TIMESTAMP", "customer_at": "TIMESTAMP", "customer_id": "BIGINT"}
    assert connection.columns(sqlglot.exp.to_table("fixture.ad_spend")) == {
        "spend_date": "DATE", "channel": "VARCHAR", "campaign": "VARCHAR", "spend": "DECIMAL"}
    assert connection.columns(sqlglot.exp.to_table("no_such_table")) is None
    assert connection.columns(sqlglot.exp.to_table("no_such_database.leads")) is None
    assert connection.columns(sqlglot.exp.to_table("a.b.leads")) is None
    inner = query("SELECT lead_id, toDate(created_at) AS day, 1.5 AS half, 'x' AS label, toUInt8(1) AS small "
                  "FROM leads")
    described = connection.columns(sqlglot.exp.Subquery(this=inner, alias=sqlglot.exp.TableAlias(
        this=sqlglot.exp.to_identifier("q"))))
    assert described == {"lead_id": "BIGINT", "day": "DATE", "half": "DOUBLE", "label": "VARCHAR",
                         "small": "UTINYINT"}


@pytest.mark.parametrize("clickhouse_type, name, kind", [
    ("Nullable(Int64)", "BIGINT", "number"), ("LowCardinality(Nullable(String))", "VARCHAR", "string"),
    ("DateTime('Europe/Paris')", "TIMESTAMP", "timestamp"), ("DateTime64(3, 'UTC')", "TIMESTAMP", "timestamp"),
    ("Date32", "DATE", "date"), ("Decimal(38, 4)", "DECIMAL", "number"), ("Bool", "BOOLEAN", "boolean"),
    ("UInt64", "UBIGINT", "number"), ("Float32", "FLOAT", "number"), ("Enum8('a' = 1)", "ENUM", "string"),
    ("Array(Int64)", "Array(Int64)", "unknown"), ("Map(String, Int64)", "Map(String, Int64)", "unknown"),
])
def test_type_names_map_to_the_core_categories(clickhouse_type, name, kind):
    from kpi_engine.resolve import column_type

    assert type_name(clickhouse_type) == name
    assert column_type(type_name(clickhouse_type)) == kind


def test_a_sql_source_in_clickhouse_syntax(chdb_folder, tmp_path):
    project = write_project(tmp_path / "sql", settings(chdb_folder))
    (project / "sources.yaml").write_text(
        "sources:\n  big_orders:\n    sql: SELECT * FROM orders WHERE amount > 1000 AND `status` != 'x'\n"
        "    time: ordered_at\n    dimensions: [product]\n", encoding="utf-8")
    years: dict[int, int] = {}
    for row in csv_rows("orders"):
        if float(row["amount"]) > 1000:
            year = int(row["ordered_at"][:4])
            years[year] = years.get(year, 0) + 1
    with open_project(project) as kpi_project:
        assert kpi_project.model().catalog["big_orders"]["ordered_at"] == "timestamp"
        rows = kpi_project.evaluate(formulas=["count(big_orders)"], grain="year").to_dicts()
    assert [(row["period"], row["formula"]) for row in rows] == [(dt.date(y, 1, 1), n) for y, n in sorted(years.items())]


def test_query_failures_name_the_problem_in_one_line(connect):
    connection = connect()
    with pytest.raises(QueryFailed) as raised:
        connection.execute(query("SELECT * FROM nowhere"))
    assert "table that does not exist" in str(raised.value) and "nowhere" in str(raised.value)
    with pytest.raises(QueryFailed) as raised:
        connection.execute(query("SELECT no_column FROM leads"))
    assert "column that does not exist" in str(raised.value) and "no_column" in str(raised.value)
    assert "In scope" not in str(raised.value) and "\n" not in str(raised.value)  # not the whole query
    with pytest.raises(QueryFailed, match="cannot run the query's SQL"):
        connection.execute(query("SELECT no_such_function(1) AS x"))
    assert connection.execute(query("SELECT 2 AS two")).rows == [(2,)]


# --- what runs -------------------------------------------------------------------------------------------------


def test_threads_share_one_project(chdb_folder, tmp_path):
    """Threads take turns on the one chdb session; all give the single-threaded answer."""
    project = write_project(tmp_path / "threads", settings(chdb_folder))
    request = dict(by=["channel"], grain="month")
    with open_project(project) as kpi_project:
        expected = kpi_project.evaluate(["cost_per_lead", "mrr"], **request).rows
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda _: kpi_project.evaluate(["cost_per_lead", "mrr"], **request).rows,
                                    range(6)))
        assert isinstance(kpi_project.connection(), ClickHouseConnection)
    assert answers == [expected] * 6


def test_a_closed_connection_says_so(connect):
    connection = connect()
    connection.close()
    with pytest.raises(WarehouseError, match="connection is closed"):
        connection.execute(query("SELECT 1 AS one"))


@pytest.mark.parametrize("required, exit_code, words", [("1", 1, "ClickHouse is required"), ("", 0, "1 skipped")])
def test_without_chdb_the_tests_skip_unless_required(tmp_path, required, exit_code, words):
    """The chdb fixture when chdb cannot be imported: a skip, or a failure under
    KPI_ENGINE_REQUIRE_CLICKHOUSE=1 (as CI runs)."""
    (tmp_path / "conftest.py").write_text("import sys\nsys.modules['chdb'] = None  # import chdb fails\n"
                                          "from conftest_under_test import chdb_folder\n", encoding="utf-8")
    (tmp_path / "conftest_under_test.py").write_text(
        (Path(__file__).parent / "conftest.py").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "test_needs_chdb.py").write_text("def test_it(chdb_folder):\n    assert False\n", encoding="utf-8")
    env = {**os.environ, "KPI_ENGINE_REQUIRE_CLICKHOUSE": required}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert words in result.stdout and "pip install chdb" in result.stdout


def test_a_folder_another_process_has_open_is_a_clear_error(tmp_path):
    require_chdb()
    folder = tmp_path / "held"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import chdb, sys, time\n"
                               f"connection = chdb.connect({str(folder)!r})\n"
                               "connection.cursor().execute('SELECT 1')\nprint('open', flush=True)\ntime.sleep(60)\n"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        result = subprocess.run([sys.executable, "-c", "from kpi_engine_clickhouse import ClickHouseAdapter\n"
                                 f"ClickHouseAdapter.connect({{'path': {str(folder)!r}}}, '.')\n"],
                                capture_output=True, text=True, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert "another process has it open" in result.stderr and "ConnectionFailed" in result.stderr
