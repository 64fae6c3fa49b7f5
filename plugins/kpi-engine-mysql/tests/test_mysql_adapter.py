"""The MySQL adapter on a real MariaDB server: discovered as an installed plugin, connected from
settings, URLs and ${VAR} secrets, read-only, pinned session settings, server-side timeouts,
time zones, descriptions, and one clear password-free error for each failure."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pymysql
import pytest
import sqlglot
from click.testing import CliRunner
from conftest import assert_same_results
from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from kpi_engine.errors import ConnectionFailed, QueryFailed, QueryTimeout, WarehouseError
from kpi_engine.plugins import Registry
from kpi_engine.testing import write_project

from kpi_engine_mysql import PINNED_SETTINGS, MySQLAdapter, MySQLConnection, connection as connection_module

#: Billions of row combinations: runs for minutes unless stopped.
SLOW_ROWS = ("SELECT a.session_id, a.started_at FROM web_sessions AS a CROSS JOIN web_sessions AS b "
             "CROSS JOIN leads AS c WHERE a.duration_seconds + b.duration_seconds + c.lead_id < 0")
SLOW = f"SELECT COUNT(*) AS m FROM ({SLOW_ROWS}) AS slow"


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def query(sql: str) -> sqlglot.exp.Expression:
    return sqlglot.parse_one(sql, read="mysql")


@pytest.fixture
def connect(mariadb_server, marketing_db, tmp_path):
    """connect(**settings): an adapter connection to the example warehouse, closed afterwards."""
    opened = []

    def make(**settings):
        merged = {key: value for key, value in {**mariadb_server.settings(marketing_db), **settings}.items()
                  if key != "adapter" and value is not None}
        connection = MySQLAdapter.connect(merged, tmp_path)
        opened.append(connection)
        return connection

    yield make
    for connection in opened:
        connection.close()


def table_count(mariadb_server, database: str, table: str) -> int:
    writer = mariadb_server.connect(database)
    try:
        with writer.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM `{table}`")
            return cursor.fetchone()[0]
    finally:
        writer.close()


# --- discovery ---------------------------------------------------------------------------------------------


def test_kpi_engine_plugins_lists_the_mysql_adapter_and_its_package():
    result = run("plugins", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {row["plugin"]: row for row in json.loads(result.output)}
    assert rows["mysql"]["adapters"] == ["mysql"] and rows["mysql"]["dialects"] == ["mysql"]
    assert rows["mysql"]["module"] == "kpi_engine_mysql" and rows["mysql"]["status"] == "ok"
    assert rows["mysql"]["distribution"].startswith("kpi-engine-mysql ")
    registry = Registry()
    assert registry.adapters()["mysql"].adapter is MySQLAdapter
    assert registry.adapters_for_dialect("mysql") == [MySQLAdapter]


# --- connecting ------------------------------------------------------------------------------------------------


def test_a_url_with_an_encoded_password_and_the_mariadb_scheme(mariadb_server, marketing_db, tmp_path):
    expected = table_count(mariadb_server, marketing_db, "leads")
    project = write_project(tmp_path / "url", mariadb_server.url(marketing_db))
    with open_project(project) as kpi_project:
        assert kpi_project.evaluate(["new_contacts"]).to_dicts()[0]["new_contacts"] == expected
    for scheme in ("mariadb://", "mysql+pymysql://"):
        other = mariadb_server.url(marketing_db).replace("mysql://", scheme, 1)
        result = run("evaluate", str(project), "new_contacts", "--warehouse", other, "--format", "json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)[0]["new_contacts"] == expected


def test_a_unix_socket_and_a_missing_certificate_file(mariadb_server, marketing_db, connect, tmp_path):
    connection = connect(host=None, port=None, unix_socket=str(mariadb_server.socket_path))
    assert connection.execute(query("SELECT COUNT(*) AS n FROM orders")).rows == [
        (table_count(mariadb_server, marketing_db, "orders"),)]
    with pytest.raises(WarehouseError) as raised:
        connect(ssl_ca="certs/no-such-ca.pem")
    assert f"the CA certificate file '{tmp_path / 'certs' / 'no-such-ca.pem'}' (ssl_ca) does not exist" in str(
        raised.value)


def test_passwords_from_environment_variables_and_files(mariadb_server, marketing_db, tmp_path, monkeypatch):
    monkeypatch.setenv("KPI_TEST_MYSQL_PASSWORD", mariadb_server.password)
    monkeypatch.setenv("KPI_TEST_MYSQL_USER", mariadb_server.user)
    expected = table_count(mariadb_server, marketing_db, "orders")
    mapping = mariadb_server.settings(marketing_db, password="${KPI_TEST_MYSQL_PASSWORD}",
                                      user="${KPI_TEST_MYSQL_USER}")
    (tmp_path / "secret").write_text(mariadb_server.password + "\n", encoding="utf-8")
    from_file = {**mariadb_server.settings(marketing_db), "password": None, "password_file": "../secret"}
    from_file = {key: value for key, value in from_file.items() if value is not None}
    # A variable in a URL is filled in after the URL is split: the password's '/', '@' and ':' need no escaping.
    url = (f"mysql://${{KPI_TEST_MYSQL_USER}}:${{KPI_TEST_MYSQL_PASSWORD}}@{mariadb_server.host}:"
           f"{mariadb_server.port}/{marketing_db}")
    for name, warehouse in (("mapping", mapping), ("file", from_file), ("url", url)):
        project = write_project(tmp_path / name, warehouse)
        with open_project(project) as kpi_project:
            assert kpi_project.evaluate(formulas=["count(orders)"]).to_dicts()[0]["formula"] == expected, name
        assert mariadb_server.password not in (project / "kpi_engine.yaml").read_text()


def test_a_wrong_password_is_one_clear_error_without_the_password(mariadb_server, marketing_db, tmp_path):
    wrong = "Wr0ng/pass@word:" + "x" * 6
    project = write_project(tmp_path / "wrong", mariadb_server.settings(marketing_db, password=wrong))
    with open_project(project) as kpi_project:
        with pytest.raises(ConnectionFailed) as raised:
            kpi_project.evaluate(["new_contacts"])
    message = str(raised.value)
    assert "authentication failed" in message and f"'{mariadb_server.user}'" in message
    assert wrong not in message and mariadb_server.password not in message
    url = f"mysql://{mariadb_server.user}:{quote(wrong, safe='')}@{mariadb_server.host}:{mariadb_server.port}/x"
    result = run("evaluate", str(project), "new_contacts", "--warehouse", url)
    assert result.exit_code == 3, result.output
    assert "authentication failed" in result.stderr and "Traceback" not in result.output
    assert wrong not in result.output and quote(wrong, safe="") not in result.output


@pytest.mark.parametrize("settings, words", [
    (dict(database="no_such_database"), ["may not use the database 'no_such_database'", "does not exist"]),
    (dict(port=1), ["cannot connect to MySQL at 127.0.0.1:1", "running and reachable"]),
    (dict(host="no-such-host.invalid"), ["cannot connect to MySQL at no-such-host.invalid"]),
], ids=["database", "port", "host"])
def test_connection_failures(mariadb_server, marketing_db, tmp_path, settings, words):
    with pytest.raises(ConnectionFailed) as raised:
        MySQLAdapter.connect({key: value for key, value in {**mariadb_server.settings(marketing_db), **settings}.items()
                              if key != "adapter"}, tmp_path)
    for word in words:
        assert word in str(raised.value)
    assert mariadb_server.password not in str(raised.value)


@pytest.mark.parametrize("settings, words", [
    ({"url": "mysql://u@h/db", "dbname": "x"}, "unknown MySQL setting(s): dbname"),
    ({"host": "h", "database": "d"}, "no MySQL user"),
    ({"host": "h", "user": "u"}, "no MySQL database"),
    ({"url": "postgresql://u:p@h/db"}, "not a MySQL or MariaDB URL"),
    ({"url": "mysql://u:secret-pw@h:99999/db"}, "not valid: Port out of range"),
    ({"host": "h", "user": "u", "database": "d", "port": "0"}, "must be a whole number from 1 to 65535"),
    ({"url": "mysql://u:secret-pw@h:port/db"}, "not valid"),
    ({"url": "mysql://u@h/db?sslmode=require"}, "unknown option 'sslmode'"),
    ({"url": "mysql://u@h/db/more"}, "holds a '/'"),
    ({"url": "mysql://u@h/db", "password": "${KPI_TEST_SURELY_UNSET}"}, "KPI_TEST_SURELY_UNSET is not set"),
    ({"url": "mysql://u@h/db", "query_timeout": "soon"}, "'query_timeout' must be a number of seconds"),
    ({"url": "mysql://u:pw@h/db", "password_file": "pw.txt"}, "both a password and 'password_file'"),
    ({"url": "mysql://u@h/db", "password_file": "missing.txt"}, "cannot read the password file"),
], ids=["unknown", "user", "database", "scheme", "port", "port_zero", "port_text", "option", "path", "variable", "timeout",
        "two_passwords", "password_file"])
def test_bad_settings(tmp_path, settings, words):
    with pytest.raises(WarehouseError) as raised:
        MySQLAdapter.connect(settings, tmp_path)
    assert words in str(raised.value)
    assert "secret-pw" not in str(raised.value)


@pytest.mark.parametrize("version, problem", [
    ("10.11.18-MariaDB-0+deb12u1", None), ("11.4.2-MariaDB", None), ("10.5.0-MariaDB", None),
    ("8.0.36", None), ("8.4.0-commercial", None), ("9.1.0", None),
    ("10.4.34-MariaDB-log", "MariaDB 10.4.34-MariaDB-log; kpi-engine needs MariaDB 10.5.0 or later"),
    ("5.5.5-10.3.39-MariaDB", "MariaDB 5.5.5-10.3.39-MariaDB; kpi-engine needs MariaDB 10.5.0"),
    ("5.7.44-log", "MySQL 5.7.44-log; kpi-engine needs MySQL 8.0.17 or later"),
    ("8.0.16", "MySQL 8.0.16; kpi-engine needs MySQL 8.0.17"),
])
def test_servers_too_old_for_the_sql_are_named(version, problem):
    found = connection_module.version_problem(version)
    assert (found is None) if problem is None else (found is not None and found.startswith(problem))


# --- read-only and pinned sessions ----------------------------------------------------------------------------


def test_sessions_are_read_only(mariadb_server, marketing_db, connect):
    before = table_count(mariadb_server, marketing_db, "leads")
    connection = connect()
    session = connection._session()
    for statement in ("DELETE FROM leads", "CREATE TABLE written (x INT)", "CREATE TEMPORARY TABLE t (x INT)",
                      "INSERT INTO leads (lead_id) VALUES (-1)"):
        with pytest.raises(pymysql.err.MySQLError, match="READ ONLY"):
            with session.cursor() as cursor:
                cursor.execute(statement)
    with pytest.raises(QueryFailed, match="only read"):
        connection.execute(query("DELETE FROM leads"))
    assert table_count(mariadb_server, marketing_db, "leads") == before
    with session.cursor() as cursor:
        cursor.execute("SELECT @@SESSION.tx_read_only")
        assert cursor.fetchone()[0] == 1


@pytest.fixture
def hostile_globals(mariadb_server):
    """Server defaults that change what SQL text means, for every new session."""
    admin = mariadb_server.admin_connect()
    with admin.cursor() as cursor:
        cursor.execute("SELECT @@GLOBAL.sql_mode, @@GLOBAL.time_zone, @@GLOBAL.sql_select_limit")
        saved = cursor.fetchone()
        cursor.execute("SET GLOBAL sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES,PIPES_AS_CONCAT,HIGH_NOT_PRECEDENCE', "
                       "GLOBAL time_zone = '+05:00', GLOBAL sql_select_limit = 3")
    try:
        yield
    finally:
        with admin.cursor() as cursor:
            cursor.execute("SET GLOBAL sql_mode = %s, GLOBAL time_zone = %s, GLOBAL sql_select_limit = %s", saved)
        admin.close()


HOSTILE = ["a\\", "a\\'b", "it's", 'say "hi"', "\\n", "50%_off", "x' OR '1'='1", "é\u00e9 \u4e2d\u6587",
           "tab\there", "${HOME}", "-- not a comment", "back\\\\slash"]


def test_pinned_settings_hold_whatever_the_server_defaults_say(mariadb_server, tmp_path, hostile_globals):
    """With ANSI_QUOTES, NO_BACKSLASH_ESCAPES, a +05:00 time zone and a 3-row limit as the server's
    defaults, the session still has the settings sqlglot's SQL means, and literals are their text."""
    writer = mariadb_server.connect("kpi_scratch")
    with writer.cursor() as cursor:
        cursor.execute("SET SESSION sql_mode = '', SESSION sql_select_limit = DEFAULT")
        cursor.execute("DROP TABLE IF EXISTS labels")
        cursor.execute("CREATE TABLE labels (id INT, label VARCHAR(100), created_at DATETIME, channel VARCHAR(20))")
        rows = [(i, text, f"2025-01-{1 + i:02d} 12:00:00", "c") for i, text in enumerate(HOSTILE)]
        rows += [(100 + i, text + "!", "2025-01-01 12:00:00", "c") for i, text in enumerate(HOSTILE)]  # near misses
        cursor.executemany("INSERT INTO labels VALUES (%s, %s, %s, %s)", rows)
    writer.close()
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "kpi_engine.yaml").write_text(json.dumps({"name": "hostile",
                                                        "warehouse": mariadb_server.settings("kpi_scratch")}))
    (folder / "sources.yaml").write_text(json.dumps({"sources": {"labels": {
        "table": "labels", "time": "created_at", "dimensions": ["label", "channel"]}}}))
    with open_project(folder) as kpi_project:
        connection = kpi_project.connection()
        with connection._session().cursor() as cursor:
            cursor.execute("SELECT " + ", ".join(f"@@SESSION.{name}" for name in PINNED_SETTINGS))
            assert [str(v) for v in cursor.fetchone()] == list(PINNED_SETTINGS.values())
        for index, text in enumerate(HOSTILE):
            literal = "'" + text.replace("'", "''") + "'"  # the formula language doubles quotes
            result = kpi_project.evaluate(formulas=[f"count(labels where label = {literal})"]).to_dicts()
            assert result[0]["formula"] == 1, text
        by_day = kpi_project.evaluate(formulas=["count(labels)"], grain="day").to_dicts()
        assert len(by_day) == len(HOSTILE)  # no 3-row limit
        assert by_day[0]["period"] == dt.date(2025, 1, 1) and by_day[0]["formula"] == 1 + len(HOSTILE)


