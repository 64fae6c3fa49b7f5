"""The five cloud adapters against fake drivers: the SQL sent is the core's SQL for the dialect
(the golden files' SQL, and it parses back), every query is labelled with kpi-engine and its
KPIs, secrets come from the environment and never show, a timeout or Ctrl-C calls the driver's
cancel, results keep their types, columns come from INFORMATION_SCHEMA, and a missing driver
is one clear error."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import re
import signal
import sys
import threading
import tomllib
from decimal import Decimal

import pytest
import sqlglot
from conftest import NAMES, PLUGIN, REPO, SECRET, SECRET_ENV, open_on
from fakes import FakeWarehouse
from kpi_engine.errors import ConnectionFailed, KpiEngineError, QueryFailed, QueryTimeout, WarehouseError
from kpi_engine.testing import request_renders
from sqlglot import exp

import kpi_engine_cloud

ADAPTERS = {adapter.name: adapter for adapter in kpi_engine_cloud.ADAPTERS}
all_warehouses = pytest.mark.parametrize("fake", NAMES, indirect=True)


def golden_cases(dialect: str) -> dict[str, str]:
    """tests/golden/<dialect>.sql of the core, case by case."""
    text = (REPO / "tests" / "golden" / f"{dialect}.sql").read_text()
    cases = {}
    for block in text.split("-- ")[1:]:
        name, _, sql = block.partition("\n")
        cases[name] = sql.strip().rstrip(";")
    return cases


def core_cases():
    if str(REPO / "tests") not in sys.path:  # the core tests' own helper modules (sql_parts, ...)
        sys.path.append(str(REPO / "tests"))
    spec = importlib.util.spec_from_file_location("core_test_dialects", REPO / "tests" / "test_dialects.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


CASES = core_cases()


# --- SQL ------------------------------------------------------------------------------------------

@all_warehouses
def test_sent_sql_is_the_core_sql_of_the_golden_files(fake):
    """Each golden case, evaluated on the fake warehouse: the SQL the driver receives is the text
    the result shows (the label comment aside), rendered once (the adapter renders nothing), and
    that text is the golden file's."""
    name, warehouse, settings = fake
    dialect = ADAPTERS[name].dialect
    golden = golden_cases(dialect)
    assert set(golden) == set(CASES)
    with open_on(settings) as project, request_renders() as renders:
        for case, (kpis, options) in CASES.items():
            renders.clear()
            result = project.evaluate(kpis, describe=False, **options)
            sent = warehouse.queries[-1]
            assert renders == [dialect], f"{name} {case}: rendered {len(renders)} times"
            assert FakeWarehouse.strip(sent.sql) == result.sql == golden[case], f"{name} {case}: not the golden SQL"
            assert project.compile(kpis, describe=False, **options).sql() == golden[case], case


@pytest.mark.parametrize("name", NAMES)
def test_every_library_kpi_compiles_and_parses_back(duck, name):
    """Conformance for SQL: every KPI of the library, by month and channel, compiles for the
    warehouse's dialect and the text parses back into the same tree."""
    dialect = ADAPTERS[name].dialect
    failures = []
    for kpi in sorted(duck.project.kpis):
        try:
            sql = duck.compile([kpi], dialect=dialect, by=["channel"], grain="month").sql()
        except KpiEngineError as error:
            failures.append(f"{kpi}: {error}")
            continue
        tree = sqlglot.parse_one(sql, read=dialect)
        assert isinstance(tree, exp.Query), kpi
        assert sqlglot.parse_one(tree.sql(dialect=dialect), read=dialect) == tree, kpi
    assert not failures, "\n".join(failures)
    assert len(duck.project.kpis) > 40


@all_warehouses
def test_whole_library_is_sent_labelled(fake):
    """All library KPIs in one evaluation: one query, parsed back by the fake in the dialect,
    labelled with every KPI's name."""
    name, warehouse, settings = fake
    with open_on(settings) as project:
        kpis = sorted(project.project.kpis)
        project.evaluate(kpis, grain="quarter", describe=False)
    sent = warehouse.queries[-1]
    label = {"snowflake": lambda: sent.tags, "redshift": lambda: sent.sql.split("*/")[0],
             "databricks": lambda: sent.tags["kpis"], "trino": lambda: ",".join(sent.tags),
             "bigquery": lambda: None}[name]()
    if name == "bigquery":  # labels hold 63 characters: the first KPIs
        assert sent.tags["application"] == "kpi-engine"
        assert sent.tags["kpis"] == "-".join(kpis)[:63]
    else:
        assert all(kpi in label for kpi in kpis)


