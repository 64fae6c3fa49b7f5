"""A warehouse that cannot be opened or lacks a table: one clear message, exit code 1."""

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
    root = make_project({"s.yaml": SPEC}, config="name: x\nwarehouse: snowflake://acct/db\n")
    result = run("evaluate", str(root), "n")
    assert result.exit_code == 1
    assert "no adapter named 'snowflake' is installed" in result.stderr


def test_urls_are_redacted_whatever_the_password_holds():
    from kpi_engine.engine import redact

    assert redact("postgresql://ana:s3cr@t/x@db.example.com:5432/m") == "postgresql://ana:***@db.example.com:5432/m"
    assert redact("see postgres://u:p@h/db and duckdb:///tmp/x") == "see postgres://u:***@h/db and duckdb:///tmp/x"
    assert redact("duckdb:///no/password/here.duckdb") == "duckdb:///no/password/here.duckdb"


def test_a_bad_url_is_echoed_redacted(make_project):
    root = make_project({"s.yaml": SPEC})
    result = run("evaluate", str(root), "n", "--warehouse", "notaurl//user:hunter2@host")
    assert result.exit_code == 2 and "hunter2" not in result.output and "***" in result.stderr
