"""The Spark adapter (PySpark) against a local Spark: local[2], one session for the module
(tests/spark_fixture.py), which the adapter reuses.

The example warehouse (examples/marketing/data/*.csv) is read through the adapter's ``data``
setting; the whole marketing library evaluated on Spark must give what DuckDB gives on the
same files, within floating-point tolerance, with None where DuckDB has None. Then: the SQL of
every grain, time zones and fiscal calendars, --fill/--where/--having, DECIMAL columns and
LEAST/GREATEST of null (what ``SparkAdapter.prepare`` rewrites, and why), CSV/Parquet typing,
tables of a catalog database, clear errors (a missing table, a bad ``sql:`` source, a failing
query, settings, no PySpark, no Java), ``compile --dialect spark``, the command line in a fresh
process (Spark started and stopped by the adapter), timeouts, streaming, threads, and the
conformance kit (kpi_engine.testing).

Every test has the ``spark`` marker. Skipped when PySpark or Java 17+ is missing, unless
KPI_ENGINE_REQUIRE_SPARK is set (CI), where that is a failure.
"""

pytest_plugins = ["spark_fixture"]

import datetime as dt  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from decimal import Decimal  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import sqlglot  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from sqlglot import exp  # noqa: E402

import kpi_engine.adapters.duckdb  # noqa: E402
import kpi_engine.adapters.spark  # noqa: E402
from kpi_engine import engine  # noqa: E402
from kpi_engine.adapters.spark import SparkAdapter, parse_url, spark_settings  # noqa: E402
from kpi_engine.cli import cli  # noqa: E402
from kpi_engine.compiler import compile_request  # noqa: E402
from kpi_engine.engine import KpiProject, make_request  # noqa: E402
from kpi_engine.errors import (  # noqa: E402
    ConnectionFailed,
    KpiEngineError,
    ProjectInvalid,
    QueryFailed,
    QueryTimeout,
    WarehouseError,
)
from kpi_engine.plugins import Registry  # noqa: E402
from kpi_engine.spec import load_project  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "examples" / "marketing" / "data"
#: Time functions over the library's KPIs, added to some projects.
EXTRA_KPIS = """\
kpis:
  leads_rolling_3: {formula: 'rolling(new_contacts, 3)'}
  leads_year_to_date: {formula: "cumulative(new_contacts, 'year')"}
  channel_share_of_revenue: {formula: 'share(revenue)'}
  spend_per_day: {formula: 'ad_spend_total / (1 + days_between(min(ad_spend.spend_date), max(ad_spend.spend_date)))'}
"""
#: A calendar that moves every boundary: local time zone, weeks from Sunday, fiscal year from April.
CALENDAR = "timezone: America/New_York\nweek_start: sunday\nfiscal_year_start: 4\n"


# --- projects ------------------------------------------------------------------------------------------


def make_registry() -> Registry:
    """DuckDB and Spark, registered as their entry points will register them."""
    registry = Registry(load_entry_points=False)
    registry.register(kpi_engine.adapters.duckdb, "duckdb")
    registry.register(kpi_engine.adapters.spark, "spark")
    return registry