# --- labels ---------------------------------------------------------------------------------------

EXPECTED_LABELS = {
    "snowflake": "kpi-engine: cost_per_lead, close_rate",
    "bigquery": {"application": "kpi-engine", "kpis": "cost_per_lead-close_rate"},
    "redshift": None,  # a comment, checked below
    "databricks": {"application": "kpi-engine", "kpis": "cost_per_lead,close_rate"},
    "trino": ["kpi-engine", "kpi:cost_per_lead", "kpi:close_rate"],
}


@all_warehouses
def test_every_query_says_kpi_engine_and_its_kpis(fake):
    name, warehouse, settings = fake
    with open_on(settings) as project:
        project.evaluate(["cost_per_lead", "close_rate"], by=["channel"], grain="month", describe=False)
    extents, main = warehouse.queries[-2], warehouse.queries[-1]
    if name == "redshift":
        assert main.sql.startswith("/* kpi-engine: cost_per_lead, close_rate */ WITH ")
        assert extents.sql.startswith("/* kpi-engine */ ")
        assert "SET query_group TO 'kpi-engine'" in [s.sql for s in warehouse.statements]
    else:
        assert main.tags == EXPECTED_LABELS[name]
    if name == "snowflake":
        assert extents.tags == "kpi-engine"  # the engine's own query: no KPIs
        assert warehouse.statements[-1].sql == "ALTER SESSION SET QUERY_TAG = 'kpi-engine: cost_per_lead, close_rate'"
    if name == "databricks":
        assert main.sql.startswith("/* kpi-engine: cost_per_lead, close_rate */ WITH ")
        assert extents.tags == {"application": "kpi-engine"}
    if name == "trino":
        assert warehouse.connects[-1]["source"] == "kpi-engine"
        assert extents.tags == ["kpi-engine"]


@all_warehouses
def test_a_label_never_closes_a_comment_or_splits_tags(fake):
    """Defence in depth: names reach labels as identifiers, whatever a query's meta holds."""
    from kpi_engine.hookspecs import KPIS_META

    name, warehouse, settings = fake
    query = sqlglot.parse_one("SELECT 1 AS x", read=ADAPTERS[name].dialect)
    query.meta[KPIS_META] = ("a */ DROP TABLE t; --", "b,c")
    with open_on(settings) as project:
        project.connection().execute(query)
    sent = warehouse.queries[-1]
    assert sent.sql.count("*/") == (1 if name in ("redshift", "databricks") else 0)
    label = str(sent.tags) + sent.sql.split("SELECT")[0]
    assert "DROP TABLE" not in label and "b,c" not in label
    assert "a_drop_table_t_" in label.lower() and "b_c" in label


def test_bigquery_labels_are_valid_labels():
    from kpi_engine_cloud.bigquery import job_labels

    labels = job_labels(("Revenue_Growth", "x" * 80))
    assert labels == {"application": "kpi-engine", "kpis": ("revenue_growth-" + "x" * 80)[:63]}
    assert all(re.fullmatch(r"[a-z0-9_-]{1,63}", value) for value in labels.values())


# --- connecting: settings and secrets -------------------------------------------------------------

