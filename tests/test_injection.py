"""Hostile strings in formulas, filters, names and values: rejected or safely quoted. A canary
table must survive every attempt, on DuckDB and on PostgreSQL."""

import duckdb
import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli
from kpi_engine.engine import KpiProject
from kpi_engine.errors import KpiEngineError
from kpi_engine.spec import load_project

pytest_plugins = ["pg"]

SPEC = """
sources:
  leads: {table: leads, time: created_at, dimensions: [channel]}
kpis:
  n: {formula: count(leads)}
  quoted: {formula: "count(leads where channel = 'x''); drop table canary; --')"}
"""
LEADS = [("2025-01-01 10:00:00", "ppc"), ("2025-01-02 10:00:00", "x'); drop table canary; --"),
         ("2025-01-03 10:00:00", 'email"; delete from canary')]
# Each is fed to --where or --having; the engine must refuse it or treat every quote as data.
HOSTILE_FILTERS = [
    "channel = 'ppc'; drop table canary",
    "channel = 'ppc' -- and 1 = 1",
    "channel = 'ppc' /* */ or 1 = 1",
    "channel = \"ppc\"",
    "channel = `ppc`",
    "channel = 'x''); drop table canary; --'",
    "channel in ('a', 'b''); delete from canary; --')",
    "drop(canary)",
    "pg_sleep(5) = 1",
    "channel = 'ppc' union select * from canary",
]
HOSTILE_HAVING = ["n > 0; drop table canary", "n > (select 1)", "n > 0 -- x"]


def _run(root, *args):
    return CliRunner().invoke(cli, ["evaluate", str(root), "n", *args])


def _check_attacks(root):
    quoted_channel = "x'); drop table canary; --"
    for text in HOSTILE_FILTERS:
        result = _run(root, "--by", "channel", "--where", text)
        assert "Traceback" not in result.output
        if result.exit_code == 0:  # accepted: quotes were data, only matching rows counted
            assert "canary" not in result.stdout or quoted_channel in text.replace("''", "'"), (text, result.stdout)
        else:
            assert result.exit_code == 1 and result.stderr.startswith("Error: ")
    for text in HOSTILE_HAVING:
        result = _run(root, "--having", text)
        assert result.exit_code == 1 and "Traceback" not in result.output
    # A value holding SQL is a literal: it matches exactly the row that holds it.
    result = _run(root, "--where", f"channel = '{quoted_channel.replace(chr(39), chr(39) * 2)}'", "--format", "csv")
    assert result.exit_code == 0 and result.stdout == "n,complete\n1.0,true\n"
    quoted = CliRunner().invoke(cli, ["evaluate", str(root), "quoted", "--format", "csv"])
    assert quoted.exit_code == 0 and quoted.stdout == "quoted,complete\n1.0,true\n"


@pytest.mark.parametrize("table", ['leads"; drop table canary; --', "leads; drop", "leads --"])
def test_hostile_table_names_are_rejected_by_the_schema(make_project, table):
    root = make_project({"s.yaml": f"sources:\n  leads: {{table: '{table}'}}\n"})
    result = CliRunner().invoke(cli, ["validate", str(root), "--offline"])
    assert result.exit_code == 1 and "is not a valid table name" in result.stderr


@pytest.mark.parametrize("name", ["n; drop", "n--", "\"n\"", "n or 1"])
def test_hostile_kpi_and_column_names_are_rejected(make_project, name):
    root = make_project({"s.yaml": f"kpis:\n  '{name}': {{formula: '1'}}\n"})
    result = CliRunner().invoke(cli, ["validate", str(root), "--offline"])
    assert result.exit_code == 1 and "is not a valid name" in result.stderr


def test_canary_survives_on_duckdb(make_project, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    connection = duckdb.connect(str(database))
    connection.execute("CREATE TABLE canary (alive INTEGER)")
    connection.execute("INSERT INTO canary VALUES (1)")
    connection.execute("CREATE TABLE leads (created_at TIMESTAMP, channel VARCHAR)")
    connection.executemany("INSERT INTO leads VALUES (?, ?)", LEADS)
    connection.close()
    root = make_project({"s.yaml": SPEC}, config=f"name: t\nwarehouse: {{adapter: duckdb, path: '{database}'}}\n")
    _check_attacks(root)
    with duckdb.connect(str(database), read_only=True) as check:
        assert check.execute("SELECT * FROM canary").fetchall() == [(1,)]


def test_canary_survives_on_postgres(make_project, pg_server):
    from psycopg import sql

    with pg_server.connect() as connection:
        for table in ("canary", "leads"):
            connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        connection.execute("CREATE TABLE canary (alive integer)")
        connection.execute("INSERT INTO canary VALUES (1)")
        connection.execute("CREATE TABLE leads (created_at timestamp, channel text)")
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO leads VALUES (%s, %s)", LEADS)
    root = make_project({"s.yaml": SPEC}, config=f"name: t\nwarehouse: '{pg_server.url}'\n")
    _check_attacks(root)
    with pg_server.connect() as connection:
        assert connection.execute("SELECT * FROM canary").fetchall() == [(1,)]


def test_the_engine_cannot_write_through_its_connection(make_project, tmp_path):
    database = tmp_path / "w.duckdb"
    duckdb.connect(str(database)).close()
    root = make_project({"s.yaml": "sources:\n  s: {table: s}\n"},
                        config=f"name: t\nwarehouse: {{adapter: duckdb, path: '{database}'}}\n")
    with KpiProject(load_project(root)) as project:
        from sqlglot import exp

        create = exp.Create(kind="TABLE", this=exp.Table(this=exp.to_identifier("x")),
                            expression=exp.select(exp.Literal.number(1)))
        with pytest.raises(KpiEngineError):
            project.connection().execute(create)