def test_a_session_whose_settings_do_not_hold_is_refused(connect, monkeypatch):
    monkeypatch.setitem(connection_module._SET_BY_STATEMENT, "time_zone", "+01:00")  # not what is checked
    with pytest.raises(ConnectionFailed) as raised:
        connect()
    assert "time_zone = '+01:00'" in str(raised.value) and "no query is run" in str(raised.value)


# --- timeouts and interruptions ------------------------------------------------------------------------------


def test_the_server_stops_a_query_at_the_timeout(connect):
    connection = connect(query_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(QueryTimeout) as raised:
        connection.execute(query(SLOW))
    assert time.monotonic() - started < 20
    assert "query_timeout of 0.5 s" in str(raised.value)
    assert connection.execute(query("SELECT 1 AS one")).rows == [(1,)]  # still usable


def test_the_timeout_on_the_command_line(mariadb_server, marketing_db, tmp_path):
    project = write_project(tmp_path / "t", mariadb_server.settings(marketing_db))
    (project / "sources.yaml").write_text(
        json.dumps({"sources": {"slow": {"sql": SLOW_ROWS, "time": "started_at"}}}), encoding="utf-8")
    result = run("evaluate", str(project), "--formula", "count(slow)", "--timeout", "1")
    assert result.exit_code == 5, result.output
    assert "query_timeout of 1 s" in result.stderr and "Traceback" not in result.output


def test_a_query_killed_by_an_administrator_is_reported_not_retried(mariadb_server, connect):
    connection = connect()
    thread_id = connection._session().thread_id()
    failures = []

    def work():
        try:
            connection.execute(query(SLOW))
        except WarehouseError as error:
            failures.append(error)

    worker = threading.Thread(target=work)
    admin = mariadb_server.admin_connect()
    try:
        worker.start()
        time.sleep(0.5)
        worker_session = None
        with admin.cursor() as cursor:
            cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND INFO LIKE '%%CROSS JOIN%%'",
                           [mariadb_server.user])
            worker_session = cursor.fetchone()
            assert worker_session is not None
            cursor.execute("KILL QUERY %s", [worker_session[0]])
        worker.join(timeout=30)
    finally:
        admin.close()
    assert worker_session[0] != thread_id  # the worker thread had its own session
    assert len(failures) == 1 and isinstance(failures[0], QueryFailed)
    assert "interrupted" in str(failures[0]) and "not run again" in str(failures[0])