@all_warehouses
def test_connect_arguments_and_session_settings(fake):
    name, warehouse, settings = fake
    with open_on({**settings, "query_timeout": 90}) as project:
        project.connection()
    arguments = warehouse.connects[0]
    if name == "snowflake":
        assert arguments == {"account": "myorg-acct1", "user": "analyst", "application": "kpi-engine",
                             "login_timeout": 60, "warehouse": "REPORTING", "database": "MARKETING",
                             "schema": "PUBLIC", "role": "ANALYST", "password": SECRET,
                             "session_parameters": {"TIMEZONE": "UTC", "QUOTED_IDENTIFIERS_IGNORE_CASE": False,
                                                    "QUERY_TAG": "kpi-engine", "STATEMENT_TIMEOUT_IN_SECONDS": 90}}
    elif name == "bigquery":
        assert arguments["project"] == "acme-analytics" and arguments["location"] == "EU"
        kind, path, _ = arguments["credentials"]  # from the key file GOOGLE_APPLICATION_CREDENTIALS names
        assert kind == "service-account" and path == os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
    elif name == "redshift":
        assert arguments == {"host": settings["host"], "port": 5439, "database": "marketing", "user": "analyst",
                             "password": SECRET, "application_name": "kpi-engine", "ssl": True, "timeout": 10}
        assert [s.sql for s in warehouse.statements] == [
            "SET query_group TO 'kpi-engine'", "SET timezone TO 'UTC'", "SET statement_timeout TO 90000",
            "SELECT pg_backend_pid()"]
    elif name == "databricks":
        assert arguments == {"server_hostname": "adb-1234.5.azuredatabricks.net",
                             "http_path": "/sql/1.0/warehouses/abc123", "access_token": SECRET,
                             "user_agent_entry": "kpi-engine", "catalog": "main", "schema": "marketing",
                             "session_configuration": {"TIMEZONE": "UTC", "ANSI_MODE": "true",
                                                       "STATEMENT_TIMEOUT": "90"}}
    else:
        auth = arguments.pop("auth")
        assert (auth.user, auth.password) == ("analyst", SECRET)
        assert arguments == {"host": "trino.example.com", "port": 443, "user": "analyst", "catalog": "hive",
                             "schema": "marketing", "source": "kpi-engine", "client_tags": ["kpi-engine"],
                             "timezone": "UTC", "http_scheme": "https",
                             "session_properties": {"query_max_run_time": "90s"}}


@pytest.mark.parametrize("url, name, expected", [
    ("snowflake://analyst@myorg-acct1/MARKETING/PUBLIC?warehouse=REPORTING&role=ANALYST", "snowflake",
     {"user": "analyst", "account": "myorg-acct1", "database": "MARKETING", "schema": "PUBLIC",
      "warehouse": "REPORTING", "role": "ANALYST"}),
    ("bigquery://acme-analytics/marketing?location=EU", "bigquery",
     {"project": "acme-analytics", "dataset": "marketing", "location": "EU"}),
    ("redshift://analyst@example.com:5440/marketing", "redshift",
     {"user": "analyst", "host": "example.com", "port": "5440", "database": "marketing"}),
    ("databricks://adb-1.net/sql/1.0/warehouses/abc?catalog=main&schema=mk", "databricks",
     {"host": "adb-1.net", "http_path": "/sql/1.0/warehouses/abc", "catalog": "main", "schema": "mk"}),
    ("trino://analyst@trino.example.com:8443/hive/marketing?http_scheme=https", "trino",
     {"user": "analyst", "host": "trino.example.com", "port": "8443", "catalog": "hive", "schema": "marketing",
      "http_scheme": "https"}),
])
def test_urls(url, name, expected, tmp_path):
    from kpi_engine_cloud.base import read_target

    target = read_target(ADAPTERS[name], {"url": url}, tmp_path)
    assert target.values == expected


@all_warehouses
def test_a_secret_written_in_the_project_is_refused(fake):
    name, _, settings = fake
    key = next(iter(ADAPTERS[name].secret_env))
    with pytest.raises(WarehouseError) as raised:
        open_on({**settings, key: "literal-s3cret"}).connection()
    message = str(raised.value)
    assert "literal-s3cret" not in message
    assert f"${{{SECRET_ENV[name]}}}" in message and "environment" in message


@all_warehouses
def test_a_secret_from_a_named_variable(fake, monkeypatch, tmp_path):
    name, warehouse, settings = fake
    key = next(iter(ADAPTERS[name].secret_env))
    value = "from-another-variable"
    if name == "bigquery":  # the secret is a key file's path
        (tmp_path / "team.json").write_text('{"type": "service_account"}')
        value = str(tmp_path / "team.json")
    monkeypatch.setenv("TEAM_WAREHOUSE_SECRET", value)
    with open_on({**settings, key: "${TEAM_WAREHOUSE_SECRET}"}) as project:
        project.connection()
    found = warehouse.connects[0]
    given = {"snowflake": lambda: found["password"], "bigquery": lambda: found["credentials"][1],
             "redshift": lambda: found["password"], "databricks": lambda: found["access_token"],
             "trino": lambda: found["auth"].password}[name]()
    assert given == value


