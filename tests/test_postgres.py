"""The PostgreSQL adapter against a real, throwaway PostgreSQL server (tests/pg.py).

The example warehouse (examples/marketing/data/*.csv) is loaded into PostgreSQL with proper
types; the marketing library evaluated there must give what DuckDB gives on the same CSV files
and what plain Python (tests/reference.py) computes. Then: connection settings and ${ENV}
interpolation, clear errors that never show the password, statement_timeout, read-only
sessions and concurrent use from threads.

Skipped when no PostgreSQL server binaries are installed, unless KPI_ENGINE_REQUIRE_POSTGRES
is set (CI), where that is a failure.
"""

pytest_plugins = ["pg"]

import datetime as dt  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import sqlglot  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from sqlglot import exp  # noqa: E402

import reference  # noqa: E402
from kpi_engine.adapters import postgres as pg_adapter  # noqa: E402
from kpi_engine.cli import cli  # noqa: E402
from kpi_engine.engine import open_project  # noqa: E402
from kpi_engine.errors import UsageError, WarehouseError  # noqa: E402
from kpi_engine.plugins import Registry  # noqa: E402
from kpi_engine.redaction import redact  # noqa: E402

DATA_DIR = reference.DEFAULT_DATA_DIR
EXAMPLE = DATA_DIR.parent
PASSWORD_ENV = "KPI_TEST_PG_PASSWORD"

#: The example warehouse's tables with PostgreSQL types (the CSV header gives the column order).
TABLES = {
    "ad_spend": "spend_date date NOT NULL, channel text, campaign text, spend numeric(12,2)",
    "customers": "customer_id integer PRIMARY KEY, lead_id integer, acquired_at date, channel text, industry text, "
                 "plan text, churned_at date",
    "email_list": "snapshot_date date, subscribers integer, new_subscribers integer, unsubscribes integer, "
                  "channel text",
    "email_sends": "send_id integer PRIMARY KEY, sent_at timestamp, campaign text, contact_id integer, "
                   "delivered boolean, inbox boolean, opened boolean, clicked boolean, unsubscribed boolean, "
                   "bounced boolean, channel text",
    "leads": "lead_id integer PRIMARY KEY, created_at timestamp NOT NULL, channel text, campaign text, "
             "industry text, company_size text, is_qualified boolean, mql_at timestamp, sql_at timestamp, "
             "opportunity_at timestamp, customer_at timestamp, customer_id integer",
    "nps_responses": "response_id integer PRIMARY KEY, responded_at timestamp, customer_id integer, channel text, "
                     "score integer",
    "opportunities": "opportunity_id integer PRIMARY KEY, lead_id integer, created_at timestamp, channel text, "
                     "amount numeric(12,2), stage text, closed_at timestamp",
    "orders": "order_id integer PRIMARY KEY, customer_id integer, ordered_at timestamp, amount numeric(12,2), "
              "status text, product text",
    "social_followers": "snapshot_date date, network text, followers integer, channel text",
    "social_posts": "post_id integer PRIMARY KEY, posted_at timestamp, network text, channel text, likes integer, "
                    "comments integer, shares integer, saves integer, clicks integer",
    "subscriptions": "snapshot_date date, customer_id integer, plan text, mrr numeric(12,2), channel text",
    "web_sessions": "session_id integer PRIMARY KEY, started_at timestamp, channel text, landing_page text, "
                    "pages_viewed integer, duration_seconds integer, is_bounce boolean",
}
EXAMPLE_KPIS = {"cost_per_lead": reference.cost_per_lead, "close_rate": reference.close_rate,
                "nps": reference.nps}
LIBRARY_KPIS = ["revenue_growth_rate", "customer_lifetime_value", "mrr", "lead_to_opportunity_rate",
                "repeat_customer_revenue", "time_to_conversion_days"]


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warehouse(pg_server):
    """The example warehouse, loaded into the throwaway database with COPY FROM STDIN."""
    from psycopg import sql

    rows = reference.load(DATA_DIR)
    with pg_server.connect() as connection:
        for table, columns in TABLES.items():
            csv_file = DATA_DIR / f"{table}.csv"
            header = csv_file.open(encoding="utf-8").readline().strip().split(",")
            connection.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))
            connection.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), sql.SQL(columns)))
            copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, header)))
            with connection.cursor() as cursor, cursor.copy(copy) as stream:
                stream.write(csv_file.read_bytes())
            count = connection.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
            assert count == len(rows[table]) > 0, table
    return pg_server


