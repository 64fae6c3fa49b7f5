"""A warehouse that cannot be opened or lacks a table: one clear message, exit code 1."""

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli

SPEC = "sources:\n  leads: {table: leads, time: created_at}\nkpis:\n  n: {formula: count(leads)}\n"


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_a_database_file_that_does_not_exist(make_project):
    root = make_project({"s.yaml": SPEC}, config="name: x\nwarehouse: {adapter: duckdb, path: missing.duckdb}\n")
    result = run("evaluate", str(root), "n")
    assert result.exit_code == 3  # the warehouse cannot be opened
    assert "the DuckDB database file" in result.stderr and "missing.duckdb" in result.stderr
    assert "Traceback" not in result.output


def test_a_file_that_is_not_a_database(make_project):
    root = make_project({"s.yaml": SPEC}, config="name: x\nwarehouse: duckdb://not_a_db.duckdb\n")
    (root / "not_a_db.duckdb").write_text("hello")
    result = run("evaluate", str(root), "n")
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: cannot open the DuckDB database")


def test_a_missing_table_is_named_with_its_position(make_project):
    root = make_project({"s.yaml": SPEC}, {"other": [{"x": 1}]})
    result = run("validate", str(root))
    assert result.exit_code == 1
    assert "s.yaml:2:18 (source 'leads'): table 'leads' does not exist in the warehouse." in result.stderr
    evaluate = run("evaluate", str(root), "n")
    assert evaluate.exit_code == 1 and "table 'leads' does not exist" in evaluate.stderr


def test_an_unknown_adapter(make_project):
    root = make_project({"s.yaml": SPEC}, config="name: x\nwarehouse: teradata://acct/db\n")
    result = run("evaluate", str(root), "n")
    assert result.exit_code == 1
    assert "no adapter named 'teradata' is installed" in result.stderr


def test_urls_are_redacted_whatever_the_password_holds():
    from kpi_engine.engine import redact

    assert redact("postgresql://ana:s3cr@t/x@db.example.com:5432/m") == "postgresql://ana:***@db.example.com:5432/m"
    assert redact("see postgres://u:p@h/db and duckdb:///tmp/x") == "see postgres://u:***@h/db and duckdb:///tmp/x"
    assert redact("duckdb:///no/password/here.duckdb") == "duckdb:///no/password/here.duckdb"


def test_a_warehouse_value_that_is_not_a_url_is_never_echoed(make_project):
    root = make_project({"s.yaml": SPEC})
    result = run("evaluate", str(root), "n", "--warehouse", "notaurl//user:hunter2@host")
    assert result.exit_code == 2 and "hunter2" not in result.output and "notaurl" not in result.output
    assert "the warehouse setting is not a URL" in result.stderr


# --- secrets in any form are never shown ---------------------------------------------------------------

SECRET_FORMS = [
    ("postgresql://ana:hunter2@db/m", "postgresql://ana:***@db/m"),
    ("host=db password=hunter2 dbname=m", "host=db password=*** dbname=m"),
    ("host=db password='hunter2 with \\' quote' dbname=m", "host=db password=*** dbname=m"),
    ("PGPASSWORD=hunter2 psql", "PGPASSWORD=*** psql"),
    ("postgresql://db/m?sslmode=require&password=hunter2&user=ana", "postgresql://db/m?sslmode=require&password=***&user=ana"),
    ('{"user": "ana", "password": "hunter2 x"}', '{"user": "ana", "password": ***}'),
    ("{'db_password': 'hunter2'}", "{'db_password': ***}"),
    ("password: hunter2", "password: ***"),
    ("sc://spark:15002/;token=hunter2;user_id=ana", "sc://spark:15002/;token=***;user_id=ana"),
    ("api_key=hunter2, client_secret=hunter2", "api_key=***, client_secret=***"),
]


def test_redact_hides_secrets_in_every_form():
    from kpi_engine.redaction import redact

    for text, expected in SECRET_FORMS:
        assert redact(text) == expected
    # Not secrets: a password file's path, words that only contain the names.
    assert redact("password_file: secrets/pg.txt") == "password_file: secrets/pg.txt"
    assert redact("password authentication failed for user ana") == "password authentication failed for user ana"


def test_a_libpq_string_in_the_environment_is_never_echoed(make_project, monkeypatch):
    root = make_project({"s.yaml": SPEC})
    monkeypatch.setenv("KPI_ENGINE_WAREHOUSE", "host=db.internal password=hunter2 dbname=m")
    result = run("evaluate", str(root), "n")
    assert result.exit_code == 2 and "the warehouse setting is not a URL" in result.stderr
    assert "looks like 'key=value' settings" in result.stderr
    assert "hunter2" not in result.output and "db.internal" not in result.output


def test_a_variable_is_never_echoed_whatever_it_holds(make_project, monkeypatch):
    monkeypatch.setenv("KPI_TEST_DATABASE", "host=db.internal password=hunter2")
    for warehouse in ("'${KPI_TEST_DATABASE}'", "{adapter: postgres, url: '${KPI_TEST_DATABASE}'}"):
        root = make_project({"s.yaml": SPEC}, config=f"name: x\nwarehouse: {warehouse}\n", name=f"p{len(warehouse)}")
        result = run("evaluate", str(root), "n")
        assert result.exit_code in (1, 2) and result.stderr.startswith("Error: "), result.output
        assert "hunter2" not in result.output and "db.internal" not in result.output


def test_spark_urls_are_shown_without_their_token():
    import pytest

    from kpi_engine.adapters.spark import parse_url, spark_settings
    from kpi_engine.errors import WarehouseError

    for call in (lambda: parse_url("spork://h/;token=hunter2"), lambda: spark_settings({"remote": "h:1/;token=hunter2"})):
        with pytest.raises(WarehouseError) as caught:
            call()
        assert "hunter2" not in str(caught.value) and "token=***" in str(caught.value)


def test_a_spark_master_url_is_shown_without_its_password():
    from kpi_engine.adapters.spark import _describe_target, spark_settings

    for settings in ({"url": "spark://admin:hunter2@spark-master:7077"},
                     {"master": "k8s://https://ops:hunter2@k8s:443"}):
        where = _describe_target(spark_settings({**settings, "data": "data"}), reused=False)
        assert "hunter2" not in where and ":***@" in where and where.endswith(", data folder data"), where


@pytest.mark.parametrize("name, install", [
    ("snowflake", "pip install 'kpi-engine-cloud[snowflake]' (from a clone of kpi-engine: "
                  "pip install './plugins/kpi-engine-cloud[snowflake]')"),
    ("trino", "pip install 'kpi-engine-cloud[trino]'"),
    ("mysql", "pip install 'kpi-engine-mysql' (from a clone of kpi-engine: pip install './plugins/kpi-engine-mysql')"),
])
def test_a_warehouse_whose_plugin_is_not_installed_names_the_package(name, install):
    from kpi_engine.errors import PluginError
    from kpi_engine.plugins import Registry

    with pytest.raises(PluginError) as raised:
        Registry(load_entry_points=False).adapter(name)
    assert f"no adapter named '{name}' is installed." in str(raised.value)
    assert install in str(raised.value)