@pytest.mark.parametrize("fake", ["bigquery"], indirect=True)
def test_a_malformed_bigquery_key_file_is_a_clear_error(fake, tmp_path, monkeypatch):
    _, _, settings = fake
    (tmp_path / "not-a-key.json").write_text("{}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "not-a-key.json"))
    with pytest.raises(ConnectionFailed) as raised:
        open_on(settings).connection()
    assert "cannot connect to BigQuery at project acme-analytics: Service account info was not in the expected " \
           "format" in str(raised.value)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(raised.value)


def test_a_password_in_a_url_is_refused(tmp_path):
    from kpi_engine_cloud.base import read_target

    with pytest.raises(WarehouseError) as raised:
        read_target(ADAPTERS["trino"], {"url": "trino://analyst:pa55word@host/hive/marketing"}, tmp_path)
    assert "pa55word" not in str(raised.value) and "TRINO_PASSWORD" in str(raised.value)


@all_warehouses
def test_secrets_never_appear_in_errors_or_logs(fake, caplog):
    name, warehouse, settings = fake
    secret = SECRET if name != "bigquery" else os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
    caplog.set_level(logging.DEBUG)
    if name != "bigquery":  # the BigQuery client opens no connection to fail: its queries do (below)
        warehouse.fail = f"connect:login failed for analyst: password={secret} rejected ({secret})"
        with pytest.raises(ConnectionFailed) as raised:
            open_on(settings).connection()
        assert secret not in str(raised.value) and "***" in str(raised.value)
        assert "login failed for analyst" in str(raised.value)
    warehouse.fail = f"Access denied; token {secret} is not valid"
    with open_on(settings, timeout=30) as project:
        with pytest.raises(QueryFailed) as failed:
            project.evaluate(["cost_per_lead"], describe=False)
    assert secret not in str(failed.value) and "Access denied" in str(failed.value)
    assert secret not in caplog.text


# --- timeouts and Ctrl-C --------------------------------------------------------------------------

def expected_cancel(name: str, warehouse: FakeWarehouse):
    """What the adapter must have cancelled: the query id, the job, the backend pid, the cursor."""
    sent = warehouse.queries[-1]
    if name == "redshift":
        return (4000 + sent.session,)  # pg_cancel_backend(the pid of the session that ran it)
    return None


@all_warehouses
def test_query_timeout_cancels_the_query_in_the_warehouse(fake):
    name, warehouse, settings = fake
    with open_on({**settings, "query_timeout": 0.3}) as project:
        project.connection()
        warehouse.slow = True
        with pytest.raises(QueryTimeout) as raised:
            project.evaluate(["cost_per_lead"], describe=False)
    assert "query_timeout of 0.3 s" in str(raised.value)
    assert warehouse.cancels, "the driver's cancel was not called"
    check_cancelled(name, warehouse)


def check_cancelled(name: str, warehouse: FakeWarehouse) -> None:
    cancelled = warehouse.cancels[0]
    if name == "snowflake":
        assert cancelled.startswith("01b-")  # abort_query(the query id execute_async returned)
    elif name == "bigquery":
        assert cancelled.sql == warehouse.queries[-1].sql  # job.cancel() of the job that ran it
    elif name == "redshift":
        assert cancelled == expected_cancel(name, warehouse)
        assert warehouse.connects[-1]["timeout"] == 5  # from a second connection
    else:
        assert type(cancelled).__name__ == "Cursor"  # cursor.cancel()


@all_warehouses
def test_ctrl_c_cancels_the_query_in_the_warehouse(fake):
    name, warehouse, settings = fake
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    with open_on(settings) as project:
        project.connection()
        warehouse.slow = True

        def press_ctrl_c():
            if warehouse.started.wait(10):  # never a stray signal into another test
                os.kill(os.getpid(), signal.SIGINT)

        presser = threading.Thread(target=press_ctrl_c, daemon=True)
        presser.start()
        with pytest.raises(KeyboardInterrupt):
            project.evaluate(["cost_per_lead"], describe=False)
        presser.join()
    assert warehouse.cancels, "Ctrl-C did not call the driver's cancel"
    check_cancelled(name, warehouse)


# --- results and columns --------------------------------------------------------------------------

@all_warehouses
def test_decimals_and_dates_come_back_typed(fake):
    name, warehouse, settings = fake
    answer = warehouse.answer

    def typed(sql):
        columns, rows = answer(sql)
        if "cost_per_lead" in columns:
            rows = [(dt.date(2025, 1, 1), "paid_search", Decimal("12.50")),
                    (dt.datetime(2025, 2, 1), "email", None)]
        return columns, rows

    warehouse.answer = typed
    with open_on(settings) as project:
        result = project.evaluate(["cost_per_lead"], by=["channel"], grain="month", describe=False)
    rows = [(row["period"], row["channel"], row["cost_per_lead"]) for row in result.to_dicts()]
    assert rows == [(dt.date(2025, 1, 1), "paid_search", 12.5), (dt.date(2025, 2, 1), "email", None)]
    assert isinstance(rows[0][2], float)


INFORMATION = {"leads": [("lead_id", "NUMBER"), ("created_at", "TIMESTAMP_NTZ"), ("channel", "TEXT")]}


@all_warehouses
def test_columns_come_from_information_schema(fake):
    name, warehouse, settings = fake
    dialect = ADAPTERS[name].dialect
    answer = warehouse.answer
    asked = []

    def information(sql):
        tree = sqlglot.parse_one(FakeWarehouse.strip(sql), read=dialect)
        table = tree.find(exp.Table)
        if table is not None and "information_schema" in table.sql(dialect=dialect).lower():
            where = {eq.this.name: eq.expression for eq in tree.find_all(exp.EQ)}
            asked.append((table.sql(dialect=dialect), where["table_schema"].sql(dialect=dialect),
                          where["table_name"].sql(dialect=dialect)))
            return ["column_name", "data_type"], INFORMATION.get(where["table_name"].name, [])
        return answer(sql)

    warehouse.answer = information
    from kpi_engine.sql_build import qualified_table

    with open_on(settings) as project:
        connection = project.connection()
        assert connection.columns(qualified_table("leads")) == dict(INFORMATION["leads"])
        assert connection.columns(qualified_table("marketing.missing_table")) is None
    expected = {
        "snowflake": ("information_schema.columns", "CURRENT_SCHEMA()", "'leads'"),
        # sqlglot reads a project name with '-' back as one name: the text sent is checked below
        "bigquery": ("`acme-analytics.marketing.INFORMATION_SCHEMA.COLUMNS` AS `INFORMATION_SCHEMA.COLUMNS`",
                     "'marketing'", "'leads'"),
        "redshift": ("information_schema.columns", "CURRENT_SCHEMA", "'leads'"),
        "databricks": ("information_schema.columns", "CURRENT_SCHEMA()", "'leads'"),
        "trino": ("information_schema.columns", "current_schema", "'leads'"),
    }[name]
    assert asked[0] == expected
    assert asked[1][1:] == ("'marketing'", "'missing_table'")
    if name == "bigquery":
        assert "FROM `acme-analytics`.`marketing`.`INFORMATION_SCHEMA.COLUMNS` WHERE" in warehouse.queries[0].sql


@all_warehouses
def test_validation_describes_every_source(fake):
    """Opening with describe=True (what 'kpi-engine validate' does) asks INFORMATION_SCHEMA for
    each table source; a table the warehouse does not have is named in the error."""
    name, warehouse, settings = fake
    with open_on(settings) as project:
        with pytest.raises(KpiEngineError) as raised:
            project.model(describe=True)
    sources_with_tables = [s for s in project.project.sources.values()
                           if s.table and not (s.unmapped or s.axis_of or s.conversion)]
    described = [q for q in warehouse.queries if "information_schema" in q.sql.lower()]
    assert len(described) == len(sources_with_tables)
    assert "does not exist in the warehouse" in str(raised.value)


#: Type codes each fake driver reports for (amount, closed_on), and the names the adapter gives them.
DESCRIBED = {"snowflake": ({"amount": 0, "closed_on": 3}, {"amount": "NUMBER", "closed_on": "DATE"}),
             "bigquery": ({"amount": "NUMERIC", "closed_on": "DATE"}, {"amount": "NUMERIC", "closed_on": "DATE"}),
             "redshift": ({"amount": 1700, "closed_on": 1082}, {"amount": "NUMERIC", "closed_on": "DATE"}),
             "databricks": ({"amount": "decimal", "closed_on": "date"}, {"amount": "DECIMAL", "closed_on": "DATE"}),
             "trino": ({"amount": "decimal(12,2)", "closed_on": "date"},
                       {"amount": "DECIMAL(12,2)", "closed_on": "DATE"})}


@all_warehouses
def test_a_sql_source_is_described_by_a_query_of_no_rows(fake):
    """A ``sql:`` source has no INFORMATION_SCHEMA entry: its columns come from the driver's
    description of SELECT * FROM (its query) LIMIT 0 (BigQuery: a dry run, which scans nothing)."""
    name, warehouse, settings = fake
    dialect = ADAPTERS[name].dialect
    codes, expected = DESCRIBED[name]
    warehouse.column_types = codes
    warehouse.answer = lambda sql: (["amount", "closed_on"], [])
    relation = exp.Subquery(this=sqlglot.parse_one("SELECT amount, closed_on FROM deals", read=dialect),
                            alias=exp.TableAlias(this=exp.to_identifier("deals")))
    with open_on(settings) as project:
        assert project.connection().columns(relation) == expected
    sent = sqlglot.parse_one(warehouse.queries[-1].sql, read=dialect)
    assert sent.args["limit"].expression.name == "0" and sent.find(exp.Subquery) is not None


# --- the driver missing ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_a_missing_driver_is_one_clear_error(name, monkeypatch):
    adapter = ADAPTERS[name]
    monkeypatch.setitem(sys.modules, adapter.driver, None)  # import fails as if not installed
    from conftest import SETTINGS

    with pytest.raises(WarehouseError) as raised:
        open_on(SETTINGS[name]).evaluate(["cost_per_lead"], describe=False)
    message = str(raised.value)
    assert f"needs {adapter.package}, which is not installed" in message
    assert f"pip install 'kpi-engine-cloud[{adapter.extra}]'" in message
    assert "\n" not in message and "Traceback" not in message


def test_entry_points_register_each_warehouse():
    """pyproject.toml registers one entry point per warehouse, named as its adapter."""
    declared = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]["entry-points"]["kpi_engine"]
    assert declared == {name: f"kpi_engine_cloud.{name}" for name in NAMES}
    for name, module in declared.items():
        adapters = importlib.import_module(module).kpi_engine_adapters()
        assert [adapter.name for adapter in adapters] == [name]
    extras = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for adapter in ADAPTERS.values():
        assert extras[adapter.extra][0].lower().startswith(adapter.package.lower())