def running_slow_queries(mariadb_server) -> list:
    admin = mariadb_server.admin_connect()
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND COMMAND = 'Query' "
                           "AND INFO LIKE '%%CROSS JOIN%%'", [mariadb_server.user])
            return [row[0] for row in cursor.fetchall()]
    finally:
        admin.close()


def test_ctrl_c_stops_the_query_on_the_server(mariadb_server, connect):
    """Ctrl-C while the server works: the query is stopped there (KILL QUERY from a second
    session), the interrupted session is dropped, and the connection keeps working."""
    connection = connect()
    first = connection._session().thread_id()
    timer = threading.Timer(0.7, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            connection.execute(query(SLOW))
    finally:
        timer.cancel()
    deadline = time.monotonic() + 10
    while running_slow_queries(mariadb_server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running_slow_queries(mariadb_server) == []
    assert connection.execute(query("SELECT 3 AS three")).rows == [(3,)]
    assert connection._session().thread_id() != first


def test_a_session_dropped_while_idle_is_replaced_before_the_query(mariadb_server, connect):
    connection = connect()
    first = connection._session().thread_id()
    admin = mariadb_server.admin_connect()
    with admin.cursor() as cursor:
        cursor.execute("KILL CONNECTION %s", [first])
    admin.close()
    assert connection.execute(query("SELECT COUNT(*) AS n FROM leads")).rows[0][0] > 0
    assert connection._session().thread_id() != first


# --- time zones ------------------------------------------------------------------------------------------------


def test_a_time_zone_the_server_does_not_know_is_a_clear_error(mariadb_server, marketing_db, tmp_path):
    project = write_project(tmp_path / "tz", mariadb_server.settings(marketing_db), timezone="America/Lima")
    with open_project(project) as kpi_project:
        with pytest.raises(QueryFailed) as raised:
            kpi_project.evaluate(["new_contacts"], grain="month")
    assert "does not know the time zone 'America/Lima'" in str(raised.value)
    assert "mariadb-tzinfo-to-sql" in str(raised.value)
    utc = write_project(tmp_path / "utc", mariadb_server.settings(marketing_db), timezone="UTC")
    with open_project(utc) as kpi_project:  # UTC needs no time zone tables
        assert kpi_project.evaluate(["new_contacts"], grain="year").to_dicts()[0]["new_contacts"] > 0


def test_local_time_periods_match_duckdb_once_the_zone_is_loaded(mariadb_server, marketing_db, duckdb_warehouse,
                                                                  tmp_path):
    zone_file = Path("/usr/share/zoneinfo/Europe/Paris")
    loader = shutil.which("mariadb-tzinfo-to-sql") or shutil.which("mysql_tzinfo_to_sql")
    if not zone_file.is_file() or loader is None:
        pytest.skip("no zoneinfo file for Europe/Paris or no mariadb-tzinfo-to-sql here")
    sql = subprocess.run([loader, str(zone_file), "Europe/Paris"], capture_output=True, text=True, check=True).stdout
    admin = mariadb_server.admin_connect(database="mysql", client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM time_zone_name WHERE Name = 'Europe/Paris'")
            if cursor.fetchone()[0] == 0:
                cursor.execute(sql)
                while cursor.nextset():
                    pass
    finally:
        admin.close()
    on_mysql = write_project(tmp_path / "m", mariadb_server.settings(marketing_db), timezone="Europe/Paris")
    on_duckdb = write_project(tmp_path / "d", duckdb_warehouse, timezone="Europe/Paris")
    with open_project(on_mysql) as mysql_project, open_project(on_duckdb) as duckdb_project:
        names = ["new_contacts", "web_sessions", "revenue", "cost_per_lead", "email_open_rate"]
        names = [name for name in names if name in mysql_project.project.kpis]
        options = dict(grain="day", start="2025-03-25", end="2025-04-05")
        local = mysql_project.evaluate(names, **options).to_dicts()
        assert_same_results(local, duckdb_project.evaluate(names, **options).to_dicts(), names)
    with open_project(write_project(tmp_path / "u", mariadb_server.settings(marketing_db))) as utc_project:
        assert utc_project.evaluate(names, **options).to_dicts() != local  # the zone moved rows between days


# --- describing ------------------------------------------------------------------------------------------------


def test_columns_of_tables_queries_and_missing_tables(connect):
    connection = connect()
    leads = connection.columns(sqlglot.exp.to_table("leads"))
    assert leads == {"lead_id": "BIGINT", "created_at": "DATETIME", "channel": "VARCHAR", "campaign": "VARCHAR",
                     "industry": "VARCHAR", "company_size": "VARCHAR", "is_qualified": "BOOLEAN", "mql_at": "DATETIME",
                     "sql_at": "DATETIME", "opportunity_at": "DATETIME", "customer_at": "DATETIME",
                     "customer_id": "BIGINT"}
    assert connection.columns(sqlglot.exp.to_table("kpi_marketing.ad_spend")) == {
        "spend_date": "DATE", "channel": "VARCHAR", "campaign": "VARCHAR", "spend": "DECIMAL"}
    assert connection.columns(sqlglot.exp.to_table("no_such_table")) is None
    with pytest.raises(WarehouseError, match="cannot describe table no_such_database.leads in MySQL: SELECT command "
                                             "denied"):  # MySQL tells a user only of the databases it may read
        connection.columns(sqlglot.exp.to_table("no_such_database.leads"))
    assert connection.columns(sqlglot.exp.to_table("a.b.leads")) is None
    inner = query("SELECT lead_id, DATE(created_at) AS day, created_at, 1.5 AS half, 'x' AS label FROM leads")
    described = connection.columns(sqlglot.exp.Subquery(this=inner, alias=sqlglot.exp.TableAlias(
        this=sqlglot.exp.to_identifier("q"))))
    assert described == {"lead_id": "BIGINT", "day": "DATE", "created_at": "DATETIME", "half": "DECIMAL",
                         "label": "VARCHAR"}


def test_a_sql_source_in_mysql_syntax(mariadb_server, marketing_db, tmp_path):
    project = write_project(tmp_path / "sql", mariadb_server.settings(marketing_db))
    (project / "sources.yaml").write_text(
        "sources:\n  big_orders:\n    sql: SELECT * FROM orders WHERE amount > 1000 AND `status` <> 'x'\n"
        "    time: ordered_at\n    dimensions: [product]\n", encoding="utf-8")
    writer = mariadb_server.connect(marketing_db)
    with writer.cursor() as cursor:
        cursor.execute("SELECT YEAR(ordered_at), COUNT(*) FROM orders WHERE amount > 1000 GROUP BY 1 ORDER BY 1")
        expected = [(dt.date(year, 1, 1), float(count)) for year, count in cursor.fetchall()]
    writer.close()
    with open_project(project) as kpi_project:
        assert kpi_project.model().catalog["big_orders"]["ordered_at"] == "timestamp"
        rows = kpi_project.evaluate(formulas=["count(big_orders)"], grain="year").to_dicts()
    assert [(row["period"], row["formula"]) for row in rows] == expected


def test_query_failures_name_the_problem(connect):
    connection = connect()
    with pytest.raises(QueryFailed, match="table that does not exist.*nowhere"):
        connection.execute(query("SELECT * FROM nowhere"))
    with pytest.raises(QueryFailed, match="column that does not exist.*no_column"):
        connection.execute(query("SELECT no_column FROM leads"))
    assert connection.execute(query("SELECT 2 AS two")).rows == [(2,)]


# --- what runs -------------------------------------------------------------------------------------------------


def test_compiled_sql_runs_as_is_and_matches_duckdb(mariadb_server, marketing_db, duckdb_warehouse, tmp_path):
    project = write_project(tmp_path / "duck", duckdb_warehouse)  # any project: prepare follows the dialect
    options = ["--by", "channel", "--grain", "week", "--from", "2024-12-16", "--to", "2025-01-13", "--fill"]
    result = run("compile", str(project), "--all", *options, "--dialect", "mysql")
    assert result.exit_code == 0, result.output
    sql = result.stdout
    assert "MAKEDATE" not in sql and "WEEKDAY(" in sql and "STR_TO_DATE" not in sql
    reader = mariadb_server.connect(marketing_db)
    with reader.cursor() as cursor:
        cursor.execute(sql.rstrip().rstrip(";"))
        rows = cursor.fetchall()
    reader.close()
    on_duckdb = json.loads(run("evaluate", str(project), "--all", *options, "--format", "json").stdout)
    assert [(row[0].isoformat(), row[1]) for row in rows] == [(row["period"], row["channel"]) for row in on_duckdb]
    # The week that spans New Year is one week, from Monday 2024-12-30.
    assert sorted({row[0] for row in rows}) == [dt.date(2024, 12, 16), dt.date(2024, 12, 23), dt.date(2024, 12, 30),
                                               dt.date(2025, 1, 6)]


@pytest.mark.parametrize("grain", ["quarter", "fiscal_quarter", "week"])
def test_preparing_twice_changes_nothing(mariadb_server, marketing_db, tmp_path, grain):
    project = write_project(tmp_path / "p", mariadb_server.settings(marketing_db), timezone="Europe/Paris")
    with open_project(project) as kpi_project:
        compiled = kpi_project.compile(list(kpi_project.project.kpis), by=["channel"], grain=grain,
                                       start="2024-06-01", end="2025-06-01", fill=True)
    assert compiled.dialect == "mysql"
    once = compiled.expression.sql(dialect="mysql")
    assert MySQLAdapter.prepare(compiled.expression).sql(dialect="mysql") == once


def test_threads_share_one_project(mariadb_server, marketing_db, tmp_path):
    """Each thread queries through its own session; all give the single-threaded answer."""
    project = write_project(tmp_path / "threads", mariadb_server.settings(marketing_db))
    request = dict(by=["channel"], grain="month")
    with open_project(project) as kpi_project:
        expected = kpi_project.evaluate(["cost_per_lead", "mrr"], **request).rows
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda _: kpi_project.evaluate(["cost_per_lead", "mrr"], **request).rows,
                                    range(8)))
        connection = kpi_project.connection()
        assert isinstance(connection, MySQLConnection)
        assert len(connection._opened) >= 2  # the main thread's session and the workers'
    assert answers == [expected] * 8


@pytest.mark.parametrize("required, exit_code, words", [("1", 1, "MariaDB is required"), ("", 0, "1 skipped")])
def test_without_a_server_the_tests_skip_unless_required(tmp_path, required, exit_code, words):
    """The server fixture, with no server programs to be found: a skip, or a failure under
    KPI_ENGINE_REQUIRE_MYSQL=1 (as CI runs)."""
    (tmp_path / "conftest.py").write_text("import mariadb_server\n"
                                          "mariadb_server._program = lambda names: None\n"
                                          "pytest_plugins = ['mariadb_server']\n", encoding="utf-8")
    (tmp_path / "test_needs_server.py").write_text("def test_it(mariadb_server):\n    assert False\n",
                                                   encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "KPI_ENGINE_REQUIRE_MYSQL": required}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert words in result.stdout and "apt-get install mariadb-server" in result.stdout