def write_project(root: Path, warehouse_yaml: str, files: dict[str, str] | None = None) -> Path:
    """A project that includes the marketing library and reads the given warehouse."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "kpi_engine.yaml").write_text(f"name: pg_project\nwarehouse: {warehouse_yaml}\n"
                                          "include: [builtin:marketing]\n")
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    return root


def mapping_yaml(server, **overrides) -> str:
    settings = {"adapter": "postgres", "host": server.host, "port": server.port, "dbname": server.dbname,
                "user": server.user, "password": "${" + PASSWORD_ENV + "}", **overrides}
    return "{" + ", ".join(f"{key}: {json.dumps(value)}" for key, value in settings.items() if value is not None) + "}"


@pytest.fixture
def password_env(pg_server, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, pg_server.password)
    return pg_server.password


@pytest.fixture(scope="module")
def pg_project(warehouse, tmp_path_factory):
    """The marketing library on PostgreSQL, connected through a mapping with ${KPI_TEST_PG_PASSWORD}."""
    root = write_project(tmp_path_factory.mktemp("pg") / "project", mapping_yaml(warehouse))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PASSWORD_ENV, warehouse.password)
        project = open_project(root)
        project.connection()  # the variable is read when the connection opens
    with project:
        yield project


@pytest.fixture(scope="module")
def duck_project():
    """The example project: the same library and data on DuckDB."""
    with open_project(EXAMPLE) as project:
        yield project


def keyed(result, by_month: bool, by_channel: bool) -> dict[tuple, dict]:
    rows = {}
    for row in result.to_dicts():
        key = ((row["period"],) if by_month else ()) + ((row["channel"],) if by_channel else ())
        assert key not in rows, key
        rows[key] = row
    return rows


def assert_same(actual: dict[tuple, dict], expected: dict[tuple, dict], names) -> int:
    """The same keys and, KPI by KPI, the same values (floating-point tolerance only)."""
    assert set(actual) == set(expected)
    compared = 0
    for key, row in expected.items():
        for name in names:
            want, got = row[name], actual[key][name]
            if want is None:
                assert got is None, (name, key, got)
            else:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (name, key)
                compared += 1
    return compared


# --- the same numbers as DuckDB and plain Python -------------------------------------------------------


@pytest.mark.parametrize("by_month, by_channel", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("start, end", [(None, None), ("2025-01-01", "2025-07-01")])
def test_example_kpis_equal_duckdb_and_plain_python(pg_project, duck_project, by_month, by_channel, start, end):
    options = dict(by=["channel"] if by_channel else [], grain="month" if by_month else None, start=start, end=end)
    on_pg = keyed(pg_project.evaluate(list(EXAMPLE_KPIS), **options), by_month, by_channel)
    on_duckdb = keyed(duck_project.evaluate(list(EXAMPLE_KPIS), **options), by_month, by_channel)
    assert assert_same(on_pg, on_duckdb, EXAMPLE_KPIS) > (100 if by_month and by_channel else 2)
    data = reference.load(DATA_DIR)
    for name, compute in EXAMPLE_KPIS.items():
        expected = compute(data, by_channel=by_channel, by_month=by_month, start=start, end=end)
        assert set(expected) <= set(on_pg)
        for key, row in on_pg.items():
            value = expected.get(key)
            assert row[name] == (None if value is None else pytest.approx(value, rel=1e-12)), (name, key)


def test_periods_are_dates_and_values_plain_numbers(pg_project):
    rows = pg_project.evaluate(["new_contacts", "cost_per_lead"], by=["channel"], grain="month").to_dicts()
    assert {type(r["period"]) for r in rows} == {dt.date}
    counts = [r["new_contacts"] for r in rows if r["new_contacts"] is not None]  # None: not its row
    assert {type(value) for value in counts} == {int}  # a count (values.py); numeric and Decimal never leak out
    assert {type(r["cost_per_lead"]) for r in rows if r["cost_per_lead"] is not None} == {float}
    assert min(r["period"] for r in rows) == dt.date(2024, 1, 1)


@pytest.mark.parametrize("grain", ["month", "quarter"])
def test_library_kpis_equal_duckdb(pg_project, duck_project, grain):
    # previous (growth), cumulative and ratios (LTV), month-end snapshots (MRR), per-entity
    # conditions (lead to opportunity, repeat revenue) and day arithmetic (time to conversion).
    options = dict(by=["channel"], grain=grain)
    on_pg = keyed(pg_project.evaluate(LIBRARY_KPIS, **options), True, True)
    on_duckdb = keyed(duck_project.evaluate(LIBRARY_KPIS, **options), True, True)
    assert assert_same(on_pg, on_duckdb, LIBRARY_KPIS) > 100
    for name in LIBRARY_KPIS:
        assert any(row[name] not in (None, 0) for row in on_pg.values()), name


def test_every_library_kpi_runs_on_postgres_like_on_duckdb(pg_project, duck_project):
    names = [name for name in duck_project.project.kpis if name in pg_project.project.kpis]
    assert len(names) >= 39
    on_pg = keyed(pg_project.evaluate(names, grain="month", start="2024-07-01", end="2025-07-01"), True, False)
    on_duckdb = keyed(duck_project.evaluate(names, grain="month", start="2024-07-01", end="2025-07-01"), True, False)
    assert assert_same(on_pg, on_duckdb, names) > 300


def test_least_and_greatest_of_a_null_are_null_as_on_duckdb(pg_project, duck_project):
    # PostgreSQL's own LEAST/GREATEST skip nulls: least(null, 0) would be 0 there.
    formulas = ["least(ad_spend_total / nullif(0 * new_contacts, 0), 0)", "greatest(close_rate, 1, 0 / 0)",
                "least(close_rate, 1000)"]
    on_pg = pg_project.evaluate(formulas=formulas, by=["channel"]).to_dicts()
    assert on_pg == duck_project.evaluate(formulas=formulas, by=["channel"]).to_dicts()
    assert all(row["formula"] is None and row["formula_2"] is None for row in on_pg)
    assert all(row["formula_3"] is not None for row in on_pg)


def test_round_runs_on_postgres(pg_project, duck_project):
    import psycopg

    with pg_project.connection().session() as raw:  # why the adapter rewrites ROUND (see prepare)
        with pytest.raises(psycopg.errors.UndefinedFunction, match=r"round\(double precision, integer\)"):
            raw.execute("SELECT ROUND(CAST(1 AS DOUBLE PRECISION) / 3, 2)")
    formulas = ["round(cost_per_lead, 2)", "round(ad_spend_total / 7, 1) + round(close_rate)"]
    on_pg = pg_project.evaluate(formulas=formulas, by=["channel"]).to_dicts()
    on_duckdb = duck_project.evaluate(formulas=formulas, by=["channel"]).to_dicts()
    assert on_pg == [{k: pytest.approx(v) if isinstance(v, float) else v for k, v in row.items()}
                     for row in on_duckdb]


def test_prepare_rounds_on_numeric():
    query = sqlglot.parse_one("SELECT ROUND(a / b, 2) AS r, ROUND(c) AS s FROM t", read="postgres")
    prepared = pg_adapter.PostgresAdapter.prepare(query)
    assert prepared.sql(dialect="postgres") == "SELECT ROUND(CAST(a / b AS DECIMAL), 2) AS r, ROUND(CAST(c AS DECIMAL)) AS s FROM t"
    assert pg_adapter.PostgresAdapter.prepare(prepared).sql(dialect="postgres") == prepared.sql(dialect="postgres")
    assert query.sql(dialect="postgres") == "SELECT ROUND(a / b, 2) AS r, ROUND(c) AS s FROM t"  # not modified


# --- describing relations -------------------------------------------------------------------------------


def test_columns_and_their_types(pg_project):
    connection = pg_project.connection()
    leads = connection.columns(exp.to_table("leads"))
    assert leads["lead_id"] == "integer" and leads["created_at"] == "timestamp without time zone"
    assert leads["is_qualified"] == "boolean" and leads["channel"] == "text"
    assert connection.columns(exp.to_table("orders"))["amount"] == "numeric"
    assert connection.columns(exp.to_table("ad_spend"))["spend_date"] == "date"
    subquery = sqlglot.parse_one("SELECT count(*) AS n, 1.5::float8 AS x FROM leads", read="postgres").subquery("q")
    assert connection.columns(subquery) == {"n": "bigint", "x": "double precision"}
    assert connection.columns(exp.to_table("no_such_table")) is None
    assert connection.columns(exp.to_table("no_schema.leads")) is None
    # The connection is still usable after those errors.
    assert connection.execute(sqlglot.parse_one("SELECT 1 AS one")).rows == [(1,)]
    with pytest.raises(WarehouseError, match='cannot describe the source.s sql in PostgreSQL: column "nope"'):
        connection.columns(sqlglot.parse_one("SELECT nope FROM leads").subquery("y"))


def test_a_missing_table_is_named_by_validate(warehouse, password_env, tmp_path):
    spec = ("sources:\n  prospects: {table: prospects, time: created_at}\n"
            "kpis:\n  prospects_n: {formula: count(prospects)}\n")
    root = write_project(tmp_path / "p", mapping_yaml(warehouse), {"extra.yaml": spec})
    result = run("validate", str(root))
    assert result.exit_code == 1
    assert "extra.yaml:2:22 (source 'prospects'): table 'prospects' does not exist in the warehouse." in result.stderr
    evaluate = run("evaluate", str(root), "prospects_n")
    assert evaluate.exit_code == 1 and "table 'prospects' does not exist" in evaluate.stderr
    assert run("evaluate", str(root), "cost_per_lead").exit_code == 0  # the other sources still work


def test_validate_passes_on_the_example_warehouse(warehouse, password_env, tmp_path):
    root = write_project(tmp_path / "p", mapping_yaml(warehouse))
    result = run("validate", str(root))
    assert result.exit_code == 0, result.stderr


# --- connecting --------------------------------------------------------------------------------------------


def one_value(root: Path, kpi: str = "new_contacts"):
    with open_project(root) as project:
        return project.evaluate([kpi]).to_dicts()[0][kpi]


def test_url_with_an_environment_variable_for_the_password(warehouse, password_env, tmp_path):
    # The password has '/', '@' and ':' in it: variables are replaced after the URL is parsed.
    assert set("/@:") <= set(warehouse.password)
    for scheme in ("postgresql", "postgres", "postgres+psycopg"):
        url = f"{scheme}://{warehouse.user}:${{{PASSWORD_ENV}}}@{warehouse.host}:{warehouse.port}/{warehouse.dbname}"
        root = write_project(tmp_path / scheme, url)
        assert one_value(root) == len(reference.load(DATA_DIR)["leads"])


def test_url_from_one_environment_variable_and_options(warehouse, monkeypatch, tmp_path):
    monkeypatch.setenv("KPI_TEST_PG_URL", warehouse.url + "?sslmode=disable&statement_timeout=30")
    root = write_project(tmp_path / "p", '"${KPI_TEST_PG_URL}"')  # the whole URL in one variable
    assert one_value(root) > 0
    root = write_project(tmp_path / "q", "{adapter: postgres, url: '${KPI_TEST_PG_URL}'}")
    with open_project(root) as project:
        assert project.evaluate(["new_contacts"]).to_dicts()[0]["new_contacts"] > 0
        assert project.connection().statement_timeout == 30


def test_mapping_with_environment_variables_everywhere(warehouse, password_env, monkeypatch, tmp_path):
    monkeypatch.setenv("KPI_TEST_PG_HOST", warehouse.host)
    monkeypatch.setenv("KPI_TEST_PG_PORT", str(warehouse.port))
    monkeypatch.setenv("KPI_TEST_PG_DB", warehouse.dbname)
    monkeypatch.setenv("KPI_TEST_PG_USER", warehouse.user)
    yaml = mapping_yaml(warehouse, host="${KPI_TEST_PG_HOST}", port="${KPI_TEST_PG_PORT}",
                        dbname="${KPI_TEST_PG_DB}", user="${KPI_TEST_PG_USER}", sslmode="disable",
                        connect_timeout=5, statement_timeout=20)
    root = write_project(tmp_path / "p", yaml)
    assert one_value(root, "customers_won") > 0


def test_mapping_keys_override_the_url(warehouse, password_env, tmp_path):
    url = f"postgresql://{warehouse.user}@{warehouse.host}:1/wrong_db"
    root = write_project(tmp_path / "p", "{adapter: postgres, url: '" + url + "', port: " + str(warehouse.port)
                         + ", dbname: " + warehouse.dbname + ", password: '${" + PASSWORD_ENV + "}'}")
    assert one_value(root) > 0


def test_password_file_and_pgpassword(warehouse, monkeypatch, tmp_path):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    (tmp_path / "secret").write_text(warehouse.password + "\n")
    root = write_project(tmp_path / "p", mapping_yaml(warehouse, password=None, password_file="../secret"))
    assert one_value(root) > 0
    monkeypatch.setenv("PGPASSWORD", warehouse.password)  # libpq's own variable
    root = write_project(tmp_path / "q", mapping_yaml(warehouse, password=None))
    assert one_value(root) > 0


def test_an_unset_variable_is_named_without_any_value(warehouse, monkeypatch, tmp_path):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    root = write_project(tmp_path / "p", mapping_yaml(warehouse))
    result = run("evaluate", str(root), "new_contacts")
    assert result.exit_code == 1
    assert f"the environment variable {PASSWORD_ENV} is not set (used in the warehouse setting 'password')" \
        in result.stderr
    url = f"postgresql://{warehouse.user}:${{{PASSWORD_ENV}}}@{warehouse.host}:{warehouse.port}/{warehouse.dbname}"
    with pytest.raises(WarehouseError, match=f"{PASSWORD_ENV} is not set"):
        one_value(write_project(tmp_path / "q", url))


def test_wrong_password_exit_code_3_and_no_password_in_the_output(warehouse, monkeypatch, tmp_path):
    wrong = "Wr0ng/Secret@pw"
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    root = write_project(tmp_path / "p", mapping_yaml(warehouse))
    result = run("evaluate", str(root), "cost_per_lead")
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: PostgreSQL authentication failed for user 'kpi_tester'")
    assert "Traceback" not in result.output
    for secret in (wrong, warehouse.password, "Wr0ng"):
        assert secret not in result.output and secret not in result.stderr
    # The same through --warehouse with the password in the URL, and through the Python API.
    url = f"postgresql://{warehouse.user}:Wr0ngPassw0rd@{warehouse.host}:{warehouse.port}/{warehouse.dbname}"
    result = run("evaluate", str(root), "cost_per_lead", "--warehouse", url)
    assert result.exit_code == 3 and "authentication failed" in result.stderr
    assert "Wr0ngPassw0rd" not in result.stderr and "Wr0ngPassw0rd" not in result.output
    with pytest.raises(WarehouseError, match="authentication failed") as raised:
        open_project(root).connection()
    assert wrong not in str(raised.value) and wrong not in repr(raised.value.args)


def test_unreachable_server(warehouse, password_env, tmp_path):
    from pg import free_port

    root = write_project(tmp_path / "p", mapping_yaml(warehouse, port=free_port(), connect_timeout=3))
    started = time.monotonic()
    result = run("evaluate", str(root), "cost_per_lead")
    assert result.exit_code == 3
    assert "cannot reach the PostgreSQL server at 127.0.0.1:" in result.stderr
    assert "Connection refused" in result.stderr and warehouse.password not in result.stderr
    assert time.monotonic() - started < 10


def test_a_database_that_does_not_exist(warehouse, password_env, tmp_path):
    root = write_project(tmp_path / "p", mapping_yaml(warehouse, dbname="no_such_db"))
    with pytest.raises(WarehouseError, match="the PostgreSQL database 'no_such_db' does not exist"):
        one_value(root)


def test_unknown_and_invalid_settings(warehouse, password_env, tmp_path):
    root = write_project(tmp_path / "p", mapping_yaml(warehouse, schema="public"))
    with pytest.raises(WarehouseError, match="unknown PostgreSQL setting"):
        one_value(root)
    root = write_project(tmp_path / "q", mapping_yaml(warehouse, statement_timeout="soon"))
    with pytest.raises(WarehouseError, match="'statement_timeout' must be a number of seconds above 0"):
        one_value(root)
    for n, value in enumerate(["inf", "nan", "1.0e+300", "604801", "-1", "true"]):
        root = write_project(tmp_path / f"t{n}", mapping_yaml(warehouse, statement_timeout=value))
        with pytest.raises(WarehouseError, match="at most 604,800 \\(one week\\)"):
            one_value(root)
    for n, url in enumerate(["postgresql://u:Secr3tPw%zz@h/db", "postgresql://u:Secr3t@Pw@h/db?nope=1",
                             "mysql://u:Secr3tPw@h/db"]):
        root = write_project(tmp_path / f"u{n}", "{adapter: postgres, url: '" + url + "'}")
        with pytest.raises(WarehouseError, match="URL is not (valid|a PostgreSQL URL)") as raised:
            one_value(root)
        assert "Secr3t" not in str(raised.value)


def test_missing_psycopg_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    with pytest.raises(WarehouseError, match=r"pip install 'kpi-engine\[postgres\]'"):
        pg_adapter.PostgresAdapter.connect({"url": "postgresql://u:pw@localhost/db"}, tmp_path)


def test_messages_are_scrubbed_of_passwords():
    text = 'failed for postgresql://bob:s3cr@t/x@db:5432/app, password=hunter2 user=bob password = \'a b\''
    scrubbed = redact(text, ["topsecret"])
    assert "s3cr" not in scrubbed and "hunter2" not in scrubbed and "a b" not in scrubbed
    assert "postgresql://bob:***@db:5432/app" in scrubbed
    assert redact("the topsecret leaked", ["topsecret"]) == "the *** leaked"


def test_registered_under_both_url_schemes():
    from importlib import metadata

    entry_points = {ep.name: ep for ep in metadata.entry_points(group="kpi_engine")}
    assert entry_points["postgres"].value == "kpi_engine.adapters.postgres"
    registry = Registry()
    assert registry.adapter("postgres") is pg_adapter.PostgresAdapter
    assert issubclass(registry.adapter("postgresql"), pg_adapter.PostgresAdapter)
    assert registry.adapter("postgresql").dialect == "postgres"


# --- timeouts, read-only, threads ---------------------------------------------------------------------------


SLOW = """
sources:
  slow:
    sql: select pg_sleep(5) as x, now() as t
    time: t