def write_project(root: Path, warehouse: dict, files: dict[str, str] | None = None, config: str = "") -> Path:
    """A project that includes the marketing library and reads ``warehouse``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "kpi_engine.yaml").write_text(f"name: spark_tests\nwarehouse: {json.dumps(warehouse)}\n"
                                          f"include: ['builtin:marketing']\n{config}")
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    return root


def open_with(registry: Registry, root: Path) -> KpiProject:
    return KpiProject(load_project(root), registry=registry)


@pytest.fixture(scope="module")
def registry():
    return make_registry()


@pytest.fixture(scope="module")
def projects(spark, registry, tmp_path_factory):
    """Factory: (Spark project, DuckDB project) of the same files and calendar; closed at the end."""
    opened = {}

    def make(data: Path = DATA_DIR, config: str = "", extra: bool = False):
        key = (str(data), config, extra)
        if key not in opened:
            base = tmp_path_factory.mktemp("projects")
            files = {"extra.yaml": EXTRA_KPIS} if extra else {}
            pair = tuple(open_with(registry, write_project(base / adapter, {"adapter": adapter, "data": str(data)},
                                                           files, config))
                         for adapter in ("spark", "duckdb"))
            opened[key] = pair
        return opened[key]

    yield make
    for pair in opened.values():
        for project in pair:
            project.close()


@pytest.fixture(scope="module")
def example(projects):
    return projects()


@pytest.fixture
def cli_registry(registry, monkeypatch):
    """The CLI opens projects with the default registry: give it the one with Spark."""
    monkeypatch.setattr(engine, "default_registry", lambda: registry)
    return registry


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def small_data(tmp_path) -> Path:
    """Only leads and ad_spend of the example warehouse: quick to register, enough for cost_per_lead."""
    folder = tmp_path / "small_data"
    folder.mkdir()
    for table in ("leads", "ad_spend"):
        (folder / f"{table}.csv").write_bytes((DATA_DIR / f"{table}.csv").read_bytes())
    return folder


def same_rows(actual: list[tuple], expected: list[tuple]) -> bool:
    """Row by row equal, floats within floating-point tolerance."""
    return len(actual) == len(expected) and all(
        len(a) == len(e) and all(x == (pytest.approx(y, rel=1e-9, abs=1e-9) if isinstance(y, float) else y)
                                 for x, y in zip(a, e)) for a, e in zip(actual, expected))


# --- comparing results ---------------------------------------------------------------------------------


def keyed(result, keys: tuple[str, ...]) -> dict[tuple, dict]:
    rows = {}
    for row in result.to_dicts():
        key = tuple(row[k] for k in keys)
        assert key not in rows, key
        rows[key] = row
    return rows


def assert_same(on_spark, on_duckdb, names, keys=("period", "channel")) -> int:
    """The same keys and, KPI by KPI, the same values: floating-point tolerance only, and None
    exactly where DuckDB has None. Returns how many non-null values were compared."""
    actual, expected = keyed(on_spark, keys), keyed(on_duckdb, keys)
    assert set(actual) == set(expected)
    compared = 0
    for key, row in expected.items():
        for name in names:
            want, got = row[name], actual[key][name]
            if want is None:
                assert got is None, (name, key, got)
            else:
                # A plain number of DuckDB's kind (int for counts, values.py), never a Decimal.
                assert type(got) is type(want) and type(got) in (int, float), (name, key, got)
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (name, key)
                compared += 1
    return compared


# --- the whole library, as on DuckDB -------------------------------------------------------------------


def test_every_library_kpi_by_month_and_channel_equals_duckdb(example):
    on_spark, on_duckdb = example
    names = list(on_duckdb.project.kpis)
    assert len(names) >= 39 and set(names) == set(on_spark.project.kpis)
    options = dict(by=["channel"], grain="month")
    spark_result = on_spark.evaluate(names, **options)  # one query, every KPI
    duckdb_result = on_duckdb.evaluate(names, **options)
    assert len(spark_result.to_dicts()) > 100
    assert assert_same(spark_result, duckdb_result, names) > 2500
    for name in names:  # nothing passes for being null everywhere
        assert any(row[name] not in (None, 0) for row in spark_result.to_dicts()), name
    periods = {row["period"] for row in spark_result.to_dicts()}
    assert {type(p) for p in periods} == {dt.date} and min(periods) == dt.date(2024, 1, 1)


@pytest.mark.parametrize("kpi", ["cost_per_lead", "mrr", "revenue_growth_rate", "customer_lifetime_value",
                                 "lead_to_opportunity_rate", "repeat_customer_revenue", "time_to_conversion_days",
                                 "follower_growth_rate"])
def test_kpis_alone_equal_duckdb(example, kpi):
    # Cross-source ratio, month-end snapshot, previous(), cumulative(), per-entity conditions (one
    # per lead and a count over orders per customer), day arithmetic, previous() of a snapshot.
    on_spark, on_duckdb = example
    options = dict(by=["channel"], grain="month", start="2024-04-01", end="2025-10-01")
    assert assert_same(on_spark.evaluate([kpi], **options), on_duckdb.evaluate([kpi], **options), [kpi]) > 10


def test_totals_without_grain_or_dimensions(example):
    on_spark, on_duckdb = example
    names = ["new_contacts", "cost_per_lead", "nps", "bounce_rate", "roi", "email_open_rate", "avg_session_duration"]
    assert assert_same(on_spark.evaluate(names), on_duckdb.evaluate(names), names, keys=()) == len(names)
    assert assert_same(on_spark.evaluate(names, by=["channel"]), on_duckdb.evaluate(names, by=["channel"]), names,
                       keys=("channel",)) > 30


@pytest.mark.parametrize("grain, start, end", [("week", "2024-02-01", "2024-07-01"),
                                               ("day", "2024-03-01", "2024-04-15"),
                                               ("quarter", None, None), ("fiscal_year", None, None)])
def test_grains_time_zone_and_fiscal_calendar(projects, grain, start, end):
    # Weeks from Sunday (DATE_ADD before and after DATE_TRUNC), fiscal years from April
    # (ADD_MONTHS), timestamps converted to New York time (CONVERT_TIMEZONE), day periods indexed
    # with DATEDIFF, months with YEAR * 12 + MONTH, RANGE frames for rolling().
    on_spark, on_duckdb = projects(config=CALENDAR, extra=True)
    names = ["new_contacts", "cost_per_lead", "mrr", "nps", "leads_rolling_3", "leads_year_to_date",
             "channel_share_of_revenue", "spend_per_day", "revenue_growth_rate"]
    if grain == "day":
        names.remove("leads_year_to_date")
    options = dict(by=["channel"], grain=grain, start=start, end=end)
    assert assert_same(on_spark.evaluate(names, **options), on_duckdb.evaluate(names, **options), names) > 40


def test_fill_where_having_order_and_limit(example):
    # --fill lists the periods in a VALUES spine joined with IS NOT DISTINCT FROM (<=> on Spark).
    on_spark, on_duckdb = example
    names = ["new_contacts", "cost_per_lead", "close_rate", "customers_won"]
    options = dict(by=["channel"], grain="month", start="2025-01-01", end="2025-08-01", fill=True,
                   where="channel in ('ppc', 'email', 'events')", having="new_contacts > 5 or new_contacts = 0",
                   order_by=["-new_contacts", "period", "channel"], limit=15)
    spark_result, duckdb_result = on_spark.evaluate(names, **options), on_duckdb.evaluate(names, **options)
    assert assert_same(spark_result, duckdb_result, names) > 20
    order = [(row["period"], row["channel"]) for row in spark_result.to_dicts()]
    assert order == [(row["period"], row["channel"]) for row in duckdb_result.to_dicts()] and len(order) > 10


def test_ad_hoc_formulas(example):
    on_spark, on_duckdb = example
    formulas = ["sum(ad_spend.spend) / count(leads)", "if(count(leads) > 100, 1, 0) + coalesce(nullif(nps, 0), -1)",
                "abs(least(roi, 0)) + greatest(close_rate, 1)",
                "count_distinct(orders.customer_id where amount between 100 and 5000)",
                "count(leads where not is_qualified and channel not in ('ppc'))"]
    spark_result = on_spark.evaluate(formulas=formulas, by=["channel"], grain="quarter")
    duckdb_result = on_duckdb.evaluate(formulas=formulas, by=["channel"], grain="quarter")
    columns = ["formula"] + [f"formula_{i}" for i in range(2, len(formulas) + 1)]
    assert assert_same(spark_result, duckdb_result, columns) > 150


def test_windows_over_windows_and_over_days_equal_duckdb(example):
    """Issue 15/16 shapes (checked against plain Python in test_nested_time.py and
    test_distinct_windows.py): the same numbers on Spark."""
    on_spark, on_duckdb = example
    formulas = ["previous(cumulative(count(leads)), '1 year')", "rolling(count(leads), '30 days')",
                "cumulative(count_distinct(orders.customer_id))", "rolling(count_distinct(orders.customer_id), 3)"]
    options = dict(formulas=formulas, by=["channel"], grain="month", start="2025-01-15", end="2025-06-01")
    spark_result, duckdb_result = on_spark.evaluate(**options), on_duckdb.evaluate(**options)
    columns = ["formula"] + [f"formula_{i}" for i in range(2, len(formulas) + 1)]
    assert assert_same(spark_result, duckdb_result, columns) > 20


# --- DECIMAL columns: why prepare() divides in DOUBLE --------------------------------------------------


@pytest.fixture(scope="module")
def decimal_data(tmp_path_factory):
    """The example warehouse as Parquet files, with every DOUBLE column as DECIMAL(12,2), as money
    is usually stored in a warehouse."""
    import duckdb

    folder = tmp_path_factory.mktemp("decimal_data")
    connection = duckdb.connect()
    for csv in sorted(DATA_DIR.glob("*.csv")):
        relation = connection.sql(f"SELECT * FROM read_csv('{csv}')")
        columns = [f'CAST("{name}" AS DECIMAL(12,2)) AS "{name}"' if str(kind) == "DOUBLE" else f'"{name}"'
                   for name, kind in zip(relation.columns, relation.types)]
        connection.execute(f"COPY (SELECT {', '.join(columns)} FROM read_csv('{csv}')) "
                           f"TO '{folder / (csv.stem + '.parquet')}' (FORMAT parquet)")
    connection.close()
    return folder


MONEY_KPIS = ["ltv_to_cac", "customer_lifetime_value", "cost_per_lead", "customer_acquisition_cost", "roi", "mrr",
              "lead_value", "revenue_growth_rate"]


def test_decimal_money_columns_equal_duckdb(projects, decimal_data):
    on_spark, on_duckdb = projects(data=decimal_data)
    assert on_spark.connection().columns(exp.to_table("orders"))["amount"] == "decimal(12,2)"
    options = dict(by=["channel"], grain="month")
    assert assert_same(on_spark.evaluate(MONEY_KPIS, **options), on_duckdb.evaluate(MONEY_KPIS, **options),
                       MONEY_KPIS) > 400


def test_without_prepare_spark_cuts_decimal_ratios_to_six_places(projects, decimal_data):
    on_spark, on_duckdb = projects(data=decimal_data)
    compiled = compile_request(on_spark.model(), make_request(["ltv_to_cac"], by=["channel"]), "spark", "spark")
    assert "AS DOUBLE) /" not in compiled.sql()
    truncated = dict(on_spark.connection().execute(compiled.expression).rows)
    on_duckdb_rows = on_duckdb.evaluate(["ltv_to_cac"], by=["channel"]).to_dicts()
    expected = {row["channel"]: row["ltv_to_cac"] for row in on_duckdb_rows if row["ltv_to_cac"] is not None}
    assert len(expected) >= 4
    assert all(round(truncated[channel], 6) == truncated[channel] for channel in expected)  # six places
    assert any(truncated[channel] != pytest.approx(value, rel=1e-9) for channel, value in expected.items())
    prepared = on_spark.compile(["ltv_to_cac"], by=["channel"])
    assert "CAST(" in prepared.sql() and "AS DOUBLE) /" in prepared.sql()
    exact = {k: v for k, v in on_spark.connection().execute(prepared.expression).rows if v is not None}
    assert exact == {channel: pytest.approx(value, rel=1e-12) for channel, value in expected.items()}


def test_prepare_divides_and_averages_in_double():
    query = sqlglot.parse_one("SELECT a / NULLIF(b, 0) AS r, AVG(c) AS m, AVG(CAST(d AS DOUBLE)) AS n, "
                              "COUNT(DISTINCT e) / 2 AS k FROM t", read="spark")
    before = query.sql(dialect="spark")
    prepared = SparkAdapter.prepare(query)
    assert prepared.sql(dialect="spark") == (
        "SELECT CAST(a AS DOUBLE) / NULLIF(b, 0) AS r, AVG(CAST(c AS DOUBLE)) AS m, AVG(CAST(d AS DOUBLE)) AS n, "
        "CAST(COUNT(DISTINCT e) AS DOUBLE) / 2 AS k FROM t")
    assert SparkAdapter.prepare(prepared).sql(dialect="spark") == prepared.sql(dialect="spark")  # idempotent
    assert query.sql(dialect="spark") == before  # the query given is not modified


def test_least_and_greatest_of_null_on_spark(example):
    on_spark, on_duckdb = example
    query = exp.select(exp.Least(this=exp.Null(), expressions=[exp.Literal.number(0)]).as_("l"),
                       exp.Greatest(this=exp.Literal.number(2), expressions=[exp.Literal.number(5)]).as_("g"))
    assert on_spark.connection().execute(query).rows == [(0, 5)]  # Spark's own LEAST skips the null ...
    formulas = ["least(count(leads) / 0, 0)", "greatest(1, nullif(count(leads), count(leads)), 2)", "least(3, 2, 5)"]
    rows = on_spark.evaluate(formulas=formulas).to_dicts()  # ... the engine's least() does not
    assert rows == on_duckdb.evaluate(formulas=formulas).to_dicts() == [
        {"formula": None, "formula_2": None, "formula_3": 2, "complete": True}]


# --- the warehouse: sessions, views, types, catalog tables ---------------------------------------------


def test_the_active_session_is_reused_and_views_stay_in_a_session_of_their_own(spark, example):
    on_spark, _ = example
    session = on_spark.connection().session
    assert session.sparkContext is spark.sparkContext  # the same Spark application
    assert session is not spark  # data views live in a session of their own ...
    names = {table.name for table in session.catalog.listTables()}
    assert {"leads", "ad_spend", "orders", "subscriptions", "web_sessions"} <= names
    assert "leads" not in {table.name for table in spark.catalog.listTables()}  # ... not in the active one
    assert session.conf.get("spark.sql.session.timeZone") == "UTC"


def test_csv_views_have_warehouse_types(example):
    connection = example[0].connection()
    leads = connection.columns(exp.to_table("leads"))
    assert leads["lead_id"] == "int" and leads["created_at"] == "timestamp"
    assert leads["is_qualified"] == "boolean" and leads["channel"] == "string"
    assert leads["customer_at"] == "timestamp"  # mostly empty: still typed
    assert connection.columns(exp.to_table("ad_spend")) == {"spend_date": "date", "channel": "string",
                                                            "campaign": "string", "spend": "double"}
    assert connection.columns(exp.to_table("email_sends"))["opened"] == "boolean"
    subquery = sqlglot.parse_one("SELECT COUNT(*) AS n, CAST(1.5 AS DOUBLE) AS x FROM leads",
                                 read="spark").subquery("q")
    assert connection.columns(subquery) == {"n": "bigint", "x": "double"}
    assert connection.columns(exp.to_table("no_such_table")) is None
    assert connection.columns(exp.to_table("no_such_schema.leads")) is None
    assert connection.execute(sqlglot.parse_one("SELECT 1 AS one")).rows == [(1,)]  # still usable


def test_csv_and_parquet_typing(spark, registry, tmp_path):
    import duckdb

    data = tmp_path / "data"
    data.mkdir()
    (data / "events.csv").write_text(
        "id,happened_at,day,flag,shouty,amount,label,note\n"
        "1,2024-01-05 10:00:00,2024-01-05,true,TRUE,1.50,a,\n"
        "2,2024-02-29T23:59:58,2024-02-29,false,False,2,b,x\n"
        "3,,,,,,,\n")
    duckdb.execute("COPY (SELECT 1 AS id, CAST('2024-03-01 08:00:00' AS TIMESTAMP) AS at, "
                   f"12.34::DECIMAL(12,2) AS amount, true AS ok) TO '{data / 'typed.parquet'}' (FORMAT parquet)")
    (data / "notes.txt").write_text("not a table")
    (data / "bad-name.csv").write_text("a\n1\n")  # not an identifier: left out, as on DuckDB
    root = write_project(tmp_path / "p", {"adapter": "spark", "data": "../data"})  # relative to the project
    with open_with(registry, root) as project:
        connection = project.connection()
        assert connection.columns(exp.to_table("events")) == {
            "id": "int", "happened_at": "timestamp", "day": "date", "flag": "boolean", "shouty": "boolean",
            "amount": "double", "label": "string", "note": "string"}
        # DuckDB writes TIMESTAMP as a Parquet timestamp without time zone: Spark's TIMESTAMP_NTZ.
        assert connection.columns(exp.to_table("typed")) == {"id": "int", "at": "timestamp_ntz",
                                                            "amount": "decimal(12,2)", "ok": "boolean"}
        assert connection.execute(sqlglot.parse_one("SELECT at, amount FROM typed")).rows == [
            (dt.datetime(2024, 3, 1, 8), Decimal("12.34"))]
        rows = connection.execute(sqlglot.parse_one("SELECT id, happened_at, day, shouty FROM events ORDER BY id")).rows
        assert rows == [(1, dt.datetime(2024, 1, 5, 10), dt.date(2024, 1, 5), True),
                        (2, dt.datetime(2024, 2, 29, 23, 59, 58), dt.date(2024, 2, 29), False), (3, None, None, None)]
        assert {table.name for table in connection.session.catalog.listTables()} == {"events", "typed"}


def test_tables_of_a_catalog_database(spark, registry, duckdb_leads, tmp_path):
    spark.sql("CREATE DATABASE IF NOT EXISTS kpi_crm")
    spark.read.csv(str(DATA_DIR / "leads.csv"), header=True, inferSchema=True) \
        .write.mode("overwrite").saveAsTable("kpi_crm.leads")
    root = write_project(tmp_path / "p", {"adapter": "spark", "database": "kpi_crm"})
    with open_with(registry, root) as project:
        result = project.evaluate(["new_contacts", "qualified_leads"], by=["channel"], grain="quarter")
        assert assert_same(result, duckdb_leads, ["new_contacts", "qualified_leads"]) > 40
        # The library's other sources have no table in that database: only what reads them fails.
        with pytest.raises(KpiEngineError, match="table 'ad_spend' does not exist in the warehouse"):
            project.evaluate(["cost_per_lead"])
    assert spark.catalog.currentDatabase() == "default"  # the active session was not switched


def test_round_is_half_away_from_zero_on_the_printed_number(spark, registry, tmp_path):
    # the conformance kit's rounding check (hand-worked values) on a table of a catalog database
    from pyspark.sql import types as T

    from kpi_engine.testing.rounding import ROWS, TABLE, rounding_mismatches, write_rounding_project

    schema = T.StructType([T.StructField("taken_on", T.DateType()), T.StructField("id", T.StringType()),
                           T.StructField("value", T.DoubleType()), T.StructField("price", T.DecimalType(14, 2)),
                           T.StructField("units", T.LongType())])
    spark.sql("CREATE DATABASE IF NOT EXISTS kpi_rounding")
    spark.createDataFrame(ROWS, schema).write.mode("overwrite").saveAsTable(f"kpi_rounding.{TABLE}")
    root = write_rounding_project(tmp_path / "p", {"adapter": "spark", "database": "kpi_rounding"})
    with open_with(registry, root) as project:
        assert rounding_mismatches(project) == []


@pytest.fixture
def duckdb_leads(example):
    return example[1].evaluate(["new_contacts", "qualified_leads"], by=["channel"], grain="quarter")


def test_a_warehouse_url_uses_the_running_spark(spark, registry, tmp_path):
    root = write_project(tmp_path / "p", {"adapter": "spark"})
    project = KpiProject(load_project(root), warehouse="spark:local[2]", registry=registry)
    with project:
        connection = project.connection()
        assert connection.session.sparkContext is spark.sparkContext
        assert connection.execute(sqlglot.parse_one("SELECT 40 + 2 AS answer")).rows == [(42,)]
    assert spark.sql("SELECT 1").collect()[0][0] == 1  # closing the project did not stop Spark


# --- errors --------------------------------------------------------------------------------------------


def test_a_missing_table_is_named(spark, cli_registry, small_data, tmp_path):
    spec = ("sources:\n  prospects: {table: prospects, time: created_at}\n"
            "kpis:\n  prospects_n: {formula: count(prospects)}\n")
    root = write_project(tmp_path / "p", {"adapter": "spark", "data": str(small_data)}, {"extra.yaml": spec})
    result = run("validate", str(root))
    assert result.exit_code == 1
    assert "extra.yaml:2:22 (source 'prospects'): table 'prospects' does not exist in the warehouse." in result.stderr
    evaluate = run("evaluate", str(root), "prospects_n")
    assert evaluate.exit_code == 1 and "table 'prospects' does not exist" in evaluate.stderr
    assert "Traceback" not in evaluate.output
    ok = run("evaluate", str(root), "cost_per_lead", "--format", "json")
    assert ok.exit_code == 0, ok.stderr  # the other sources still work
    assert json.loads(ok.stdout)


def test_a_bad_sql_source(spark, registry, small_data, tmp_path):
    spec = ("sources:\n"
            "  hot_leads:\n    sql: SELECT lead_id, created_at, no_such_column FROM leads\n    time: created_at\n"
            "kpis:\n  hot: {formula: count(hot_leads)}\n")
    root = write_project(tmp_path / "p", {"adapter": "spark", "data": str(small_data)}, {"extra.yaml": spec})
    with open_with(registry, root) as project:
        with pytest.raises(ProjectInvalid) as raised:
            project.model()
        messages = [str(error) for error in raised.value.errors]
        assert any(m.startswith("cannot describe the source's sql (source 'hot_leads') in Spark: "
                                "[UNRESOLVED_COLUMN.WITH_SUGGESTION]") and "`no_such_column`" in m and "\n" not in m
                   for m in messages), messages
        with pytest.raises(WarehouseError, match=r"cannot describe the source's sql \(source 'hot_leads'\) in Spark"):
            project.evaluate(["hot"])
        assert project.evaluate(["new_contacts"]).to_dicts()[0]["new_contacts"] > 1000  # the rest works
    # SQL that does not parse is found before Spark sees it, with its place in the file.
    spec = "sources:\n  broken:\n    sql: SELECT lead_id, FROM leads WHERE (\n    time: created_at\n"
    root = write_project(tmp_path / "q", {"adapter": "spark", "data": str(small_data)}, {"extra.yaml": spec})
    with open_with(registry, root) as project:
        with pytest.raises(ProjectInvalid) as raised:
            project.model()
        assert any(str(error).startswith(f"{root / 'extra.yaml'}:3:10 (source 'broken'): the source's sql does not "
                                         "parse as") for error in raised.value.errors), raised.value.errors


def test_a_sql_source_in_spark_sql(spark, registry, small_data, tmp_path):
    # Backquoted identifiers are Spark SQL, not DuckDB SQL.
    spec = ("sources:\n  paid_leads:\n    sql: SELECT `lead_id`, `created_at`, `channel` FROM `leads` "
            "WHERE `channel` IN ('ppc', 'paid_social')\n    time: created_at\n    dimensions: [channel]\n"
            "kpis:\n  paid_leads_n: {formula: count(paid_leads)}\n")
    root = write_project(tmp_path / "p", {"adapter": "spark", "data": str(small_data)}, {"extra.yaml": spec})
    with open_with(registry, root) as project:
        rows = project.evaluate(["paid_leads_n", "new_contacts"], by=["channel"]).to_dicts()
    counts = {row["channel"]: (row["paid_leads_n"], row["new_contacts"]) for row in rows}
    # paid_leads has no email row: that row is new_contacts' alone, paid_leads_n's cell is empty
    assert counts["ppc"][0] == counts["ppc"][1] > 0 and counts["email"][0] is None


def test_a_failing_query_is_a_clear_query_error(example):
    connection = example[0].connection()
    with pytest.raises(QueryFailed) as raised:
        connection.execute(sqlglot.parse_one("SELECT nope FROM leads"))
    message = str(raised.value)
    assert message.startswith("the query failed in Spark (active session, data folder ")
    assert "UNRESOLVED_COLUMN" in message and "nope" in message and "\n" not in message
    assert raised.value.exit_code == 4
    with pytest.raises(QueryFailed, match=r"the query failed in Spark .*: .*lead 7 is bad"):  # while the job runs
        connection.execute(sqlglot.parse_one("SELECT RAISE_ERROR('lead 7 is bad') AS x FROM leads WHERE lead_id = 7",
                                             read="spark"))
    with pytest.raises(QueryFailed, match=r"TABLE_OR_VIEW_NOT_FOUND.*no_table"):
        connection.execute(sqlglot.parse_one("SELECT * FROM no_table"))
    assert connection.execute(sqlglot.parse_one("SELECT COUNT(*) AS n FROM leads")).rows[0][0] > 1000


def test_settings_errors(spark, registry, tmp_path):
    cases = [({"adapter": "spark", "schema": "x"}, WarehouseError, "unknown Spark setting.s.: schema"),
             ({"adapter": "spark", "master": "local[1]", "remote": "sc://h:1"}, WarehouseError, "cannot both be set"),
             ({"adapter": "spark", "remote": "http://h"}, WarehouseError, "must be a Spark Connect URL"),
             ({"adapter": "spark", "config": ["a"]}, WarehouseError, "'config' must be a mapping"),
             ({"adapter": "spark", "data": "nowhere"}, ConnectionFailed, "the data folder .*nowhere' does not exist"),
             ({"adapter": "spark", "database": "no_such_db"}, ConnectionFailed,
              "cannot use the Spark database 'no_such_db'.*SCHEMA_NOT_FOUND"),
             ({"adapter": "spark", "database": "x; DROP"}, WarehouseError, "is not a database name"),
             ({"adapter": "spark", "config": {"spark.executor.memory": "3g"}}, ConnectionFailed,
              "cannot set the Spark configuration 'spark.executor.memory' on the running Spark application")]
    for n, (warehouse, error, message) in enumerate(cases):
        root = write_project(tmp_path / f"p{n}", warehouse)
        with pytest.raises(error, match=message):
            open_with(registry, root).connection()
    with pytest.raises(WarehouseError, match="is not a Spark URL"):
        KpiProject(load_project(root), warehouse="spark:nowhere", registry=registry).connection()
    root = write_project(tmp_path / "cfg", {"adapter": "spark", "data": str(DATA_DIR),
                                            "config": {"spark.sql.shuffle.partitions": 3}})
    with open_with(registry, root) as project:  # runtime settings go to the adapter's own session
        assert project.connection().session.conf.get("spark.sql.shuffle.partitions") == "3"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "4"


#: Runs command lines one after the other in one process, with DuckDB and Spark registered as in
#: make_registry() (whatever entry points the installed metadata has).
CLI_SCRIPT = """
import sys
import kpi_engine.adapters.duckdb, kpi_engine.adapters.spark
from kpi_engine import engine
from kpi_engine.cli import cli
from kpi_engine.plugins import Registry