def test_a_cancel_asked_before_the_driver_names_the_query_is_made_when_it_does():
    """The timeout passing while a query is being submitted: the cancel waits for the query id,
    then is made."""
    from kpi_engine_cloud.base import Running

    cancelled = []
    running = Running(cancel=lambda r: cancelled.append(r.handle))
    running.stop()
    assert cancelled == []  # nothing to cancel yet
    running.started("01b-7")
    assert cancelled == ["01b-7"]
    running.stop()  # a second Ctrl-C cancels again, harmlessly
    assert cancelled == ["01b-7", "01b-7"]


@pytest.mark.parametrize("fake", ["trino"], indirect=True)
def test_the_command_line_on_a_fake_warehouse(fake, monkeypatch, duck):
    """kpi-engine evaluate --warehouse trino://...: the rows the driver returned, and with the
    driver missing one paragraph naming the extra to install (exit code 1, no traceback)."""
    from click.testing import CliRunner
    from conftest import EXAMPLE, cloud_registry
    from kpi_engine.cli import cli

    name, warehouse, _ = fake
    monkeypatch.setattr("kpi_engine.engine.default_registry", cloud_registry)
    answer = warehouse.answer

    from kpi_engine.sql_build import qualified_table

    def rows(sql):  # the tables as DuckDB describes the example's, and one row of cost_per_lead
        tree = sqlglot.parse_one(sql, read="trino")
        if "information_schema" in sql:
            table = next(eq.expression.name for eq in tree.find_all(exp.EQ) if eq.this.name == "table_name")
            return ["column_name", "data_type"], list((duck.connection().columns(qualified_table(table)) or {}).items())
        columns, found = answer(sql)
        return (columns, [(dt.date(2025, 1, 1), Decimal("41.25"))]) if "cost_per_lead" in columns else (columns, found)

    warehouse.answer = rows
    url = "trino://analyst@trino.example.com:443/hive/marketing"
    result = CliRunner().invoke(cli, ["evaluate", str(EXAMPLE), "cost_per_lead", "--grain", "month",
                                      "--warehouse", url, "--format", "csv", "--timeout", "120"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == ["2025-01-01,41.25,true"]
    assert warehouse.queries[-1].tags == ["kpi-engine", "kpi:cost_per_lead"]
    assert warehouse.connects[-1]["session_properties"] == {"query_max_run_time": "120s"}
    monkeypatch.setitem(sys.modules, "trino.dbapi", None)
    missing = CliRunner().invoke(cli, ["evaluate", str(EXAMPLE), "cost_per_lead", "--warehouse", url])
    assert missing.exit_code == 1
    assert "pip install 'kpi-engine-cloud[trino]'" in missing.stderr and "Traceback" not in missing.output