kpis:
  slow_n: {formula: count(slow)}
"""


def test_statement_timeout_cancels_a_slow_query(warehouse, password_env, tmp_path):
    root = write_project(tmp_path / "p", mapping_yaml(warehouse, statement_timeout=0.5), {"slow.yaml": SLOW})
    with open_project(root) as project:
        started = time.monotonic()
        with pytest.raises(WarehouseError) as raised:
            project.evaluate(["slow_n"])
        assert time.monotonic() - started < 4
        message = str(raised.value)
        assert message.startswith("PostgreSQL cancelled the query after the statement_timeout of 0.5 s")
        assert "statement timeout" in message and "Raise 'statement_timeout'" in message
        # The session is still usable.
        assert project.evaluate(["new_contacts"]).to_dicts()[0]["new_contacts"] > 0
    result = run("evaluate", str(root), "slow_n")
    assert result.exit_code == 5 and "cancelled the query" in result.stderr


# A query that sleeps 30 s in the server, for the administrator to cancel or end.
SLEEPY = SLOW.replace("pg_sleep(5)", "pg_sleep(30)")
SLEEPING = ("SELECT pid FROM pg_stat_activity WHERE application_name = 'kpi-engine' AND state = 'active' "
            "AND query ILIKE '%pg_sleep(30)%'")


def _as_administrator(server, action: str, seen: list) -> threading.Thread:
    """A thread that waits for kpi-engine's pg_sleep query, then runs ``action`` (pg_cancel_backend
    or pg_terminate_backend) on it, then watches 3 s more for the query to be started again.
    ``seen`` collects the pid of every session it saw running the query."""
    def work() -> None:
        with server.admin_connect() as admin:
            deadline = time.monotonic() + 30
            while not seen and time.monotonic() < deadline:
                seen.extend(row[0] for row in admin.execute(SLEEPING).fetchall())
                time.sleep(0.05)
            if seen:
                admin.execute(f"SELECT {action}(%s)", (seen[0],))
                watch_until = time.monotonic() + 3
                while time.monotonic() < watch_until:
                    seen.extend(pid for (pid,) in admin.execute(SLEEPING).fetchall() if pid != seen[0])
                    time.sleep(0.05)

    thread = threading.Thread(target=work)
    thread.start()
    return thread


@pytest.mark.parametrize("action, code, message", [
    ("pg_terminate_backend", 3, "Error: PostgreSQL ended the session while the query ran: terminating connection "
                                "due to administrator command. The query was not run again. An administrator or "
                                "another session ended it (pg_terminate_backend)"),
    ("pg_cancel_backend", 4, "Error: PostgreSQL cancelled the query before it finished: canceling statement due to "
                             "user request. It was not run again. An administrator or another session cancelled "
                             "it (pg_cancel_backend)"),
])
def test_a_query_the_server_kills_is_reported_and_never_run_again(warehouse, password_env, tmp_path, action, code,
                                                                   message):
    # A statement_timeout is set, far away: a cancel by someone else must not read as a timeout.
    root = write_project(tmp_path / "p", mapping_yaml(warehouse, statement_timeout=120), {"sleepy.yaml": SLEEPY})
    seen: list[int] = []
    administrator = _as_administrator(warehouse, action, seen)
    started = time.monotonic()
    result = run("evaluate", str(root), "slow_n")
    took = time.monotonic() - started
    administrator.join(60)
    assert len(set(seen)) == 1, f"the query ran in {len(set(seen))} sessions: {sorted(set(seen))}"
    assert result.exit_code == code and result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    assert took < 25  # run again, it would have slept 30 s more


def test_an_idle_connection_the_server_dropped_is_replaced_before_the_query(warehouse, password_env, tmp_path,
                                                                            caplog):
    """The one deliberate retry: opening a connection, never re-sending a query. A pooled connection
    the server closed while it was idle is found dead before the query is sent, logged, and
    replaced."""
    import logging

    root = write_project(tmp_path / "p", mapping_yaml(warehouse))
    with open_project(root) as project:
        before = project.evaluate(["new_contacts"]).to_dicts()
        with warehouse.admin_connect() as admin:
            ended = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE application_name = 'kpi-engine' AND state = 'idle'").fetchall()
        assert ended and all(ok for (ok,) in ended)
        with caplog.at_level(logging.INFO, logger="kpi_engine.postgres"):
            after = project.evaluate(["new_contacts"]).to_dicts()
    assert after == before and before[0]["new_contacts"] > 0
    assert any("a pooled PostgreSQL connection no longer works" in record.getMessage() and
               "opening a new one" in record.getMessage() for record in caplog.records)


def test_sessions_are_read_only(pg_project, warehouse):
    connection = pg_project.connection()
    before = connection.execute(sqlglot.parse_one("SELECT count(*) AS n FROM leads")).rows
    writes = ["CREATE TABLE intruder (a INT)", "INSERT INTO leads (lead_id, created_at) VALUES (-1, NOW())",
              "WITH gone AS (DELETE FROM leads RETURNING 1) SELECT COUNT(*) FROM gone",
              "UPDATE leads SET channel = 'x'"]
    for sql in writes:
        with pytest.raises(WarehouseError, match="read-only"):
            connection.execute(sqlglot.parse_one(sql, read="postgres"))
    # A query that switches the session back to read-write is rolled back with its transaction.
    connection.execute(sqlglot.parse_one("SELECT set_config('default_transaction_read_only', 'off', false) AS x",
                                         read="postgres"))
    with pytest.raises(WarehouseError, match="read-only"):
        connection.execute(sqlglot.parse_one(writes[0], read="postgres"))
    # Even the raw psycopg connection the adapter uses refuses to write.
    import psycopg

    with connection.session() as raw:
        assert raw.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            raw.execute("DELETE FROM leads")
    assert connection.execute(sqlglot.parse_one("SELECT count(*) AS n FROM leads")).rows == before


REQUESTS = [
    (["cost_per_lead", "close_rate", "nps"], dict(by=["channel"], grain="month")),
    (["mrr", "revenue_growth_rate"], dict(by=["channel"], grain="month")),
    (["customer_lifetime_value", "repeat_customer_revenue"], dict(by=["channel"], grain="quarter")),
    (["lead_to_opportunity_rate", "time_to_conversion_days"], dict(by=["channel"], grain="month")),
    (["email_open_rate", "list_growth_rate"], dict(grain="month")),
    (["bounce_rate", "social_engagement", "follower_growth_rate"], dict(grain="quarter")),
    (["roi", "customer_acquisition_cost"], dict(by=["channel"], start="2025-01-01", end="2025-07-01")),
    (["cost_per_lead"], dict(by=["channel"], grain="week", start="2025-03-01", end="2025-05-01")),
]


def test_parallel_evaluations_from_threads_through_one_project(warehouse, password_env, duck_project, tmp_path):
    root = write_project(tmp_path / "p", mapping_yaml(warehouse, pool_size=3))
    expected = [duck_project.evaluate(kpis, **options).to_dicts() for kpis, options in REQUESTS]
    threads, rounds = 8, 25
    barrier = threading.Barrier(threads)
    failures: list[str] = []
    done = [0] * threads

    with open_project(root) as project:  # fresh: the threads also race to open the connection and describe
        def work(index: int) -> None:
            try:
                barrier.wait()
                for round_ in range(rounds):
                    which = (index + round_) % len(REQUESTS)
                    kpis, options = REQUESTS[which]
                    rows = project.evaluate(kpis, **options).to_dicts()
                    names = [k for k in rows[0] if k not in ("period", "channel")] if rows else kpis
                    if rows != [{k: pytest.approx(v, rel=1e-9, abs=1e-9) if isinstance(v, float) else v
                                 for k, v in row.items()} for row in expected[which]]:
                        failures.append(f"thread {index} round {round_}: {names} differ from DuckDB")
                    done[index] += 1
            except Exception as error:  # reported below
                failures.append(f"thread {index}: {type(error).__name__}: {error}")

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)
    assert not failures, failures[:5]
    assert done == [rounds] * threads


# --- the conformance kit ---------------------------------------------------------------------------

PG_TYPES = {"integer": "bigint", "decimal": "numeric(14, 2)", "text": "text", "boolean": "boolean",
            "date": "date", "timestamp": "timestamp"}


def test_postgres_passes_the_conformance_kit(pg_server, tmp_path):
    from psycopg import sql

    from kpi_engine.testing import TABLES as KIT_TABLES, assert_conformance, fixture_rows

    schema = "conformance"
    with pg_server.connect() as connection:
        connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for table, columns in KIT_TABLES.items():
            target = sql.Identifier(schema, table)
            ddl = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(PG_TYPES[kind]))
                                     for name, kind in columns.items())
            connection.execute(sql.SQL("CREATE TABLE {} ({})").format(target, ddl))
            with connection.cursor() as cursor, cursor.copy(sql.SQL("COPY {} FROM STDIN").format(target)) as copy:
                for row in fixture_rows(table):
                    copy.write_row(row)
    # The library's sources read unqualified tables: point the session at the schema.
    url = f"{pg_server.url}?options=-csearch_path%3D{schema}"
    assert_conformance({"adapter": "postgres", "url": url}, tmp_path / "project")


def test_pinned_session_settings_hold_whatever_pgoptions_says(pg_server, make_project, monkeypatch):
    """PGOPTIONS (like a role's or database's settings) could change how timestamps with a time
    zone are read and how floats come back; the engine's own settings win."""
    third = 1 / 3
    with pg_server.connect() as connection:
        connection.execute("DROP TABLE IF EXISTS pinned_events")
        connection.execute("CREATE TABLE pinned_events (at timestamptz, x double precision)")
        connection.execute("INSERT INTO pinned_events VALUES ('2025-01-31 20:00:00+00', %s)", (third,))
    spec = "sources:\n  e: {table: pinned_events, time: at}\nkpis:\n  total: {formula: sum(e.x)}\n"
    root = make_project({"s.yaml": spec}, config=f"name: t\nwarehouse: '{pg_server.url}'\n")
    monkeypatch.setenv("PGOPTIONS", "-c TimeZone=Asia/Tokyo -c extra_float_digits=-15 -c DateStyle=SQL,DMY "
                                    "-c IntervalStyle=sql_standard")
    with open_project(root) as project:
        result = project.evaluate(["total"], grain="day")
    # 20:00 UTC on 31 January is 1 February in Tokyo: stored UTC times are read as UTC; and the
    # float comes back with all its digits.
    assert result.rows == [(dt.date(2025, 1, 31), third, True)]  # True: the one day is the whole data