registry = Registry(load_entry_points=False)
registry.register(kpi_engine.adapters.duckdb, "duckdb")
registry.register(kpi_engine.adapters.spark, "spark")
engine.default_registry = lambda: registry
from pyspark import SparkContext
commands = " ".join(sys.argv[1:]).split(" :: ")  # one command line after the other, in this process
for args in (command.split() for command in commands):
    try:
        cli.main(args, prog_name="kpi-engine")
    except SystemExit as done:
        print(f"exit={done.code} running={SparkContext._active_spark_context is not None}", flush=True)
"""


def test_the_command_line_starts_and_stops_its_own_spark(spark, small_data, tmp_path):
    # A fresh process, as a user runs kpi-engine: no Spark is running, the adapter starts one
    # (local[1], UTC), and stops it when the command is done.
    spec = ("sources:\n  prospects: {table: prospects, time: created_at}\n"
            "kpis:\n  prospects_n: {formula: count(prospects)}\n")
    root = write_project(tmp_path / "p", {"adapter": "spark", "master": "local[1]", "data": str(small_data),
                                          "config": {"spark.sql.shuffle.partitions": 2,
                                                     "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}},
                         {"extra.yaml": spec})
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    done = subprocess.run([sys.executable, "-c", CLI_SCRIPT, "evaluate", str(root), "prospects_n", "::",
                           "evaluate", str(root), "cost_per_lead", "--by", "channel", "--format", "csv"],
                          capture_output=True, text=True, timeout=300, cwd=workdir)
    lines = done.stdout.splitlines()
    assert lines[0] == "exit=1 running=False", done.stdout + done.stderr  # stopped after the command ...
    assert lines[1] == "channel,cost_per_lead,complete"
    assert len(lines) > 5 and lines[-1] == "exit=0 running=False", done.stdout + done.stderr  # ... and restarted
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "table 'prospects' does not exist in the warehouse." in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "SQLQueryContextLogger" not in done.stderr
    assert list(workdir.iterdir()) == []  # no spark-warehouse/ left in the current directory


def test_urls_and_settings_parsing():
    assert parse_url("spark://10.0.0.5:7077") == {"master": "spark://10.0.0.5:7077"}
    assert parse_url("spark:local[4]") == {"master": "local[4]"}
    assert parse_url("spark://local[*]") == {"master": "local[*]"}
    assert parse_url("sc://spark.example.com:15002/;token=abc") == {"remote": "sc://spark.example.com:15002/;token=abc"}
    assert engine.warehouse_settings("sc://h:15002") == ("sc", {"url": "sc://h:15002"})
    assert make_registry().adapter("sc") is SparkAdapter  # the Spark Connect scheme selects Spark
    assert spark_settings({"url": "sc://h:15002", "app_name": "kpis", "config": {"a.b": True, "c": 2}}) == {
        "remote": "sc://h:15002", "app_name": "kpis", "config": {"a.b": "true", "c": "2"}}
    with pytest.raises(WarehouseError, match="query_timeout"):
        spark_settings({"query_timeout": "soon"})


def test_missing_pyspark_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(ConnectionFailed, match=r"pip install 'kpi-engine\[spark\]'"):
        SparkAdapter.connect({"master": "local[1]"}, tmp_path)


def test_no_java_is_a_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("pyspark")
    monkeypatch.setattr(kpi_engine.adapters.spark, "_active_session", lambda remote: None)  # as in a fresh process
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no_jdk"))
    with pytest.raises(ConnectionFailed, match="Spark needs Java, and none was found"):
        SparkAdapter.connect({"master": "local[1]"}, tmp_path)


# --- compile, timeouts, streaming, threads ---------------------------------------------------------------


def test_compile_dialect_spark_parses_back_and_runs_as_printed(spark, cli_registry, example, tmp_path):
    on_spark, _ = example
    root = on_spark.project.config.root
    kpis = ["cost_per_lead", "revenue_growth_rate", "mrr", "customer_retention_rate", "lead_to_opportunity_rate"]
    result = run("compile", str(root), *kpis, "--by", "channel", "--grain", "month", "--from", "2025-01-01",
                 "--to", "2025-07-01", "--dialect", "spark")
    assert result.exit_code == 0, result.stderr
    sql = result.stdout.strip()
    parsed = sqlglot.parse_one(sql, read="spark")
    assert isinstance(parsed, exp.Query)
    assert {t.name for t in parsed.find_all(exp.Table)} >= {"leads", "ad_spend", "orders", "subscriptions"}
    assert "AS DOUBLE) /" in sql and ("IS NOT DISTINCT FROM" in sql or "<=>" in sql)
    printed = [tuple(row) for row in on_spark.connection().session.sql(sql.rstrip(";")).collect()]
    evaluated = on_spark.evaluate(kpis, by=["channel"], grain="month", start="2025-01-01", end="2025-07-01")
    # the printed query computes the KPIs; evaluate adds each row's "complete" flag
    assert len(printed) > 30 and same_rows(printed, [row[:-1] for row in evaluated.rows])
    # Offline, from the DuckDB example project: the Spark adapter's prepare() still applies.
    offline = run("compile", str(ROOT / "examples" / "marketing"), "ltv_to_cac", "--dialect", "spark", "--offline")
    assert offline.exit_code == 0, offline.stderr
    assert "AS DOUBLE) /" in offline.stdout
    assert isinstance(sqlglot.parse_one(offline.stdout.strip(), read="spark"), exp.Query)


def test_evaluate_from_the_command_line(spark, cli_registry, example):
    root = example[0].project.config.root
    result = run("evaluate", str(root), "cost_per_lead", "nps", "--by", "channel", "--grain", "quarter",
                 "--format", "csv")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "period,channel,cost_per_lead,nps,complete" and len(lines) > 20


def test_query_timeout_cancels_the_spark_jobs(spark, registry, small_data, tmp_path):
    root = write_project(tmp_path / "p", {"adapter": "spark", "data": str(small_data), "query_timeout": 1})
    # About 1.6e9 joined rows: a minute or more on two cores, if nothing cancelled it.
    slow = sqlglot.parse_one("SELECT COUNT(*) AS n FROM RANGE(40000) AS a CROSS JOIN RANGE(40000) AS b "
                             "WHERE (a.id + b.id) % 7 = 3", read="spark")
    tracker = spark.sparkContext.statusTracker()
    with open_with(registry, root) as project:
        connection = project.connection()
        for _ in range(2):  # the first time, the timeout may come while Spark still plans the query
            started = time.monotonic()
            with pytest.raises(QueryTimeout, match="ran longer than the 1 s timeout and its Spark jobs were cancelled"
                               ) as raised:
                connection.execute(slow)
            assert time.monotonic() - started < 20 and raised.value.exit_code == 5
        deadline = time.monotonic() + 30
        while tracker.getActiveJobsIds() and time.monotonic() < deadline:  # the jobs are gone from Spark
            time.sleep(0.2)
        assert tracker.getActiveJobsIds() == []
        assert connection.session.sql("SELECT COUNT(*) AS n FROM ad_spend").collect()[0][0] > 1000  # still usable


def test_stream_gives_the_rows_in_order_in_batches(example):
    on_spark, _ = example
    query, batches = on_spark.stream(["new_contacts", "cost_per_lead"], by=["channel"], grain="month", batch_size=25)
    batches = list(batches)
    assert len(batches) > 3 and all(len(batch) == 25 for batch in batches[:-1]) and 0 < len(batches[-1]) <= 25
    rows = [row for batch in batches for row in batch]
    assert same_rows(rows, on_spark.evaluate(["new_contacts", "cost_per_lead"], by=["channel"], grain="month").rows)
    assert [c.name for c in query.columns] == ["period", "channel", "new_contacts", "cost_per_lead", "complete"]


def test_concurrent_evaluations_from_threads(example):
    on_spark, _ = example
    requests = [(["new_contacts"], "month"), (["revenue", "roi"], "quarter"), (["nps"], "year"), (["mrr"], "month")]
    expected = [on_spark.evaluate(kpis, grain=grain).rows for kpis, grain in requests]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            kpis, grain = requests[i]
            results[i] = on_spark.evaluate(kpis, grain=grain).rows
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert all(same_rows(results[i], expected[i]) for i in range(len(requests)))


def test_spark_passes_the_conformance_kit(spark, registry, tmp_path):
    from kpi_engine.testing import assert_conformance, fixture_dir

    assert_conformance({"adapter": "spark", "data": str(fixture_dir())}, tmp_path / "project", registry=registry)