def test_stream_reads_the_result_in_batches_through_a_server_side_cursor(pg_project, duck_project, monkeypatch):
    import psycopg

    fetches = []
    fetchmany = psycopg.ServerCursor.fetchmany

    def counting(self, size=0):
        rows = fetchmany(self, size)
        fetches.append(len(rows))
        return rows

    monkeypatch.setattr(psycopg.ServerCursor, "fetchmany", counting)
    options = dict(by=["channel"], grain="month")
    query, batches = pg_project.stream(["new_contacts", "cost_per_lead"], batch_size=7, **options)
    assert fetches == []  # nothing is fetched before the first batch is asked for
    got = [row for batch in batches for row in batch]
    assert fetches[:-1] and all(size == 7 for size in fetches[:-2]) and fetches[-1] == 0  # 7 rows a FETCH
    assert [column.name for column in query.columns] == ["period", "channel", "new_contacts", "cost_per_lead",
                                                         "complete"]
    expected = keyed(duck_project.evaluate(["new_contacts", "cost_per_lead"], **options), True, True)
    streamed = {(row[0], row[1]): {"new_contacts": row[2], "cost_per_lead": row[3]} for row in got}
    assert len(got) == len(streamed) and assert_same(streamed, expected, ["new_contacts", "cost_per_lead"]) > 0
    # a stream left half read gives its connection back when closed; the project goes on working
    _, batches = pg_project.stream(["new_contacts"], batch_size=3, **options)
    assert len(next(batches)) == 3
    batches.close()
    assert pg_project.evaluate(["new_contacts"]).to_dicts()[0]["new_contacts"] == \
        duck_project.evaluate(["new_contacts"]).to_dicts()[0]["new_contacts"]
